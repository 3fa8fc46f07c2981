"""A layer's bias-free linear map, its exact adjoint, and the top singular value of that map.

A convolution on inputs of a given spatial size is a linear operator; its spectral norm is the
Lipschitz constant that spectral normalization is meant to bound. Both the `operator` variant
(sngan.spectral) and the measurement (sngan.sigma) go through the functions here, so that they
agree on what "the layer's map" is: stride, padding and padding mode, dilation, groups and
output_padding all included, the bias left out.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LinearMap = Callable[[Tensor, Tensor], Tensor]  # (x, weight) -> y, linear in x

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
SUPPORTED = CONVS + TRANSPOSED_CONVS + (nn.Linear, nn.Embedding)

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def linear_map(layer: nn.Module) -> LinearMap:
    """Return f(x, weight): the layer's forward without bias, with the weight passed in.

    The returned function holds only the layer's hyper-parameters (not the layer), so a
    parametrization can keep it without creating a reference cycle through the module tree.
    """
    if isinstance(layer, CONVS):
        conv = _CONV_FN[len(layer.kernel_size)]
        stride, dilation, groups = layer.stride, layer.dilation, layer.groups
        if layer.padding_mode == "zeros":
            padding = layer.padding
            return lambda x, w: conv(x, w, None, stride, padding, dilation, groups)
        pad, mode = tuple(layer._reversed_padding_repeated_twice), layer.padding_mode
        return lambda x, w: conv(F.pad(x, pad, mode=mode), w, None, stride, 0, dilation, groups)
    if isinstance(layer, TRANSPOSED_CONVS):
        conv_t = _CONV_T_FN[len(layer.kernel_size)]
        stride, padding, output_padding = layer.stride, layer.padding, layer.output_padding
        dilation, groups = layer.dilation, layer.groups
        return lambda x, w: conv_t(x, w, None, stride, padding, output_padding, groups, dilation)
    if isinstance(layer, nn.Linear):
        return lambda x, w: F.linear(x, w)
    if isinstance(layer, nn.Embedding):
        # A lookup is the map one_hot(index) -> one_hot @ weight.
        return lambda x, w: x @ w
    raise TypeError(f"no linear map for {type(layer).__name__}; supported: "
                    + ", ".join(t.__name__ for t in SUPPORTED))


def input_shape(layer: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    """Shape (1, channels, *input_size) of one input sample of `layer`."""
    if isinstance(layer, nn.Linear):
        return (1, layer.in_features)
    if isinstance(layer, nn.Embedding):
        return (1, layer.num_embeddings)
    spatial_dims = len(layer.kernel_size)  # not layer.weight: reading it may run a parametrization
    size = tuple(int(s) for s in (input_size or ()))
    if len(size) != spatial_dims or min(size, default=0) < 1:
        raise ValueError(f"{type(layer).__name__} needs input_size with {spatial_dims} positive "
                         f"entries, got {input_size!r}")
    channels = layer.in_channels
    return (1, channels, *size)


def gram_apply(fn: LinearMap, weight: Tensor, x: Tensor) -> Tensor:
    """A^T A x for the linear map A = fn(., weight), the adjoint taken exactly by autograd."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x, weight.detach())
        (g,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    return g


# Lanczos steps between two convergence tests on an accelerator (each test reads back to the host).
CHECK_EVERY_ON_GPU = 8


def top_singular_value(fn: LinearMap, weight: Tensor, shape: Sequence[int], *,
                       max_iter: int = 1000, tol: float = 1e-6, seed: int = 0) -> float:
    """Largest singular value of x -> fn(x, weight) on inputs of `shape` (see top_singular_pair)."""
    return top_singular_pair(fn, weight, shape, max_iter=max_iter, tol=tol, seed=seed)[0]


def _start_vector(start: Tensor | None, n: int, device: torch.device, seed: int) -> Tensor:
    """Lanczos's first vector: `start` (a warm start) when it fits, else a random one from a private
    generator (no global RNG state is consumed)."""
    if start is not None and start.numel() == n and float(start.norm()) > 0:
        return start.detach().to(device=device, dtype=torch.float64).reshape(-1).clone()
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).to(device)


def _top_ritz(alphas: list[Tensor], betas: list[Tensor]) -> tuple[float, Tensor, int, bool, float]:
    """The top Ritz pair of the Lanczos tridiagonal so far, read back to the host once: (its value,
    its vector in the Krylov basis, the basis size m it uses, whether an invariant subspace ended
    the recurrence, its residual)."""
    a, b = torch.stack(alphas).cpu(), torch.stack(betas).cpu()
    # An invariant subspace (beta ~ 0) ends the recurrence where it appeared: the steps after it
    # (between two tests) divided by ~0 and are discarded.
    small = (b <= 1e-12 * a.abs().max().clamp_min(1e-300)).nonzero()
    m = int(small[0]) + 1 if len(small) else len(alphas)
    evals, evecs = torch.linalg.eigh(torch.diag(a[:m]) + torch.diag(b[:m - 1], 1) + torch.diag(b[:m - 1], -1))
    return float(evals[-1]), evecs[:, -1], m, bool(len(small)), float(b[m - 1] * evecs[-1, -1].abs())


def top_singular_pair(fn: LinearMap, weight: Tensor, shape: Sequence[int], *, max_iter: int = 1000,
                      tol: float = 1e-6, seed: int = 0, start: Tensor | None = None,
                      matvec_dtype: torch.dtype = torch.float64,
                      check_every: int | None = None) -> tuple[float, Tensor]:
    """(largest singular value, its right singular vector as a flat float64 tensor) of
    x -> fn(x, weight) on inputs of `shape`, by Lanczos on A^T A; `start`, a previous vector
    (a warm start: the weights moved little since), else a random one. `matvec_dtype`: the
    precision of the applications of A^T A (float32: several times faster on CPU, and accurate to
    about 1e-6 relative, enough for tol >= 1e-5); the Lanczos recurrence is always float64.

    Lanczos with full re-orthogonalisation: the top singular values of a convolution on a finite
    grid are clustered, where plain power iteration needs thousands of steps to reach 1e-4. It
    stops when the residual of the top Ritz pair is below `tol` times its value (relative error in
    sigma at most tol/2), restarting from the best Ritz vector every `restart` steps to bound
    memory. The start vector comes from a private generator: no global RNG state is consumed.
    The convergence test reads the small tridiagonal matrix back to the host: every `check_every`
    steps (default: every step on the CPU, where that costs nothing; every CHECK_EVERY_ON_GPU steps
    on an accelerator, so that its steps run without waiting for the host in between).
    """
    weight = weight.detach().to(matvec_dtype)
    if check_every is None:
        check_every = 1 if weight.device.type == "cpu" else CHECK_EVERY_ON_GPU
    n = 1
    for s in shape:
        n *= int(s)
    restart = min(n, 120)
    q = _start_vector(start, n, weight.device, seed)

    def matvec(v: Tensor) -> Tensor:
        return gram_apply(fn, weight, v.view(shape).to(matvec_dtype)).reshape(-1).to(torch.float64)

    theta, used = 0.0, 0
    while used < max_iter:
        basis = torch.zeros(restart, n, dtype=torch.float64, device=weight.device)
        alphas, betas = [], []
        q = q / q.norm()
        for k in range(restart):
            basis[k] = q
            w = matvec(q)
            used += 1
            alphas.append(torch.dot(q, w))
            # Full re-orthogonalisation, twice: keeps the Krylov basis exact in float64.
            for _ in range(2):
                w = w - basis[: k + 1].T @ (basis[: k + 1] @ w)
            beta = w.norm()
            betas.append(beta)
            last = used >= max_iter or k == restart - 1
            if (k + 1) % check_every == 0 or last:
                theta, ritz, m, invariant, residual = _top_ritz(alphas, betas)
                ritz = ritz.to(basis.device)
                if invariant or residual <= tol * abs(theta):
                    return max(theta, 0.0) ** 0.5, basis[:m].T @ ritz
                if last:
                    break
            q = w / beta
        q = basis[: len(alphas)].T @ ritz  # restart from the best Ritz vector
    return max(theta, 0.0) ** 0.5, q
