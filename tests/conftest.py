"""Shared helpers: compose the real Hydra config, run the CLI, read TensorBoard event files."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sngan.monitor import read_scalars  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# A run small enough for a test: 16x16 synthetic images, narrow models, a few steps.
TINY_MODEL = ["dataset.resolution=16", "model.g_ch=32", "model.d_ch=8", "train.batch_size=8",
              "log.n_eval=64", "log.progress=false"]
TINY = TINY_MODEL + ["dataset.size=256"]


def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_cli(args, cwd, module="sngan.train", timeout=300):
    """Run `python -m module args` in a subprocess; return the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder`: relative path -> sha256 of its bytes ('dir' for folders)."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        found[str(path.relative_to(folder))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def call(entry: str, args: list[str], capsys=None) -> tuple[int, str, str]:
    """Run a command's main function in this process (`train` through Hydra, as `python -m
    sngan.train` does): (exit code, its stderr, its stdout; both empty without `capsys`)."""
    if entry == "train":
        from sngan.train import main as train_main

        saved_argv, sys.argv = sys.argv, ["sngan.train", *args]
        run = train_main
    else:
        module = {"sample": "sngan.sample", "evaluate": "sngan.evaluate", "audit": "sngan.audit"}[entry]
        main = __import__(module, fromlist=["main"]).main
        saved_argv = sys.argv
        run = lambda: main(args)
    if capsys is not None:
        capsys.readouterr()  # what came before is not this command's
    code = 0
    try:
        run()
    except SystemExit as stop:
        if isinstance(stop.code, str):  # sys.exit("error: ...") prints it and exits 1
            print(stop.code, file=sys.stderr)
            code = 1
        else:
            code = stop.code or 0
    finally:
        sys.argv = saved_argv
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)  # the run's train.log: later tests must not write into it
            handler.close()
    if capsys is None:
        return code, "", ""
    out = capsys.readouterr()
    return code, out.err, out.out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 cores; one intra-op thread keeps parallel subprocesses from fighting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
