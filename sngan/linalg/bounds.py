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

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sngan.linalg.operators import CONVS, TRANSPOSED_CONVS, input_shape, linear_map

# Floating-point safety: the autocorrelation, the FFT and the factorisations run in float64 (relative
# errors ~1e-12 at most at these sizes); the bound is widened by ROUNDING, the certificates by MARGIN.
ROUNDING = 1e-9
MARGIN = 1e-10
POWER_STEPS = 6  # per call, per frequency: they only choose which matrix to decompose exactly


def conv_upper_bound(layer: nn.Module, weight: Tensor, input_size: Sequence[int], warm: dict | None = None) -> float:
    """A certified upper bound on the operator norm of `layer`'s bias-free map (with `weight`) on
    inputs of spatial size `input_size`: convolutions and transposed convolutions of any dimension.
    `warm`: a dict the caller keeps between calls, for start vectors (they save time, never change
    the bound by more than MARGIN)."""
    weight = weight.detach().to(torch.float64)
    size = [int(n) for n in input_size]
    if len(size) != weight.dim() - 2:  # zip() below would drop the extra entry and bound another map
        raise ValueError(f"input size {tuple(size)} for {type(layer).__name__}, which takes {weight.dim() - 2} "
                         "spatial dimensions")
    key = ("bound", id(layer), tuple(size))
    stride, dilation, groups = list(layer.stride), list(layer.dilation), layer.groups
    if isinstance(layer, TRANSPOSED_CONVS):
        # The adjoint is the convolution with the same weight, from the transposed conv's output grid.
        with torch.no_grad():
            probe = torch.zeros(input_shape(layer, size), dtype=torch.float64, device=weight.device)
            size = list(linear_map(layer)(probe, weight).shape[2:])
        return _zero_padded_bound(weight, size, stride, dilation, groups, warm, key) * (1 + ROUNDING)
    if not isinstance(layer, CONVS):
        raise TypeError(f"no convolution bound for {type(layer).__name__}")
    if layer.padding_mode == "zeros":
        return _zero_padded_bound(weight, size, stride, dilation, groups, warm, key) * (1 + ROUNDING)
    pad = list(layer._reversed_padding_repeated_twice)  # (last dim left, right, ..., first dim ...)
    pads = [(pad[2 * (len(size) - 1 - i)], pad[2 * (len(size) - 1 - i) + 1]) for i in range(len(size))]
    span = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:])]
    out_size = [(n + a + b - K) // s + 1 for n, (a, b), K, s in zip(size, pads, span, stride)]
    if layer.padding_mode == "circular" and all(s == 1 for s in stride) and out_size == size:
        return _circular_norm(weight, size, dilation, groups, warm, key) * (1 + ROUNDING)
    copies = math.prod(_largest_copy_count(n, a, b, layer.padding_mode) for n, (a, b) in zip(size, pads))
    padded = [n + a + b for n, (a, b) in zip(size, pads)]
    valid = _zero_padded_bound(weight, padded, stride, dilation, groups, warm, key)
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
                       groups: int, warm: dict | None, key) -> float:
    kernel = _polyphase(_dilated(weight, dilation), stride)
    phases = math.prod(stride)
    grid = [math.ceil(n / s) + k - 1 + (1 if s > 1 else 0)  # +1: the phases' offsets differ by one
            for n, s, k in zip(size, stride, kernel.shape[2:])]
    return _largest_dft_norm(kernel, grid, groups, warm, key)


def _circular_norm(weight: Tensor, size: Sequence[int], dilation: Sequence[int], groups: int,
                   warm: dict | None, key) -> float:
    return _largest_dft_norm(_dilated(weight, dilation), list(size), groups, warm, key)


def _largest_dft_norm(kernel: Tensor, grid: Sequence[int], groups: int, warm: dict | None, key) -> float:
    """max over the grid's DFT frequencies (and groups) of the norm of the kernel's c_out x c_in
    symbol M_f: the square root of the largest eigenvalue of the Gram matrices M_f M_f^H."""
    blocks = kernel.reshape(groups, kernel.shape[0] // groups, *kernel.shape[1:])
    grams = _symbol_grams(blocks, grid)
    return math.sqrt(_certified_largest_eigenvalue(grams, warm, key))


def _symbol_grams(blocks: Tensor, grid: Sequence[int]) -> Tensor:
    """(groups, c_out, c_in, taps...) -> the Gram matrices M_f M_f^H of every group's symbol at
    every frequency f of the grid, as (groups * frequencies, c, c), c the smaller channel count.

    Computed from the kernel's autocorrelation C_d = sum_t K_t K_{t-d}^T (K_t: the c x c_in matrix
    of tap t), since M_f M_f^H = sum_d C_d exp(-i f.d): one real matrix product per shift d (with
    C_{-d} = C_d^T) and a real FFT of the c x c autocorrelation, instead of one complex product
    per frequency. Shifts beyond the grid fold onto it, as the taps do in a circular convolution.
    A real kernel's Gram at -f is the conjugate of that at f (same eigenvalues): the real FFT's half
    of the frequencies suffices."""
    if blocks.shape[1] > blocks.shape[2]:
        blocks = blocks.transpose(1, 2)  # M_f^H M_f: the same largest eigenvalue, a smaller matrix
    groups, c, dims, taps = blocks.shape[0], blocks.shape[1], len(grid), blocks.shape[3:]
    folded = blocks.new_zeros(groups, c, c, *grid)
    for shift in itertools.product(*(range(-(k - 1), k) for k in taps)):
        if shift < (0,) * dims:
            continue  # its transpose is added with -shift
        here = tuple(slice(max(d, 0), k + min(d, 0)) for d, k in zip(shift, taps))  # t
        there = tuple(slice(max(-d, 0), k - max(d, 0)) for d, k in zip(shift, taps))  # t - shift
        a = blocks[(..., *here)].movedim(2, -1).reshape(groups, c, -1)
        b = blocks[(..., *there)].movedim(2, -1).reshape(groups, c, -1)
        corr = a @ b.mT
        folded[(..., *(d % n for d, n in zip(shift, grid)))] += corr
        if any(shift):
            folded[(..., *(-d % n for d, n in zip(shift, grid)))] += corr.mT
    symbols = torch.fft.rfftn(folded, dim=tuple(range(3, 3 + dims)))
    return symbols.movedim(1, -1).movedim(1, -1).reshape(-1, c, c)


def _certified_largest_eigenvalue(grams: Tensor, warm: dict | None, key) -> float:
    """The largest eigenvalue over a batch of Hermitian positive semi-definite matrices, certified.

    A few power steps (from the previous call's vectors, kept in `warm` under `key`) pick the
    matrix that looks largest; its top eigenvalue `lam` is computed exactly (eigvalsh). Every other
    matrix G is certified below lam (1 + MARGIN) by a Cholesky factorisation of
    lam (1 + MARGIN) I - G, which exists only if that matrix is positive definite: a completed
    floating-point Cholesky proves positive definiteness up to a backward error below
    (n + 1) n eps of its norm (Demmel 1989), 7e-12 relative at n = 256, well inside MARGIN. The
    matrices it fails on are computed exactly too. Whatever the start vectors, the result is the
    exact maximum up to MARGIN; a good start only saves eigenvalue decompositions (a Cholesky costs
    about a tenth of one)."""
    count, c, _ = grams.shape
    vectors = warm.get(key) if warm is not None else None
    if vectors is None or vectors.shape != (count, c, 1):
        gen = torch.Generator().manual_seed(0)
        vectors = torch.randn(count, c, 1, generator=gen, dtype=torch.float64).to(grams)
    for _ in range(POWER_STEPS):
        vectors = grams @ vectors
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
    if warm is not None:
        warm[key] = vectors
    estimates = (vectors.mH @ grams @ vectors).real.view(-1)
    top = int(estimates.argmax())
    lam = float(torch.linalg.eigvalsh(grams[top])[-1])
    shift = lam * (1 + MARGIN)
    shifted = grams.neg_()  # in place: shift I - G for every matrix (the Grams are ours to overwrite)
    shifted.diagonal(dim1=-2, dim2=-1).add_(shift)
    _, info = torch.linalg.cholesky_ex(shifted)
    info[top] = 0
    failed = shifted[info != 0].neg_()
    if len(failed):
        failed.diagonal(dim1=-2, dim2=-1).add_(shift)
        lam = max(lam, float(torch.linalg.eigvalsh(failed)[..., -1].max()))
    return max(lam, 0.0)
