"""Fixtures for every test. Shared helpers live in helpers.py: import them from there."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 cores; one intra-op thread keeps parallel subprocesses from fighting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
