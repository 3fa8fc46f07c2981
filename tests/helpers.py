"""What the tests share: the repository's paths, the tiny run and its logging overrides, one way to
train it, to run a command or a script, and the references several test files check against."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from sngan.diagnostics.monitor import read_scalars  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SCRIPTS = ROOT / "scripts"

# A run small enough for a test: 16x16 synthetic images, narrow models, a few steps.
TINY_MODEL = ["dataset.resolution=16", "model.g_ch=32", "model.d_ch=8", "train.batch_size=8",
              "log.n_eval=64", "log.progress=false"]
TINY = TINY_MODEL + ["dataset.size=256"]

# Logging overrides for a tiny run, named by what a test needs from its logs.
NO_SAMPLES = ["log.sample_every=1000", "log.eval_every=1000"]  # no sample grids, no evaluation
QUIET = ["log.every=1000", *NO_SAMPLES]  # no scalars either: the run only trains
SCALARS_EVERY_2 = [*NO_SAMPLES, "log.every=2"]  # scalars at every second step (resume tests count them)


# --- running the trainer and the commands ------------------------------------------------------

def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def train_tiny(run_dir: Path, overrides=(), *, base=TINY, via: str = "train", command_line=None, capsys=None,
               cwd=None, timeout: float = 300):
    """Train a run of `base` then `overrides` (the tiny run unless `base` says otherwise) into `run_dir`.

    via="train": compose the config and call `sngan.train.train` in this process; returns its final
        metrics. `command_line`: the overrides a command line would have given (train's `overrides`:
        what a resume applies over the saved run's config).
    via="main": the command's main function through Hydra, in this process (`call("train", ...)`);
        returns (exit code, its stderr, its stdout), both empty without `capsys`.
    via="cli": `python -m sngan.train` in a subprocess started in `cwd` (default: run_dir's parent);
        returns the CompletedProcess.
    "main" and "cli" name the folder last, as hydra.run.dir.
    """
    args = [*base, *overrides]
    if via == "train":
        from sngan.train import train

        return train(compose_config(args), run_dir, overrides=command_line)
    folder = str(run_dir)
    if "=" in folder or "," in folder:  # Hydra's override syntax needs such a value quoted
        folder = f'"{folder}"'
    args.append(f"hydra.run.dir={folder}")
    if via == "main":
        return call("train", args, capsys)
    if via == "cli":
        return run_cli(args, cwd=Path(run_dir).parent if cwd is None else cwd, timeout=timeout)
    raise ValueError(f"via must be train, main or cli, got {via!r}")


def run_cli(args, cwd, module="sngan.train", timeout=300):
    """Run `python -m module args` in a subprocess; return the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def call(entry: str, args: list[str], capsys=None) -> tuple[int, str, str]:
    """Run a command's main function in this process (`train` through Hydra, as `python -m
    sngan.train` does; a script of scripts/ named by its file, through its `run_main`, as its
    command line does): (exit code, its stderr, its stdout; both empty without `capsys`)."""
    if entry == "train":
        from sngan.train import main as train_main

        saved_argv, sys.argv = sys.argv, ["sngan.train", *args]
        run = train_main
    elif entry.endswith(".py"):
        script = load_script(entry)
        saved_argv = sys.argv
        run = lambda: script.run_main(lambda: script.main(args))
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


def run_script(name: str, args=(), timeout: float = 300) -> subprocess.CompletedProcess:
    """Run scripts/`name` as its own process (bash for a .sh, this Python otherwise)."""
    path = SCRIPTS / name
    command = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def load_script(name: str):
    """scripts/`name` imported as a module (its functions, its main), without running it."""
    path = SCRIPTS / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- reading what a run left ------------------------------------------------------------------

def last_checkpoint(run_dir: Path) -> dict:
    """The run's checkpoints/last.pt, loaded."""
    from sngan.run import checkpoint

    return checkpoint.load(Path(run_dir) / "checkpoints" / "last.pt")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder`: relative path -> sha256 of its bytes ('dir' for folders)."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        found[str(path.relative_to(folder))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_identical(a: dict, b: dict) -> None:
    """Every tensor of two checkpoints equal, bit for bit (config and file names aside)."""
    assert a["step"] == b["step"]
    for key in ("G", "D", "G_ema"):
        if a[key] is None:
            assert b[key] is None
            continue
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for key in ("opt_g", "opt_d"):
        for pid, st in a[key]["state"].items():
            for name, value in st.items():
                assert torch.equal(value, b[key]["state"][pid][name]), f"{key}.{pid}.{name}"
    assert a["sched_g"] == b["sched_g"] and a["data"] == b["data"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


# --- independent references -------------------------------------------------------------------

def dense_sigma(layer: nn.Module, input_size) -> float:
    """Largest singular value of the layer's full matrix, built by applying the layer to basis vectors."""
    from sngan.linalg.operators import input_shape

    layer = layer.double()
    if getattr(layer, "bias", None) is not None:
        layer.bias = None
    shape = input_shape(layer, input_size)
    n = 1
    for s in shape:
        n *= s
    basis = torch.eye(n, dtype=torch.float64)
    with torch.no_grad():
        if isinstance(layer, nn.Embedding):
            columns = basis @ layer.weight  # row i of the matrix is the embedding of index i
        else:
            columns = layer(basis.view(n, *shape[1:])).reshape(n, -1)
    return float(torch.linalg.svdvals(columns)[0])
