"""Shared helpers: compose the real Hydra config, run the CLI, read TensorBoard event files."""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 cores; one intra-op thread keeps parallel subprocesses from fighting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
