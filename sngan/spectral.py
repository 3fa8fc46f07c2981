"""Five ways to spectrally normalize a discriminator, behind one switch.

`apply_spectral_norm(module, variant)` normalizes every Conv, ConvTranspose, Linear and Embedding
inside `module`. Afterwards `layer.weight` is always the weight the forward pass uses.

| variant    | what each layer gets                                                              |
|------------|-----------------------------------------------------------------------------------|
| `none`     | nothing                                                                           |
| `naive`    | the common incorrect recipe (see `_NaiveSpectralNorm`)                            |
| `reshaped` | correct SN from scratch: kernel reshaped to a matrix, W / sigma, grad through sigma |
| `builtin`  | `torch.nn.utils.parametrizations.spectral_norm`                                   |
| `operator` | W / sigma with sigma the TRUE operator norm of the layer on its real input size   |
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _builtin_spectral_norm

from sngan.linalg.operators import CONVS, SUPPORTED, TRANSPOSED_CONVS, gram_apply, linear_map

VARIANTS = ("none", "naive", "reshaped", "builtin", "operator")


def reshape_dim(layer: nn.Module) -> int:
    """The weight dimension that indexes output features: 1 for transposed convs, as torch does."""
    return 1 if isinstance(layer, TRANSPOSED_CONVS) else 0


def weight_matrix(weight: Tensor, dim: int = 0) -> Tensor:
    """The kernel reshaped to a matrix (weight.shape[dim], rest)."""
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.flatten(1)


def _full_precision(weight: Tensor):
    """Sigma is computed in the weight's own precision, also inside an autocast region."""
    return torch.autocast(weight.device.type, enabled=False)


# The helpers below compute exactly what the textbook expressions compute, bit for bit, in fewer
# aten ops (each op is a kernel launch on a GPU, where these tiny ops dominate the cost of SN).

def _unit(x: Tensor, eps: float) -> Tensor:
    """x / max(||x||, eps): F.normalize over all of x, without its expanded copy of the norm."""
    return x / torch.linalg.vector_norm(x).clamp_min_(eps)


def _unit_(x: Tensor, eps: float) -> Tensor:
    """_unit(x, eps), written into x."""
    return x.div_(torch.linalg.vector_norm(x).clamp_min_(eps))


def _needs_own_vectors(weight: Tensor) -> bool:
    """Whether sigma must use clones of the power-iteration vectors rather than the buffers.

    Autograd keeps the vectors for the backward. Outside `parametrize.cached()` a second
    training-mode call (D(real), then D(fake), one backward) advances them in place before that
    backward; inside it the parametrization runs once per block, so they stay as they were until
    the block's backward (and a later in-place change is caught by autograd's version check)."""
    # torch keeps no public flag for cached(); without its private one, clone (always safe).
    cached = getattr(parametrize, "_cache_enabled", 0)
    return torch.is_grad_enabled() and weight.requires_grad and not cached


class _DivideBySigma(torch.autograd.Function):
    """weight / sigma.clamp_min(eps), with the gradient autograd derives for that expression, op
    for op, so training is bit-identical; but its backward takes 8 aten ops instead of autograd's
    16: it reuses the quotient (the output) instead of recomputing it, negates the sum instead of
    the whole gradient (IEEE rounding is symmetric, so the bits are the same), and masks sigma's
    gradient with one op (which lets a NaN sigma's gradient through where autograd's mask gives 0;
    the weight's gradient is all NaN then either way)."""

    @staticmethod
    def forward(ctx, weight: Tensor, sigma: Tensor, eps: float) -> Tensor:
        clamped = sigma.clamp_min(eps)  # an all-zero weight stays zero, not NaN
        out = weight / clamped
        ctx.eps = eps
        ctx.save_for_backward(sigma, clamped, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        sigma, clamped, out = ctx.saved_tensors
        grad_weight = grad / clamped                            # d(w / s)/dw
        grad_clamped = (grad * (out / clamped)).sum().neg()     # d(w / s)/ds = -w / s / s
        # clamp_min's own gradient, where(sigma > eps, ., 0), in one op
        grad_sigma = torch.ops.aten.threshold_backward(grad_clamped, sigma, ctx.eps)
        return grad_weight, grad_sigma, None


class _NaiveSpectralNorm:
    """The common incorrect recipe, reproduced faithfully (a forward pre-hook).

    Before each training-mode forward::

        W = weight.view(weight.shape[0], -1)
        v = normalize(u W);  u' = normalize(v W^T);  sigma_hat = u' W v^T   # u' thrown away
        weight.data /= sigma_hat

    Its four defects, and what each does:
    1. `u` is drawn once and never updated: one power step from a random vector under-estimates
       the top singular value, so the layer's real sigma settles above 1 (1.2-2 on SNGAN layers).
    2. A single power step per forward, never accumulated across steps (a consequence of 1):
       the estimate never converges, however long the run.
    3. The division is in place on `weight.data`: it compounds across forwards and bypasses
       autograd, so the weight the optimizer updates is the already-divided one.
    4. No gradient through sigma: the optimizer never sees the normalization, and its update can
       push the real sigma up between divisions.
    `u` lives in the buffer `naive_u` so that a resumed run keeps the same fixed vector. Like the
    other variants it does nothing in eval mode, so a diagnostic forward changes no weight. It is
    the recipe as written, with its edge cases: an all-zero weight gives sigma_hat 0 and NaN.
    """

    def __init__(self, eps: float):
        self.eps = eps

    def __call__(self, layer: nn.Module, args: tuple) -> None:
        if not layer.training:
            return
        with torch.no_grad(), _full_precision(layer.weight):
            w = layer.weight.data.reshape(layer.weight.shape[0], -1)  # a copy if channels_last
            u = layer.naive_u  # (1, out), never written
            v = _unit(torch.mm(u, w), self.eps)
            u_next = _unit(torch.mm(v, w.transpose(0, 1)), self.eps)
            sigma_hat = torch.mm(torch.mm(u_next, w), v.transpose(0, 1))  # (1, 1)
            layer.weight.data.div_(sigma_hat)


class _ReshapedSpectralNorm(nn.Module):
    """Correct spectral normalization (Miyato et al. 2018, Alg. 1) as a parametrization.

    The kernel is reshaped to a matrix W (dim 0; dim 1 for transposed convs); persistent `_u`, `_v`
    are advanced by power iteration in training mode only; the forward returns W / (u^T W v), so the
    gradient flows through sigma.
    """

    def __init__(self, weight: Tensor, dim: int = 0, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.dim, self.n_power_iterations, self.eps = dim, n_power_iterations, eps
        mat = weight_matrix(weight.detach(), dim)
        self.register_buffer("_u", F.normalize(mat.new_empty(mat.shape[0]).normal_(), dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(mat.new_empty(mat.shape[1]).normal_(), dim=0, eps=eps))
        self._power_iteration(mat, 15)  # start from converged vectors

    @torch.no_grad()
    def _power_iteration(self, mat: Tensor, n: int) -> None:
        for _ in range(n):  # u <- normalize(W v), v <- normalize(W^T u), in place
            _unit_(torch.mv(mat, self._v, out=self._u), self.eps)
            _unit_(torch.mv(mat.transpose(0, 1), self._u, out=self._v), self.eps)

    def forward(self, weight: Tensor) -> Tensor:
        with _full_precision(weight):
            mat = weight_matrix(weight, self.dim)
            if self.training:
                self._power_iteration(mat, self.n_power_iterations)
            u, v = self._u, self._v
            if _needs_own_vectors(weight):  # D(real) and D(fake) may share one backward
                u = u.clone(memory_format=torch.contiguous_format)
                v = v.clone(memory_format=torch.contiguous_format)
            sigma = torch.dot(u, torch.mv(mat, v))
            return _DivideBySigma.apply(weight, sigma, self.eps)


class _OperatorSpectralNorm(nn.Module):
    """Divides the weight by the TRUE operator norm of the layer's linear map.

    Power iteration runs through the layer's own bias-free map A and its exact adjoint (autograd),
    on a persistent unit vector `_x` shaped like one input sample; sigma = ||A x|| with gradient
    through A. The input size is learned from the first forward of the layer (in any mode; the
    start vector comes from a per-layer seed, so it draws nothing from the global RNG at that
    moment). If the input size later changes in training mode, the iteration restarts at the new
    size (with a warning): the layer is then normalized for the new size. In eval mode the stored
    vector is used whatever the input size, so evaluation never changes the normalization.
    """

    warmup_iterations = 50

    def __init__(self, layer: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.n_power_iterations, self.eps = n_power_iterations, eps
        self.fn = linear_map(layer)
        self.layer_type = type(layer).__name__
        self.in_channels = layer.in_channels
        self.seed = int(torch.randint(0, 2**62, ()))  # drawn at construction, with the model
        self.register_buffer("_x", layer.weight.new_zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A freshly built layer has not seen its input size yet: take the saved vector's shape.
        saved = state_dict.get(prefix + "_x")
        if saved is not None and saved.shape != self._x.shape:
            self._x = self._x.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def input_size(self) -> tuple[int, ...] | None:
        return tuple(self._x.shape[2:]) if self._x.numel() else None

    def observe_input(self, layer: nn.Module, args: tuple) -> None:
        """Forward pre-hook: (re)start the iteration when the layer sees a new input size."""
        size = tuple(args[0].shape[2:])
        if size == self.input_size:
            return
        if self.input_size is not None:
            if not self.training:
                return
            warnings.warn(f"{self.layer_type}: input size changed from {self.input_size} to {size}; "
                          "operator spectral norm restarts its power iteration at the new size",
                          stacklevel=2)
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn((1, self.in_channels, *size), generator=gen, dtype=self._x.dtype)
        self._x = (x / x.norm()).to(self._x.device)
        weight = layer.parametrizations.weight.original
        with _full_precision(weight):
            self._power_iteration(weight, self.warmup_iterations)

    @torch.no_grad()
    def _power_iteration(self, weight: Tensor, n: int) -> None:
        for _ in range(n):  # in place: a captured CUDA graph reads and writes the same buffer each replay
            x = gram_apply(self.fn, weight, self._x)
            torch.div(x, x.norm().clamp_min(self.eps), out=self._x)

    def forward(self, weight: Tensor) -> Tensor:
        if not self._x.numel():
            raise RuntimeError("operator spectral norm: the layer's weight was read before its "
                               "first forward, so its input size is unknown")
        with _full_precision(weight):
            if self.training:
                self._power_iteration(weight, self.n_power_iterations)  # gram_apply detaches
            x = self._x
            if _needs_own_vectors(weight):  # D(real) and D(fake) may share one backward
                x = x.clone(memory_format=torch.contiguous_format)
            sigma = self.fn(x, weight).norm()
            return _DivideBySigma.apply(weight, sigma, self.eps)


def _normalize_layer(layer: nn.Module, variant: str, n_power_iterations: int, eps: float) -> None:
    dim = reshape_dim(layer)
    if variant == "naive":
        out = layer.weight.shape[0]
        layer.register_buffer("naive_u", layer.weight.new_empty(1, out).normal_())
        layer.register_forward_pre_hook(_NaiveSpectralNorm(eps))
    elif variant == "builtin":
        _builtin_spectral_norm(layer, n_power_iterations=n_power_iterations, eps=eps, dim=dim)
    elif variant == "reshaped" or not isinstance(layer, CONVS + TRANSPOSED_CONVS):
        # A Linear or Embedding map IS its matrix: its operator norm is the reshaped one.
        parametrize.register_parametrization(
            layer, "weight", _ReshapedSpectralNorm(layer.weight, dim, n_power_iterations, eps))
    else:  # operator
        sn = _OperatorSpectralNorm(layer, n_power_iterations, eps)
        # unsafe: the parametrization cannot be evaluated before the layer has seen an input.
        parametrize.register_parametrization(layer, "weight", sn, unsafe=True)
        layer.register_forward_pre_hook(sn.observe_input)


def is_normalized(layer: nn.Module) -> bool:
    """True if `layer` carries one of this module's normalizations (or the built-in one)."""
    return parametrize.is_parametrized(layer, "weight") or hasattr(layer, "naive_u")


def normalized_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every layer that apply_spectral_norm normalizes, in order."""
    # Checks the parameter, not `m.weight`, whose read would run a parametrization.
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, SUPPORTED) and (is_normalized(m) or m._parameters.get("weight") is not None)]


def apply_spectral_norm(module: nn.Module, variant: str, *, n_power_iterations: int = 1,
                        eps: float = 1e-12) -> nn.Module:
    """Normalize every Conv, ConvTranspose, Linear and Embedding inside `module`; return `module`.

    `module` itself may be such a layer. Raises ValueError for an unknown variant or a layer that
    is already normalized.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown spectral-norm variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "none":
        return module
    unsupported = [name or type(m).__name__ for name, m in module.named_modules()
                   if not isinstance(m, (*SUPPORTED, parametrize.ParametrizationList))
                   and any(p.dim() >= 2 for p in m.parameters(recurse=False))]
    if unsupported:  # a weight matrix the switch would silently leave unnormalized
        raise ValueError(f"spectral norm cannot normalize {', '.join(unsupported)} (supported: "
                         + ", ".join(t.__name__ for t in SUPPORTED) + ")")
    complex_layers = [name or type(m).__name__ for name, m in normalized_layers(module)
                      if m._parameters.get("weight") is not None and m._parameters["weight"].is_complex()]
    if complex_layers:
        raise ValueError(f"spectral norm of complex weights is not supported: {', '.join(complex_layers)}")
    for name, layer in normalized_layers(module):
        if is_normalized(layer):
            raise ValueError(f"layer {name or type(layer).__name__!r} is already normalized")
        _normalize_layer(layer, variant, n_power_iterations, eps)
    return module
