"""Two labels for a layer's weight: what is attached to the layer, and what its forward measurably
did to the stored weight. The first is read from the module (exact classes, never class names);
the second, which warnings follow, compares the weight a call received with the one stored."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm as TorchSpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as TorchLegacySpectralNorm

from sngan.diagnostics.forward_calls import divisor
from sngan.spectral import _NaiveSpectralNorm, _OperatorSpectralNorm, _ReshapedSpectralNorm

RESHAPED = "reshaped-kernel SN"
OPERATOR = "operator-norm SN"
OTHER = "divided by something else"
NONE = "none"
UNKNOWN = "unknown"
NAIVE_RECIPE = "sngan naive"  # attached: divides the stored weight in place, in training mode only
# A power-iteration estimate u^T W v lies below the top singular value, so reshaped-kernel SN
# leaves the reshaped sigma at or a little above 1 (a power iteration not yet converged, or one
# step behind the weights); the text always gives the divisor's ratio to the exact sigma.
RESHAPED_RANGE = (1 - 1e-4, 1.05)
OPERATOR_SLACK = 0.01

_PARAMETRIZATIONS = {TorchSpectralNorm: "torch spectral_norm (parametrization)",
                     _ReshapedSpectralNorm: "sngan reshaped", _OperatorSpectralNorm: "sngan operator"}


def attached(owner: nn.Module | None, stack: tuple[nn.Module, ...], names: dict[int, str], divided: bool) -> str:
    """Which normalization is attached to the layer, as far as can be told from outside: a
    parametrization or forward pre-hook of a known exact class, an unknown one, normalization
    written inside some module's forward (when the weight was divided with nothing attached),
    or none."""
    if owner is None:
        return NONE
    if parametrize.is_parametrized(owner, "weight"):
        kinds = [_PARAMETRIZATIONS.get(type(p)) for p in owner.parametrizations.weight]
        if len(kinds) == 1 and kinds[0] is not None:
            return kinds[0]
        return "unknown parametrization (" + ", ".join(type(p).__name__ for p in owner.parametrizations.weight) + ")"
    hooks = list(owner._forward_pre_hooks.values())
    if any(type(h) is TorchLegacySpectralNorm for h in hooks):
        return "torch spectral_norm (legacy hook)"
    if any(type(h) is _NaiveSpectralNorm for h in hooks):
        return NAIVE_RECIPE
    if hooks:
        return "unknown (forward pre-hook " + ", ".join(type(h).__name__ for h in hooks) + ")"
    if divided:  # nothing attached, yet the weight was divided: by code in some module's forward
        writer = next((m for m in stack if not type(m).__module__.startswith("torch.")), owner)
        where = names.get(id(writer), "")
        return f"in forward ({type(writer).__name__}{' at ' + where if where else ''})"
    return NONE


def behaviour(effective: Tensor, stored: tuple[str, Tensor] | None, sigma_matrix: float,
              operator: tuple[float, float]) -> tuple[str, str, float | None]:
    """(category, one-line description, divisor) of what the forward did to the stored weight:
    `effective = stored / s` with s the reshaped sigma (reshaped-kernel SN), the operator norm
    (operator-norm SN) or something else; `effective = stored` (none); otherwise unknown.
    `sigma_matrix` and `operator` are the effective weight's own (so s is what brought them to 1)."""
    if stored is None:
        return UNKNOWN, "no stored weight of its shape found", None
    name, value = stored
    if torch.equal(effective, value.to(effective.dtype)):
        return NONE, f"= {name}", None
    s = divisor(effective, value)
    if s is None:
        return UNKNOWN, f"not a positive multiple of {name}", None
    if abs(s - 1) <= 1e-6:
        return NONE, f"= {name}", None
    if RESHAPED_RANGE[0] <= sigma_matrix <= RESHAPED_RANGE[1]:
        category = RESHAPED
    elif operator[0] <= 1 + 1e-6 and operator[1] >= 1 - OPERATOR_SLACK:
        category = OPERATOR
    else:
        category = OTHER
    ratio = 1 / sigma_matrix  # the divisor over the stored weight's exact reshaped sigma
    exact = "" if abs(ratio - 1) <= 1e-3 else f" ({ratio:.3g} x its exact reshaped sigma)"
    return category, f"{name} / {s:.4g}{exact}: {category}", s
