"""A recorded functional call (F.conv2d(x, w, None, stride, padding, ...), F.linear(x, w)) as the
bias-free layer that computes the same linear map, so that sngan.sigma measures it as it would
any layer: the operator norm is the call's, with the weight and the geometry it received."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

_CONV = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}
_CONV_T = {"conv_transpose1d": nn.ConvTranspose1d, "conv_transpose2d": nn.ConvTranspose2d,
           "conv_transpose3d": nn.ConvTranspose3d}


def layer_of_call(op: str, weight: Tensor, options: dict, padder: nn.Module | None = None) -> nn.Module:
    """A float64, bias-free layer equal to the call's map x -> op(x, weight, None, **options).
    `padder`: the conv module that made the call after padding its input itself (padding_mode
    other than zeros): its padding is then part of the map. Built with skip_init: no RNG drawn."""
    w = weight.detach().to(torch.float64)
    if op in _CONV:
        groups = int(options.get("groups", 1))
        geometry = dict(stride=options.get("stride", 1), padding=options.get("padding", 0),
                        dilation=options.get("dilation", 1), groups=groups)
        if padder is not None:
            geometry.update(padding=padder.padding, padding_mode=padder.padding_mode)
        layer = skip_init(_CONV[op], w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), bias=False,
                          dtype=torch.float64, **geometry)
    elif op in _CONV_T:
        groups = int(options.get("groups", 1))
        layer = skip_init(_CONV_T[op], w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]),
                          stride=options.get("stride", 1), padding=options.get("padding", 0),
                          output_padding=options.get("output_padding", 0), groups=groups,
                          dilation=options.get("dilation", 1), bias=False, dtype=torch.float64)
    elif op == "linear":
        layer = skip_init(nn.Linear, w.shape[1], w.shape[0], bias=False, dtype=torch.float64)
    else:
        raise ValueError(f"no layer for a call of {op}")
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def call_input_size(op: str, input_shape: Sequence[int], weight: Tensor,
                    padder: nn.Module | None = None) -> tuple[int, ...] | None:
    """The spatial size of one input sample of the call (None for linear): the last dims (a conv
    may be called on an unbatched sample), less the padding the `padder` added before the call."""
    if op == "linear":
        return None
    dims = weight.dim() - 2
    size = [int(n) for n in input_shape[-dims:]]
    if padder is not None:
        pad = list(padder._reversed_padding_repeated_twice)  # (last dim left, right, ...)
        size = [n - pad[2 * (dims - 1 - i)] - pad[2 * (dims - 1 - i) + 1] for i, n in enumerate(size)]
    return tuple(size)


def self_padding(owner: nn.Module | None, op: str, options: dict) -> nn.Module | None:
    """The owner when it is a torch conv that padded its input before the call (its padding_mode
    is not zeros, and the call got padding 0), else None."""
    if op not in _CONV or not isinstance(owner, _CONV[op]) or owner.padding_mode == "zeros":
        return None
    padding = options.get("padding", 0)
    return owner if all(p == 0 for p in (padding if isinstance(padding, (tuple, list)) else [padding])) else None
