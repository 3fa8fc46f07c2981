"""Certified upper bounds on a convolution's operator norm, from its kernel alone.

The argument, for a zero-padded convolution with stride 1 on an n-point grid (per spatial
dimension) and a kernel spanning K points: every output is a linear correlation of the n inputs
with the kernel, and the full linear correlation (all n + K - 1 outputs) equals a circular
correlation on a grid of N >= n + K - 1 points applied to the zero-extended input. The layer is
that circular operator with inputs restricted to n points and outputs restricted to the layer's
(a projection on each side, norm <= 1), so its norm is at most the circular one, and a circular
convolution is diagonalised by the DFT: its norm is the largest spectral norm of the kernel's
(c_out x c_in) DFT matrices over the N frequencies (Sedghi et al. 2019). The bound is tight up
to the boundary: 0.2-0.7% above the exact norm at 16-32 px for 3x3 kernels.

Stride s: write t = s q + r. The stride-s correlation is a stride-1 correlation of the s input
phases x[s j + c] (c = 0..s-1, each on ceil(n/s) points) with the kernel's phases k[s q + r]
(ceil(K/s) taps), an exact rewrite (the polyphase form); the phases' relative offsets move each
input channel group by a fixed shift, which multiplies the DFT matrices by a diagonal unitary and
changes no singular value, so the bound above applies on ceil(n/s) + ceil(K/s) points without
the looseness of bounding the unstrided convolution. Dilation spreads the taps (zeros between),
groups make the map block-diagonal (the norm is the largest block's), and a transposed
convolution has the norm of its adjoint, the convolution with the same weight on the output grid.
Circular padding that keeps the size at stride 1 is exactly circular: the bound is then the
exact norm. Other padding modes (reflect, replicate, circular in general) copy input pixels: the
layer is a valid convolution on the padded grid after a copying map P whose norm is the square
root of the largest number of copies of one input pixel, so ||A|| <= ||valid conv|| * ||P||.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sngan.operators import CONVS, TRANSPOSED_CONVS, input_shape, linear_map

# Floating-point safety: the DFT and the small SVDs run in float64 (relative error ~1e-15).
ROUNDING = 1e-9


def conv_upper_bound(layer: nn.Module, weight: Tensor, input_size: Sequence[int]) -> float:
    """A certified upper bound on the operator norm of `layer`'s bias-free map (with `weight`) on
    inputs of spatial size `input_size`: convolutions and transposed convolutions of any dimension."""
    weight = weight.detach().to(torch.float64).cpu()
    size = [int(n) for n in input_size]
    stride, dilation, groups = list(layer.stride), list(layer.dilation), layer.groups
    if isinstance(layer, TRANSPOSED_CONVS):
        # The adjoint is the convolution with the same weight, from the transposed conv's output grid.
        with torch.no_grad():
            probe = torch.zeros(input_shape(layer, size), dtype=torch.float64)
            size = list(linear_map(layer)(probe, weight).shape[2:])
        return _zero_padded_bound(weight, size, stride, dilation, groups) * (1 + ROUNDING)
    if not isinstance(layer, CONVS):
        raise TypeError(f"no convolution bound for {type(layer).__name__}")
    if layer.padding_mode == "zeros":
        return _zero_padded_bound(weight, size, stride, dilation, groups) * (1 + ROUNDING)
    pad = list(layer._reversed_padding_repeated_twice)  # (last dim left, right, ..., first dim ...)
    pads = [(pad[2 * (len(size) - 1 - i)], pad[2 * (len(size) - 1 - i) + 1]) for i in range(len(size))]
    span = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:])]
    out_size = [(n + a + b - K) // s + 1 for n, (a, b), K, s in zip(size, pads, span, stride)]
    if layer.padding_mode == "circular" and all(s == 1 for s in stride) and out_size == size:
        return _circular_norm(weight, size, dilation, groups) * (1 + ROUNDING)
    copies = math.prod(_largest_copy_count(n, a, b, layer.padding_mode) for n, (a, b) in zip(size, pads))
    padded = [n + a + b for n, (a, b) in zip(size, pads)]
    valid = _zero_padded_bound(weight, padded, stride, dilation, groups)
    return valid * math.sqrt(copies) * (1 + ROUNDING)


def _largest_copy_count(n: int, before: int, after: int, mode: str) -> int:
    """How many times the padding map (1-d, `mode`) copies its most-copied input point."""
    index = torch.arange(n, dtype=torch.float64).view(1, 1, n)
    padded = F.pad(index, (before, after), mode=mode).round().long().view(-1)
    return int(torch.bincount(padded, minlength=n).max())


def _dilated(weight: Tensor, dilation: Sequence[int]) -> Tensor:
    if all(d == 1 for d in dilation):
        return weight
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:])]
    out = weight.new_zeros(*weight.shape[:2], *spans)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dilation))] = weight
    return out


def _polyphase(weight: Tensor, stride: Sequence[int]) -> Tensor:
    """(c_out, c_in, K...) -> (c_out, c_in * prod(s), ceil(K/s)...): the taps k[s q + r], one
    input channel group per phase r."""
    dims = len(stride)
    taps = [math.ceil(k / s) for k, s in zip(weight.shape[2:], stride)]
    padded = F.pad(weight, [p for k, s, t in reversed(list(zip(weight.shape[2:], stride, taps)))
                            for p in (0, s * t - k)])
    c_out, c_in = weight.shape[:2]
    # (c_out, c_in, t1, s1, t2, s2, ...) -> (c_out, c_in, s1, s2, ..., t1, t2, ...)
    view = padded.reshape(c_out, c_in, *[v for t, s in zip(taps, stride) for v in (t, s)])
    order = [0, 1, *[3 + 2 * i for i in range(dims)], *[2 + 2 * i for i in range(dims)]]
    return view.permute(order).reshape(c_out, c_in * math.prod(stride), *taps)


def _zero_padded_bound(weight: Tensor, size: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                       groups: int) -> float:
    kernel = _polyphase(_dilated(weight, dilation), stride)
    phases = math.prod(stride)
    grid = [math.ceil(n / s) + k - 1 + (1 if s > 1 else 0)  # +1: the phases' offsets differ by one
            for n, s, k in zip(size, stride, kernel.shape[2:])]
    return _largest_dft_norm(kernel, grid, groups, group_in=weight.shape[1] * phases)


def _circular_norm(weight: Tensor, size: Sequence[int], dilation: Sequence[int], groups: int) -> float:
    return _largest_dft_norm(_dilated(weight, dilation), list(size), groups, group_in=weight.shape[1])


def _largest_dft_norm(kernel: Tensor, grid: Sequence[int], groups: int, group_in: int) -> float:
    """max over the grid's DFT frequencies (and groups) of the kernel's c_out x c_in symbol's norm.
    Taps beyond the grid fold onto it (a circular convolution wraps)."""
    dims = len(grid)
    folded = kernel.new_zeros(*kernel.shape[:2], *grid)
    for offset in torch.cartesian_prod(*[torch.arange(0, k, g) for k, g in zip(kernel.shape[2:], grid)]).view(-1, dims):
        part = kernel[(slice(None), slice(None), *(slice(int(o), int(o) + g) for o, g in zip(offset, grid)))]
        folded[(slice(None), slice(None), *(slice(0, s) for s in part.shape[2:]))] += part
    # A real kernel's symbol at -w is the conjugate of that at w (same singular values): the real
    # FFT's half of the frequencies suffices. The largest eigenvalue of the smaller Gram matrix is
    # the squared norm, about twice as fast as an SVD (eigvalsh is backward stable: ~1e-13 relative).
    symbol = torch.fft.rfftn(folded, dim=tuple(range(2, 2 + dims)))
    c_out = kernel.shape[0] // groups
    best = 0.0
    for g in range(groups):
        block = symbol[g * c_out:(g + 1) * c_out, :group_in]
        block = block.permute(*range(2, 2 + dims), 0, 1).reshape(-1, c_out, group_in)
        gram = block.mH @ block if group_in <= c_out else block @ block.mH
        best = max(best, float(torch.linalg.eigvalsh(gram)[..., -1].max().clamp(min=0).sqrt()))
    return best
