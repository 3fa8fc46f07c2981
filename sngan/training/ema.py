"""The EMA of G's weights, updated without reading anything back to the host.

torch's AveragedModel.update_parameters tests `n_averaged == 0` on the host before every update: a
device synchronisation per step on a GPU, and an update that a CUDA graph cannot hold. This is the
same arithmetic (AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers=True, bit for bit:
tests/test_graphed.py) with that test done on the device.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of `model`'s parameters and buffers (the checkpoint's `G_ema` entry)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module, decay: float) -> None:
    """The first update copies `model`, every later one moves each float tensor by lerp(ema, model,
    1 - decay), and integer buffers to ema * decay + model * (1 - decay), truncated (as torch does)."""
    averaged = [t.detach() for t in itertools.chain(ema.module.parameters(), ema.module.buffers())]
    current = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
    first = ema.n_averaged == 0
    # lerp with weight 1 is `end` exactly: the first update is the copy.
    weight = torch.where(first, 1.0, torch.tensor(1 - decay, dtype=torch.float32, device=first.device))
    floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
    if floats:
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
    for a, c in zip(averaged, current):
        if not a.is_floating_point():
            a.copy_(torch.where(first, c, a * decay + c * (1 - decay)))
    ema.n_averaged += 1
