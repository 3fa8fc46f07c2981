"""Data-parallel training under `torchrun -m sngan.train ...` (one process per GPU, or per CPU rank).

`train.batch_size` is the GLOBAL batch: each of the N ranks draws batch_size / N images of the
same global batch that a single process would draw (see BatchStream), and DDP averages the
gradients, so a run's hyperparameters mean the same at any world size. Rank 0 alone logs, samples,
evaluates and writes checkpoints; the other ranks write nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched() -> bool:
    """True in a process started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def quiet_hydra_on_other_ranks() -> None:
    """Ranks > 0 must not create run folders or log files of their own: point their Hydra at the
    current folder and keep its logging on stdout. Call before Hydra parses sys.argv."""
    if int(os.environ.get("RANK", "0")) == 0:
        return
    mine = ("hydra.run.dir=", "hydra.output_subdir=", "hydra/job_logging=")
    sys.argv = [a for a in sys.argv if not a.lstrip("+~").startswith(mine)]
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def setup(device_type: str) -> Context:
    """Join the process group torchrun describes (gloo for CPU tensors, NCCL for CUDA ones)."""
    if not launched():
        return Context()
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        # Generous: the other ranks wait while rank 0 alone evaluates (the first FID computes the
        # real data's statistics) or writes a checkpoint.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=1))
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, ctx: Context) -> torch.device:
    """Under data parallelism each rank drives the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int | str | None) -> NoReturn:
    """End a torchrun rank, with `code` as sys.exit takes it, without the interpreter's finalization.
    DDP keeps the default process group, and with it gloo's worker threads, alive past
    destroy_process_group (torch 2.14); a worker that releases a Python-made tensor after the
    interpreter began to finalize cannot take the GIL and aborts the rank (SIGABRT after a finished
    run: 2 of 28 two-rank runs on a loaded 2-core CPU). What the run writes is closed by then (the
    checkpoints, TensorBoard, status.json): flush the logs and streams, then leave."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code is None else code if isinstance(code, int) else 1)


def broadcast_object(obj, ctx: Context):
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, ctx: Context) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: torch.Tensor, ctx: Context) -> bool:
    """True when `flag` (a bool scalar) is true on every rank; every rank gets the same answer."""
    if ctx.enabled:
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def state_digest(*modules: nn.Module | None) -> str:
    """A hash of every parameter and buffer of `modules`, bit for bit: equal digests, equal replicas."""
    h = hashlib.sha256()
    for module in modules:
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def sync_buffers(ctx: Context, *modules: nn.Module) -> None:
    """Copy rank 0's buffers (spectral-norm vectors, BatchNorm statistics) to every rank.

    Power iteration is deterministic, so the vectors stay equal on their own when every rank runs
    the same kernels; this makes it so when they do not (e.g. cuDNN picking different algorithms
    per process). DDP's own per-forward broadcast is off: it would overwrite the vectors between
    D(real) and D(fake) of one update.
    """
    if not ctx.enabled:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for module in modules:
        for buffer in module.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():  # one collective per dtype, not one per buffer
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
