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

import numpy as np
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


# What two checkpoints of the same training may differ in: the config and the replicas' digests
# (records, not state); the health rules' state, read from diagnostics that restart cold after a
# resume and agree only to their tolerances (test_resume_is_bit_identical), and that never feed
# back into training; the optimizers' implementation flags (a CUDA graph's capturable Adam, the
# fused one of a GPU, which the trainer chooses per device and a resume may switch).
_NOT_STATE = {"config", "replica_digests", "health"}
_IMPLEMENTATION_FLAGS = {"fused", "capturable", "foreach", "differentiable"}


def assert_identical(a: dict, b: dict) -> None:
    """Two checkpoints hold the same training state, bit for bit: every weight, Adam moment, schedule,
    data position and RNG state (python, numpy, torch, CUDA)."""
    assert a.keys() - _NOT_STATE == b.keys() - _NOT_STATE
    for key in a.keys() - _NOT_STATE:
        _assert_same(a[key], b[key], key)


def _assert_same(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
    elif isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray) and np.array_equal(x, y), where
    elif isinstance(x, dict):
        flags = _IMPLEMENTATION_FLAGS if ".param_groups[" in where else set()
        assert x.keys() - flags == y.keys() - flags, where
        for key in x.keys() - flags:
            _assert_same(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same(u, v, f"{where}[{i}]")
    else:
        assert x == y or (x != x and y != y), f"{where}: {x!r} != {y!r}"  # NaN equals NaN here


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
