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

from sngan.linalg.bounds import ROUNDING, conv_upper_bound
from sngan.linalg.network import (NoCertifiedBound, RecordedCall, computed_weights_rounding,  # noqa: F401
                                  gradient_lower_bound, network_upper_bound)
from sngan.linalg.operators import input_shape, linear_map, top_singular_pair, top_singular_value
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


def matrix_sigma(weight: Tensor, dim: int = 0, *, vectors: dict | None = None, key=None) -> float:
    """Largest singular value of the kernel reshaped to (weight.shape[dim], rest): exact (a dense
    SVD), or, with `vectors` (a dict the caller keeps between calls, never the model), by Lanczos
    from the previous call's vector under `key`, to 5e-9 relative: the same number, without the
    SVD's cost at every log."""
    mat = weight_matrix(weight.detach().to(torch.float64), dim)
    if vectors is None:
        return float(torch.linalg.matrix_norm(mat, ord=2))
    sigma, vectors[key] = top_singular_pair(lambda x, w: x @ w.T, mat, (1, mat.shape[1]), tol=1e-8,
                                            start=vectors.get(key))
    return sigma


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


def operator_sigma_bounds(layer: nn.Module, input_size: Sequence[int] | None, *, iters: int = 2000,
                          tol: float = 1e-6) -> tuple[float, float]:
    """(lower, upper): certified bounds on the layer's true operator norm on inputs of spatial size
    `input_size` (see operator_sigma_interval)."""
    _, lower, upper = operator_sigma_interval(layer, input_size, iters=iters, tol=tol)
    return lower, upper


def operator_sigma_interval(layer: nn.Module, input_size: Sequence[int] | None, *, iters: int = 2000,
                            tol: float = 1e-6, vectors: dict | None = None) -> tuple[float, float, float]:
    """(estimate, lower, upper) of the layer's operator norm from one Lanczos run. Estimate: as
    operator_sigma. Lower: ||A x|| / ||x|| of the Lanczos vector x, evaluated directly (never above
    the norm). Upper: sngan.linalg.bounds (circular embedding, polyphase for strides). Linear and
    Embedding layers: the exact matrix norm all three ways. Bounds widened by sngan.linalg.bounds.ROUNDING
    for float64 rounding. `vectors`: a dict the caller keeps between calls (never the model), in
    which the Lanczos vector of this layer (and the bound's start vectors) are kept as the next
    call's warm start."""
    weight = effective_weight(layer)
    if isinstance(layer, (nn.Linear, nn.Embedding)):
        exact = matrix_sigma(weight if isinstance(layer, nn.Linear) else weight.T)
        return exact, exact * (1 - ROUNDING), exact * (1 + ROUNDING)
    fn, shape = linear_map(layer), input_shape(layer, input_size)
    w64 = weight.detach().to(torch.float64)
    key = (id(layer), tuple(shape))
    # float32 products suffice for a logging tolerance (CPU only: CUDA convs may round to TF32).
    fast = tol >= 1e-5 and weight.device.type == "cpu"
    estimate, vector = top_singular_pair(fn, w64, shape, max_iter=iters, tol=tol,
                                         start=vectors.get(key) if vectors is not None else None,
                                         matvec_dtype=torch.float32 if fast else torch.float64)
    if vectors is not None:
        vectors[key] = vector
    x = vector.view(shape).to(w64.device)
    with torch.no_grad():
        lower = float(fn(x, w64).norm() / x.norm())
    return estimate, lower * (1 - ROUNDING), conv_upper_bound(layer, weight, input_size, warm=vectors)


def network_lipschitz_bounds(D: nn.Module, input_shape: Sequence[int], *, starts: int = 4, steps: int = 8,
                             seed: int = 0, calls: Sequence[RecordedCall] | None = None) -> tuple[float, float]:
    """(lower, upper): certified bounds on the Lipschitz constant (l2 to l2) of the eval-mode D on
    one input of `input_shape` (e.g. (3, 32, 32)). Upper: D's fx graph composed with each layer's
    certified operator-norm bound on its real input size (sngan.linalg.network); an op without a
    stated bound raises NoCertifiedBound (a UserError naming it). Lower: the largest input-gradient
    norm found by `steps` steps of ascent from `starts` random points (a private generator), in
    float64 (with `calls`, lowered by the rounding of the weights the forward computes:
    computed_weights_rounding). Nothing in D changes: no power iteration advances, no global RNG draw, no hook stays.
    An `operator`-variant D must have seen its input size (as layer_input_sizes does). `calls`: one
    recorded forward's weight-using calls, for a D whose forward calls layers functionally
    (sngan.linalg.network.network_upper_bound; the audit passes them)."""
    rounding = ROUNDING if calls is None else computed_weights_rounding(D, len(calls))
    lower = gradient_lower_bound(D, input_shape, starts=starts, steps=steps, seed=seed, rounding=rounding)
    upper = network_upper_bound(D, input_shape, lambda name, layer, size: _operator_upper(layer, size), calls)
    return lower, upper


def _operator_upper(layer: nn.Module, input_size: Sequence[int] | None) -> float:
    """The upper end of operator_sigma_interval, without its Lanczos run."""
    weight = effective_weight(layer)
    if isinstance(layer, (nn.Linear, nn.Embedding)):
        return matrix_sigma(weight if isinstance(layer, nn.Linear) else weight.T) * (1 + ROUNDING)
    return conv_upper_bound(layer, weight, input_size)
