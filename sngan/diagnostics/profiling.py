"""What a training iteration and the trainer's diagnostics cost: wall time, aten ops dispatched,
CUDA kernels and GPU busy time, peak memory (scripts/bench.py measures with these).

Every timer synchronizes the device before reading the clock, so queued GPU work is counted."""

from __future__ import annotations

import time
from typing import Callable

import torch

from sngan.diagnostics.monitor import GRAD_NORM_SAMPLES, input_grad_norm, layer_input_sizes, sigma_scalars


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_iteration(run: Callable[[], object], steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        run()
    sync(device)
    return (time.perf_counter() - start) / steps


def interleaved_seconds(runners: dict[str, Callable[[], object]], steps: int, repeats: int,
                        device: torch.device) -> dict[str, list[float]]:
    """{name: seconds per call of its runner, one per timed block of `steps` calls}, after one
    warm-up call each (allocator, first-forward initialisations); the blocks of every runner take
    turns, so that machine noise hits every configuration alike."""
    for run in runners.values():
        run()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            times[name].append(seconds_per_iteration(run, steps, device))
    return times


def aten_ops_per_iteration(run: Callable[[], object]) -> int:
    """Every `aten::` event, nested ones included, in a CPU-activity profile of one call of `run`:
    how many ops an iteration dispatches (on a GPU, about how many kernels it launches)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return sum(event.name.startswith("aten::") for event in prof.events())


def gpu_profile(run: Callable[[], object]) -> tuple[int, float]:
    """(CUDA kernels, seconds the GPU is busy with them) in one warmed-up call of `run`, from a
    torch.profiler trace (kernels inside a replayed graph included, as CUPTI reports them)."""
    from torch.profiler import ProfilerActivity, profile

    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(kernels), sum(e.self_device_time_total for e in kernels) / 1e6


def peak_memory_mb(run: Callable[[], object], calls: int, device: torch.device) -> float:
    """This process's peak memory in MiB after `calls` calls of `run`: max allocated on a GPU, else
    the peak RSS (a process's peak only grows: measure one configuration per process)."""
    for _ in range(calls):
        run()
    sync(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024


def diagnostics_seconds(run: Callable[[], object], G, D, resolution: int, device: torch.device, *,
                        steps: int, repeats: int) -> tuple[float, float, float]:
    """(one round of the trainer's per-log diagnostics, its sigma part alone: per-layer sigmas and
    certified intervals, each the best of `repeats`; the first round's sigma part) on D, which
    `run` (one training iteration of G and D) trains. As in the trainer, every round after the
    first starts its iterative solvers from the previous round's vectors, with `steps` training
    iterations in between (the trainer has log.every), and the input-gradient norms take
    GRAD_NORM_SAMPLES real and as many fake images."""
    run()
    sizes = layer_input_sizes(D, (3, resolution, resolution), device)
    n = GRAD_NORM_SAMPLES
    real = torch.rand(n, 3, resolution, resolution, device=device) * 2 - 1
    with torch.no_grad():
        fake = G(torch.randn(n, G.z_dim, device=device))
    vectors: dict = {}
    sync(device)
    start = time.perf_counter()
    sigma_scalars(D, sizes, vectors=vectors)
    sync(device)
    first = time.perf_counter() - start
    rounds, sigmas = [], []
    for _ in range(repeats):  # best of, like the iteration times
        for _ in range(steps):
            run()
        sync(device)
        start = time.perf_counter()
        sigma_scalars(D, sizes, vectors=vectors)
        sync(device)
        sigmas.append(time.perf_counter() - start)
        input_grad_norm(D, real)
        input_grad_norm(D, fake)
        sync(device)
        rounds.append(time.perf_counter() - start)
    return min(rounds), min(sigmas), first
