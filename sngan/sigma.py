"""Measuring spectral norms without changing what is measured.

Nothing here advances a power iteration, draws from the global RNG or touches a weight: the
weight is read with the layer's parametrizations switched to eval mode for the duration of the
read, and the iterative solver uses a private generator.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sngan.operators import input_shape, linear_map, top_singular_value
from sngan.spectral import weight_matrix


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight the layer's forward uses now, read without advancing any power iteration."""
    if not parametrize.is_parametrized(layer, "weight"):
        return layer.weight.detach()
    parametrizations = layer.parametrizations.weight
    modes = [p.training for p in parametrizations.modules()]
    parametrizations.eval()
    try:
        with torch.no_grad():
            return layer.weight.detach()
    finally:
        for p, mode in zip(parametrizations.modules(), modes):
            p.training = mode


def matrix_sigma(weight: Tensor, dim: int = 0) -> float:
    """Exact largest singular value of the kernel reshaped to (weight.shape[dim], rest)."""
    mat = weight_matrix(weight.detach().to(torch.float64), dim)
    return float(torch.linalg.matrix_norm(mat, ord=2))


def operator_sigma(layer: nn.Module, input_size: Sequence[int] | None, *, iters: int = 2000,
                   tol: float = 1e-6) -> float:
    """True operator norm of the layer's bias-free linear map on inputs of spatial size `input_size`.

    `input_size` is (H, W) for 2-d convs, (L,) for 1-d, and ignored (None) for Linear/Embedding.
    Computed by Lanczos in float64 to a relative accuracy of about tol/2 (stops after `iters`
    applications of A^T A at most).
    """
    weight = effective_weight(layer)
    return top_singular_value(linear_map(layer), weight, input_shape(layer, input_size),
                              max_iter=iters, tol=tol)
