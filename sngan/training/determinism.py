"""Seeds and reproducibility switches: the RNGs a run draws from, and deterministic kernels."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(*key: int) -> int:
    """A seed for one rank's noise stream: (seed, rank) pairs never share a stream."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def set_determinism(enabled: bool) -> None:
    """train.deterministic: kernels that give the same bits on every run (cuBLAS with a fixed
    workspace, deterministic cuDNN algorithms, no benchmarking; an op without a deterministic
    kernel raises). Set both ways: a sweep runs its jobs in one process."""
    if enabled:  # read by cuBLAS when it creates its handle: before the run's first matrix product
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False
