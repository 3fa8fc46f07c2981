"""What one forward really computes with: every weight-using functional call, as it was made.

A `TorchFunctionMode` sees each call of F.conv1d/2d/3d, F.conv_transpose1d/2d/3d, F.linear,
F.embedding and F.batch_norm with the arguments it received, whoever made it: a module's own
forward, a hand-written layer that divides its weight inside forward, a wrapper that calls its
inner module's `forward()` directly (no hook fires there), a legacy hook or a parametrization.
Nothing is registered on the model: its hook dictionaries are never touched, so a module pickled
by another process (whose hook ids may collide with new ones) runs exactly its own hooks.

Each call is named by the module whose code made it: the module owning the weight when the call
received a parameter (or a view of one), else the innermost frame on the Python stack whose
`self` is an nn.Module. Frames are used rather than global module hooks because a wrapper that
calls `self.module.forward(x)` bypasses every hook, global ones included, but not the stack.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_SIGNATURES = {
    F.conv1d: ("conv1d", _CONV), F.conv2d: ("conv2d", _CONV), F.conv3d: ("conv3d", _CONV),
    F.conv_transpose1d: ("conv_transpose1d", _CONV_T), F.conv_transpose2d: ("conv_transpose2d", _CONV_T),
    F.conv_transpose3d: ("conv_transpose3d", _CONV_T),
    F.linear: ("linear", ("input", "weight", "bias")),
    F.embedding: ("embedding", ("input", "weight", "padding_idx", "max_norm")),
    F.batch_norm: ("batch_norm", ("input", "running_mean", "running_var", "weight", "bias", "training",
                                  "momentum", "eps")),
}
_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0, "training": False,
             "eps": 1e-5}


@dataclass
class Call:
    """One weight-using call: what it received (copies taken at the moment of the call)."""
    op: str                                   # "conv2d", "linear", "embedding", "batch_norm", ...
    owner: nn.Module | None                   # the module whose code made the call
    stack: tuple[nn.Module, ...]              # the modules running on the stack, innermost first
    weight: Tensor | None                     # the weight it received (BatchNorm: gamma, maybe None)
    param: nn.Parameter | None                # the parameter that weight is (or views), if any
    input_shape: tuple[int, ...]
    options: dict = field(default_factory=dict)  # stride, padding, ...; indices; running_var, eps
    on_input_path: bool = True                # False: a call on the model's own state (a sigma estimate)


class ForwardCalls(TorchFunctionMode):
    """Records every weight-using call made while active; changes nothing it records."""

    def __init__(self, owners: dict[int, tuple[nn.Parameter, nn.Module]]):
        super().__init__()
        self.calls: list[Call] = []
        self._owners = owners  # id(parameter) -> (parameter, the module holding it)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        signature = _SIGNATURES.get(func)
        if signature is not None:
            op, names = signature
            bound = {**_DEFAULTS, **dict(zip(names, args)), **kwargs}
            self.calls.append(self._record(op, bound, sys._getframe(1)))
        return func(*args, **kwargs)

    def _record(self, op: str, bound: dict, frame) -> Call:
        x, weight = bound["input"], bound.get("weight")
        stack = _modules_on_stack(frame)
        found = self._owners.get(self._parameter_id(weight))
        param, owner = found if found is not None else (None, stack[0] if stack else None)
        options = {k: bound[k] for k in ("stride", "padding", "dilation", "groups", "output_padding", "eps",
                                         "training") if k in bound}
        if op == "embedding":
            options["indices"] = [int(i) for i in x.detach().flatten().tolist()]
        if op == "batch_norm":
            options["running_var"] = _copy(bound.get("running_var"))
        # The input's path: the forward's input requires grad, the model's own state does not.
        on_path = op == "embedding" or bool(x.requires_grad)
        return Call(op, owner, stack, _copy(weight), param, tuple(x.shape), options, on_path)

    def _parameter_id(self, weight) -> int | None:
        """id of the parameter `weight` is, or is a view of (by its base or its storage)."""
        if not isinstance(weight, Tensor):
            return None
        for t in (weight, weight._base):
            if t is not None and id(t) in self._owners:
                return id(t)
        if not weight.numel():
            return None
        # Storages as they are now: a forward may replace a parameter's (`p.data = ...`), and the
        # freed address may then hold a new tensor.
        ptr = weight.untyped_storage().data_ptr()
        return next((key for key, (p, _) in self._owners.items()
                     if p.numel() and p.untyped_storage().data_ptr() == ptr), None)


def _copy(t):
    return t.detach().clone() if isinstance(t, Tensor) else t


def _modules_on_stack(frame) -> tuple[nn.Module, ...]:
    """The nn.Modules whose methods are running on the stack, innermost first, each once."""
    found: list[nn.Module] = []
    while frame is not None:
        if "self" in frame.f_code.co_varnames:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, nn.Module) and all(candidate is not m for m in found):
                found.append(candidate)
        frame = frame.f_back
    return tuple(found)


@dataclass
class Forward:
    """One recorded forward: its calls, the model's module names, and every parameter's value
    before the forward (what a module stores, to compare with what its calls received)."""
    calls: list[Call]
    names: dict[int, str]                     # id(module) -> qualified name ("" for the model)
    before: dict[int, Tensor]                 # id(parameter or buffer) -> value before the forward


def record_forward(model: nn.Module, inputs: tuple) -> Forward:
    """One eval-mode forward of `inputs` (a float sample batch first) with every weight-using call
    recorded. Parameters, buffers and train/eval flags are put back afterwards: a foreign layer may
    advance its power iteration, or divide its weight in place, even in eval mode."""
    owners: dict[int, tuple[nn.Parameter, nn.Module]] = {}
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), (p, module))
    saved = _snapshot(model)
    modes = [(m, m.training) for m in model.modules()]
    recorder = ForwardCalls(owners)
    # The input requires grad so that a call on the input's path can be told from one on the
    # model's own state (a sigma estimate from stored vectors), which does not.
    x = inputs[0].detach().requires_grad_()
    model.eval()
    try:
        with torch.enable_grad(), recorder:
            model(x.clone(), *inputs[1:])
    finally:
        _restore(saved)
        for m, training in modes:
            m.training = training
    return Forward(recorder.calls, names, {id(t): value for _, _, t, value in saved})


def _snapshot(model: nn.Module) -> list[tuple[dict, str, Tensor, Tensor]]:
    return [(slots, name, t, t.detach().clone()) for m in model.modules()
            for slots in (m._parameters, m._buffers) for name, t in slots.items() if t is not None]


@torch.no_grad()
def _restore(saved: list[tuple[dict, str, Tensor, Tensor]]) -> None:
    for slots, name, t, value in saved:
        if slots.get(name) is not t:  # the forward replaced it: put the original back
            slots[name] = t
        if t.shape == value.shape:
            t.copy_(value)
        else:
            t.data = value


def divisor(effective: Tensor, stored: Tensor, rtol: float = 1e-5) -> float | None:
    """s > 0 such that effective = stored / s (to rtol, relative to effective), else None."""
    if effective.shape != stored.shape:
        return None
    e, s = effective.detach().double().flatten(), stored.detach().double().flatten()
    ss = float(s @ s)
    if ss == 0 or not torch.isfinite(e).all():
        return None
    c = float(e @ s) / ss
    if c <= 0 or float((e - c * s).norm()) > rtol * float(e.norm()):
        return None
    return 1.0 / c


def stored_weight(forward: Forward, call: Call) -> tuple[str, Tensor] | None:
    """(qualified name, value before the forward) of the parameter the call's weight comes from:
    the parameter it is, else the owner's parameter of the same shape that it is a positive
    multiple of (`weight_orig`, `parametrizations.weight.original`, `weight_bar`, ...), else the
    owner's first of that shape."""
    prefix = forward.names.get(id(call.owner), "")
    qualified = (prefix + "." if prefix else "")
    if call.param is not None:
        local = next((n for n, p in call.owner.named_parameters() if p is call.param), "weight")
        return qualified + local, forward.before[id(call.param)]
    if call.owner is None or call.weight is None:
        return None
    same_shape = [(n, forward.before[id(p)]) for n, p in call.owner.named_parameters()
                  if p.shape == call.weight.shape and id(p) in forward.before]
    for n, value in same_shape:
        if divisor(call.weight, value) is not None:
            return qualified + n, value
    return (qualified + same_shape[0][0], same_shape[0][1]) if same_shape else None
