"""Certified bounds on the Lipschitz constant (l2 to l2) of a whole network, through its graph.

Upper: the network is traced with torch.fx and its graph composed node by node. Each node's bound
is a bound on the Lipschitz constant of the map from the network's input to that node's value: a
chain multiplies, a sum of branches (a residual add) adds the branches' bounds, a concatenation
takes the root of the sum of their squares, a value that does not depend on the input (a
parameter, a shape) counts 0, and every op carries a constant it can state (below). A layer's
constant is a certified bound on its operator norm on its real input size, supplied by the caller.
An op without a stated constant is refused by name, never counted as 1. The bounds hold for the
map on one sample, at the input shape the graph was propagated with (eval mode: BatchNorm reads
its running statistics, dropout is the identity).

Lower: the norm of a gradient of the network's output at a point is at most its Lipschitz
constant; a few steps of ascent on a difference quotient, from random points drawn from a private
generator, look for large ones. The network is evaluated in float64, on a copy holding the
weights its forward uses now (nothing in the network changes).
"""

from __future__ import annotations

import copy
import math
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import parametrize

from sngan.linalg.operators import SUPPORTED
from sngan.run.errors import UserError

# (qualified layer name, the layer, its spatial input size or None) -> an upper bound on its norm
LayerUpper = Callable[[str, nn.Module, "tuple[int, ...] | None"], float]
# Gradient norms are computed in float64 (relative error ~1e-14); the lower bound is lowered by this.
ROUNDING = 1e-9


class NoCertifiedBound(UserError):
    """The network holds an op (or a structure) whose Lipschitz constant this module cannot state."""


@dataclass(frozen=True)
class _Step:
    """One input-dependent node: its bound is `op` applied to its inputs' bounds."""
    name: str
    op: str  # input | scale | layer | batchnorm | sum | rss
    inputs: tuple[str, ...] = ()
    factors: tuple[float, ...] = ()  # scale: (c,); sum: one coefficient per input
    target: str = ""  # layer, batchnorm: the module's qualified name in the network
    size: tuple[int, ...] | None = None  # layer: its spatial input size


@dataclass(frozen=True)
class _GraphPlan:
    steps: tuple[_Step, ...]
    output: str


@dataclass(frozen=True)
class _ChainPlan:  # a Sequential that fx cannot trace: its children, one after the other
    parts: tuple


@dataclass(frozen=True)
class RecordedCall:
    """A weight-using call that one recorded forward made on its input (sngan.diagnostics.forward_calls):
    its op ("conv2d", "linear", "batch_norm", ...), its input's shape, its weight's shape, and a
    certified upper bound on its operator norm (None: none)."""
    op: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    upper: float | None


class _Recorded:
    """Recorded calls, taken in the graph's order: every weight-using node of the graph must be the
    next call, same op and shapes, or the graph is not the forward that was recorded."""

    def __init__(self, calls: Sequence[RecordedCall]):
        self.calls, self.taken = list(calls), 0

    def take(self, op: str, input_shape, weight_shape, where: str) -> RecordedCall:
        call = self.calls[self.taken] if self.taken < len(self.calls) else None
        if call is None or call.op != op or call.input_shape != tuple(input_shape or ()) or (
                weight_shape is not None and call.weight_shape != tuple(weight_shape)):
            recorded = "none" if call is None else f"{call.op} on {'x'.join(map(str, call.input_shape))}"
            raise NoCertifiedBound(f"no certified bound: {op} at {where} is not the recorded forward's call "
                                   f"{self.taken + 1} ({recorded}): the traced graph is another forward")
        self.taken += 1
        return call

    def check_all_taken(self) -> None:
        if self.taken != len(self.calls):
            left = self.calls[self.taken]
            raise NoCertifiedBound(f"no certified bound: the recorded forward's call {self.taken + 1} ({left.op}) "
                                   "is not in the traced graph: the traced graph is another forward")


# Per network: its trace (or the error tracing raised) and its plans by input shape. Holds no
# reference to the network itself, so an entry goes with its network.
_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Switch modules (and all their children) to eval mode, then restore each child's own flag."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


def _traced(module: nn.Module) -> fx.GraphModule | Exception:
    entry = _CACHE.setdefault(module, {})
    if "trace" not in entry:
        try:
            with eval_mode(module):  # a forward's `if self.training` is read at trace time
                entry["trace"] = fx.symbolic_trace(module)
        except Exception as e:  # noqa: BLE001 (any tracing failure means: use the module tree)
            entry["trace"] = e
    return entry["trace"]


def network_upper_bound(D: nn.Module, input_shape: Sequence[int], layer_upper: LayerUpper,
                        calls: Sequence[RecordedCall] | None = None) -> float:
    """A certified upper bound on D's Lipschitz constant on inputs of `input_shape` (one sample,
    without the batch dimension), D's graph composed with `layer_upper` for its layers. The graph
    is traced once per D and propagated once per input shape (one eval-mode forward of zeros);
    later calls only compose. Raises NoCertifiedBound naming an op it cannot bound.

    With `calls` (one recorded forward's weight-using calls on the input, in order), every layer is
    bounded by its recorded call, on the weight that call received: a layer that a forward calls
    functionally, `F.conv2d(x, weight computed there)`, as well as a module whose hook divides its
    weight in place first. The graph's weight-using ops are matched one to one with the calls, by
    op and shapes, or refused. Such a plan holds those bounds, so it is made afresh each time."""
    shape = tuple(int(s) for s in input_shape)
    if calls is not None:
        recorded = _Recorded(calls)
        plan = _plan(D, shape, "", recorded)
        recorded.check_all_taken()
        return _compose(plan, D, layer_upper)
    plans = _CACHE.setdefault(D, {}).setdefault("plans", {})
    if shape not in plans:
        plans[shape] = _plan(D, shape, "")
    return _compose(plans[shape], D, layer_upper)


def _compose(plan, D: nn.Module, layer_upper: LayerUpper) -> float:
    if isinstance(plan, _ChainPlan):
        bound = 1.0
        for part in plan.parts:
            bound = _compose(part, D, layer_upper) * bound
        return bound
    bounds: dict[str, float] = {}
    for s in plan.steps:
        if s.op == "input":
            bounds[s.name] = 1.0
        elif s.op == "scale":
            bounds[s.name] = s.factors[0] * bounds[s.inputs[0]]
        elif s.op == "layer":
            bounds[s.name] = layer_upper(s.target, D.get_submodule(s.target), s.size) * bounds[s.inputs[0]]
        elif s.op == "batchnorm":
            bounds[s.name] = _batchnorm_norm(D.get_submodule(s.target)) * bounds[s.inputs[0]]
        elif s.op == "sum":
            bounds[s.name] = sum(c * bounds[i] for c, i in zip(s.factors, s.inputs))
        else:  # rss: a concatenation of branches
            bounds[s.name] = math.sqrt(sum(bounds[i] ** 2 for i in s.inputs))
    return bounds.get(plan.output, 0.0)  # an output independent of the input: 0


def _batchnorm_norm(bn: nn.Module) -> float:
    """Eval-mode BatchNorm is x -> gamma (x - mean) / sqrt(var + eps) + beta per channel."""
    if bn.running_var is None:
        raise NoCertifiedBound(f"no certified bound: {type(bn).__name__} without running statistics")
    scale = (bn.running_var.detach().double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double().abs()
    return float(scale.max()) * (1 + ROUNDING)


def _plan(module: nn.Module, shape: tuple[int, ...], prefix: str, recorded: _Recorded | None = None):
    """The composition plan of `module` (named `prefix` in the network) on inputs of `shape`."""
    if _is_known_leaf(module):
        out_shape = _forward_zeros(module, shape).shape
        step = _module_step("out", "x", module, prefix.rstrip("."), (1, *shape), tuple(out_shape), recorded)
        return _GraphPlan((_Step("x", "input"), step), "out")
    traced = _traced(module)
    if not isinstance(traced, Exception):
        return _graph_plan(module, traced, shape, prefix, recorded)
    if not isinstance(module, nn.Sequential):
        detail = (str(traced).strip().splitlines() or [type(traced).__name__])[0][:120]
        raise NoCertifiedBound(f"no certified bound: {type(module).__name__} at {prefix.rstrip('.') or 'D'} "
                               f"cannot be traced ({detail}) and is not a plain chain")
    parts, x_shape = [], shape
    for name, child in module.named_children():  # each child on the input it really receives
        parts.append(_plan(child, x_shape, f"{prefix}{name}.", recorded))
        x_shape = tuple(_forward_zeros(child, x_shape).shape[1:])
    return _ChainPlan(tuple(parts))


def _forward_zeros(module: nn.Module, shape: Sequence[int]) -> Tensor:
    param = next(module.parameters(), None)
    x = torch.zeros((1, *shape), dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else None)
    with torch.no_grad(), eval_mode(module):
        return module(x)


def _graph_plan(module: nn.Module, traced: fx.GraphModule, shape: tuple[int, ...], prefix: str,
                recorded: _Recorded | None) -> _GraphPlan:
    gm = fx.GraphModule(module, copy.deepcopy(traced.graph))  # shapes go on a copy of the graph
    param = next(module.parameters(), None)
    with torch.no_grad(), eval_mode(module):
        (ShapeProp if recorded is None else _ConstantProp)(gm).propagate(torch.zeros((1, *shape), dtype=param.dtype if param is not None else None,
                                            device=param.device if param is not None else None))
    steps: list[_Step] = []
    dependent: set[str] = set()
    output = ""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise NoCertifiedBound(f"no certified bound: {prefix.rstrip('.') or 'D'} returns "
                                       f"{type(node.args[0]).__name__}, not one tensor")
            output = node.args[0].name
        elif node.op == "placeholder" and not steps:
            steps.append(_Step(node.name, "input"))
            dependent.add(node.name)
        elif node.op == "placeholder" and not node.args:  # (one with a default value is a constant)
            raise NoCertifiedBound(f"no certified bound: {prefix.rstrip('.') or 'D'} takes a second input "
                                   f"({node.name}); the bound is on one input")
        elif any(n.name in dependent for n in node.all_input_nodes) and node.op != "get_attr":
            step = _node_step(node, module, dependent, prefix, recorded)
            if step is not None:
                if _in_place(node, module) and not (step.op == "scale" and step.factors[0] <= 1):
                    _check_mutation_unread(node, module, order, _where(node, prefix))
                steps.append(step)
                dependent.add(node.name)
    if steps and output not in dependent:
        raise NoCertifiedBound(f"no certified bound: {prefix.rstrip('.') or 'D'}'s output does not depend on its "
                               "input as traced (a value read through an op the trace does not follow)")
    return _GraphPlan(tuple(steps), output)


# The op names of in-place arithmetic that Python's augmented assignment traces to.
_AUGMENTED = {"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor",
              "ilshift", "irshift"}
# Ops whose result may share its input's storage: a write into the result writes into the input.
_ALIASING = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous", "permute",
             "transpose", "t", "movedim", "swapaxes", "detach", "float", "double", "to", "type_as", "view_as",
             "reshape_as", "chunk", "split", "unbind", "narrow", "select", "getitem", "expand", "expand_as",
             "identity", "dropout", "getattr", "real"}


def _op_name(node: fx.Node) -> str:
    return node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))


def _in_place(node: fx.Node, module: nn.Module) -> bool:
    """The node writes into its first input (x.add_(y), x += y, F.relu(x, inplace=True), a module
    built with inplace=True)."""
    if node.op == "call_module":
        return getattr(module.get_submodule(node.target), "inplace", False) is True
    if node.op not in ("call_method", "call_function"):
        return False
    name = _op_name(node)
    return (name.endswith("_") and not name.endswith("__")) or name in _AUGMENTED or node.kwargs.get("inplace") is True


def _reads_metadata(node: fx.Node) -> bool:
    name = _op_name(node) if node.op in ("call_method", "call_function") else ""
    return name in SHAPE_QUERIES or (name == "getattr" and len(node.args) > 1 and node.args[1] in _METADATA)


def _shares_input_storage(node: fx.Node, module: nn.Module) -> bool:
    """The node's result may be its first input's storage (a view, an in-place op, an identity)."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        layer = module.get_submodule(node.target)
        return _in_place(node, module) or isinstance(layer, (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout,
                                                             nn.Dropout1d, nn.Dropout2d, nn.Dropout3d))
    return node.op in ("call_method", "call_function") and (_op_name(node) in _ALIASING or _in_place(node, module))


def _check_mutation_unread(node: fx.Node, module: nn.Module, order: dict, where: str) -> None:
    """An in-place op that can raise its input's bound is composed as its own result only; a node
    that reads the written tensor (or a tensor sharing its storage) after it would be composed with
    the value from before the write. Such a graph is refused."""
    written, frontier = set(), [node.args[0]]
    while frontier:  # the written tensor, the tensors it views, and the views of those
        current = frontier.pop()
        if current in written:
            continue
        written.add(current)
        if _shares_input_storage(current, module):
            frontier.append(current.args[0])
        frontier.extend(u for u in current.users if u is not node and u.args and u.args[0] is current
                        and _shares_input_storage(u, module))
    for tensor in written:
        for reader in tensor.users:
            if reader is not node and order[reader] > order[node] and not _reads_metadata(reader):
                raise NoCertifiedBound(f"no certified bound: the in-place {_op_name(node)} at {where} changes a "
                                       f"value that {reader.name} reads later: write it as a new value "
                                       f"(h = h.{_op_name(node).rstrip('_')}(...))")


class _ConstantProp(ShapeProp):
    """ShapeProp that also keeps the value of every tensor that does not depend on the input (a
    class embedding's row in a projection head), for a product by it. Only for a plan made afresh
    (recorded calls): a kept value would go stale in a cached plan as the weights train."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self._input_dependent: set[fx.Node] = set()

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if (n.op == "placeholder" and not self._input_dependent) or any(
                a in self._input_dependent for a in n.all_input_nodes):
            self._input_dependent.add(n)
        elif isinstance(result, Tensor):
            n.meta["constant"] = result.detach()
        return result


def _where(node: fx.Node, prefix: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = prefix + next(reversed(stack)) if stack else prefix.rstrip(".")
    return f"{owner or 'D'} (node {node.name})"


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if hasattr(meta, "shape") else None


# Ops that read an input's shape, not its values: their results are constants.
SHAPE_QUERIES = {"size", "dim", "numel", "ndimension", "nelement", "is_contiguous"}
# Attributes of a tensor: its metadata (constants), or views of its values with norm 1.
_METADATA = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad", "is_floating_point"}
_UNIT_VIEWS = {"T", "mT", "H", "mH", "data", "real"}
# Weight-using functional ops: bounded only as the module that holds the weight.
_FUNCTIONAL_LAYERS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                      "linear", "embedding", "bilinear", "batch_norm"}
# Ops with Lipschitz constant 1 on the input they transform (activations with slopes in [0, 1],
# reshapes, copies, projections, a change of dtype, a sign, zero padding).
UNIT = {"relu", "relu_", "relu6", "tanh", "hardtanh", "softplus", "identity", "flatten", "unflatten",
        "view", "reshape", "squeeze", "unsqueeze", "contiguous", "permute", "transpose", "t", "movedim",
        "swapaxes", "clone", "detach", "float", "double", "to", "type_as", "view_as", "reshape_as", "neg",
        "negative", "chunk", "split", "unbind", "narrow", "select"}


def _node_step(node: fx.Node, module: nn.Module, dependent: set[str], prefix: str,
               recorded: _Recorded | None) -> _Step | None:
    """The step of a node whose value depends on the input (None: it is a shape, a constant)."""
    where = _where(node, prefix)
    in_shape = _shape(node.args[0]) if node.args else None
    if node.op == "call_module":
        layer = module.get_submodule(node.target)
        if not isinstance(node.args[0], fx.Node) or len(node.all_input_nodes) != 1:
            raise NoCertifiedBound(f"no certified bound: {type(layer).__name__} with several inputs at {where}")
        if len(node.args) > 1 or node.kwargs:  # e.g. a transposed conv's output_size: another map
            raise NoCertifiedBound(f"no certified bound: {type(layer).__name__} called with extra arguments at {where}")
        return _module_step(node.name, node.args[0].name, layer, prefix + node.target, in_shape,
                            _shape(node), recorded)
    if node.op == "call_method":
        name = node.target
    else:
        name = getattr(node.target, "__name__", str(node.target))
        if getattr(node.target, "__module__", "").split(".")[0] not in ("torch", "_operator", "operator",
                                                                        "builtins"):
            name = f"{getattr(node.target, '__module__', '?')}.{name}"  # never mistaken for torch's op
    if name in SHAPE_QUERIES:
        return None
    if name == "getattr":
        attribute = node.args[1] if len(node.args) > 1 else None
        if attribute in _METADATA:
            return None
        if attribute not in _UNIT_VIEWS:
            raise NoCertifiedBound(f"no certified bound: the attribute {attribute!r} of a tensor at {where}")
        return _Step(node.name, "scale", (node.args[0].name,), (1.0,))
    binary = _binary_step(node, name, dependent, where)
    if binary is not None:
        return binary
    if not isinstance(node.args[0], fx.Node) or [n.name for n in node.all_input_nodes
                                                  if n.name in dependent] != [node.args[0].name]:
        raise NoCertifiedBound(f"no certified bound: {name} of several inputs at {where}")
    if name in _FUNCTIONAL_LAYERS:  # its weight is whatever the forward computed: no module to read it from
        if recorded is None:
            raise NoCertifiedBound(f"no certified bound: F.{name} called directly at {where}: the bound reads "
                                   "layers as modules (nn.Conv2d, nn.Linear, ...)")
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if name == "batch_norm":  # F.batch_norm(input, running_mean, running_var, weight, ...)
            weight = node.args[3] if len(node.args) > 3 else node.kwargs.get("weight")
        call = recorded.take(name, in_shape, _shape(weight), where)
        if call.upper is None:
            raise NoCertifiedBound(f"no certified bound: {name} at {where} (its recorded call has none)")
        return _Step(node.name, "scale", (node.args[0].name,), (call.upper,))
    params = _params(name, node)
    factor = _factor(name, params, in_shape, _shape(node))
    if factor is None:
        raise NoCertifiedBound(f"no certified bound: {name} at {where}")
    return _Step(node.name, "scale", (node.args[0].name,), (factor,))


def _module_step(name: str, input_name: str, layer: nn.Module, full: str, in_shape, out_shape,
                 recorded: _Recorded | None = None) -> _Step:
    """A module called on the input-dependent `input_name`: a layer, BatchNorm, or an op with a factor."""
    if recorded is not None and isinstance(layer, SUPPORTED + (nn.modules.batchnorm._BatchNorm,)):
        # The weight its recorded call received, not the stored one: a hook may divide it in place first.
        call = recorded.take(_op_of(layer), in_shape, None, full or "D")
        if call.upper is None:
            raise NoCertifiedBound(f"no certified bound: {type(layer).__name__} at {full or 'D'} (its recorded call "
                                   "has none)")
        return _Step(name, "scale", (input_name,), (call.upper,))
    if isinstance(layer, SUPPORTED):
        size = tuple(in_shape[2:]) if in_shape is not None and len(in_shape) > 2 else None
        return _Step(name, "layer", (input_name,), target=full, size=size)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _Step(name, "batchnorm", (input_name,), target=full)
    call = _module_as_call(layer)
    factor = None if call is None else _factor(call[0], call[1], in_shape, out_shape)
    if factor is None:
        raise NoCertifiedBound(f"no certified bound: {type(layer).__name__} at {full or 'D'}")
    return _Step(name, "scale", (input_name,), (factor,))


def _op_of(layer: nn.Module) -> str:
    """The functional op a layer module calls (as sngan.diagnostics.forward_calls records it)."""
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return "batch_norm"
    if isinstance(layer, (nn.Linear, nn.Embedding)):
        return "linear" if isinstance(layer, nn.Linear) else "embedding"
    kind = "conv_transpose" if isinstance(layer, nn.modules.conv._ConvTransposeNd) else "conv"
    return f"{kind}{len(layer.kernel_size)}d"


# In eval mode these modules are the identity or 1-Lipschitz.
_UNIT_MODULES = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Flatten, nn.Unflatten,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_POOL_ATTRS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad",
               "divisor_override", "return_indices")


def _module_as_call(m: nn.Module) -> tuple[str, dict] | None:
    """The functional op a module computes, with its settings; None for one without a stated bound."""
    if isinstance(m, _UNIT_MODULES):
        return "identity", {}
    if isinstance(m, nn.Sigmoid):
        return "sigmoid", {}
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", {"negative_slope": m.negative_slope}
    if isinstance(m, nn.ELU):
        return "elu", {"alpha": m.alpha}
    pools = {"avg_pool": (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), "max_pool": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
             "adaptive_avg_pool": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)}
    for name, types in pools.items():
        if isinstance(m, types):
            return name, {k: getattr(m, k) for k in _POOL_ATTRS if hasattr(m, k)}
    if isinstance(m, nn.Upsample):
        return "interpolate", {k: getattr(m, k) for k in ("size", "scale_factor", "mode", "align_corners",
                                                          "recompute_scale_factor")}
    return None


def _is_known_leaf(m: nn.Module) -> bool:
    """A torch layer or op module whose forward is torch's own: a subclass that overrides forward
    computes something else, and is traced instead."""
    torch_forward = type(m).forward.__module__.startswith("torch.nn.")
    return torch_forward and (isinstance(m, SUPPORTED) or isinstance(m, nn.modules.batchnorm._BatchNorm)
                              or _module_as_call(m) is not None)


_ADD = {"add", "iadd", "sub", "isub", "subtract"}
_MUL = {"mul", "imul", "multiply"}
_DIV = {"truediv", "itruediv", "div", "divide"}
_CAT = {"cat", "concat", "concatenate", "stack"}


def _binary_step(node: fx.Node, name: str, dependent: set[str], where: str) -> _Step | None:
    """Sums (bounds add), concatenations (root of the sum of squares), products and quotients by
    a number (|c|); None for any other op."""
    base = name.rstrip("_")
    if base in _CAT:
        parts = node.args[0] if node.args else node.kwargs.get("tensors", ())
        return _Step(node.name, "rss", tuple(p.name for p in parts if isinstance(p, fx.Node) and p.name in dependent))
    if base not in _ADD | _MUL | _DIV:
        return None
    a, b = (list(node.args) + [node.kwargs.get("other")])[:2]
    a_dep, b_dep = (isinstance(v, fx.Node) and v.name in dependent for v in (a, b))
    if base in _ADD:  # a constant term translates: it adds nothing
        terms = [(c, v.name) for c, v, dep in ((1.0, a, a_dep), (abs(float(node.kwargs.get("alpha", 1))), b, b_dep))
                 if dep]
        return _Step(node.name, "sum", tuple(n for _, n in terms), tuple(c for c, _ in terms))
    scalar = b if a_dep else a
    if isinstance(scalar, fx.Node) and "constant" in scalar.meta and not (a_dep and b_dep):
        scalar = _elementwise_factor(scalar.meta["constant"], _shape(a if a_dep else b), _shape(node), base in _MUL)
    if (a_dep and b_dep) or not isinstance(scalar, (int, float)) or (base in _DIV and (not a_dep or scalar == 0)) \
            or node.kwargs.get("rounding_mode") is not None:
        raise NoCertifiedBound(f"no certified bound: {name} by a tensor or by the input at {where}")
    factor = abs(float(scalar)) if base in _MUL else 1 / abs(float(scalar))
    return _Step(node.name, "scale", ((a if a_dep else b).name,), (factor,))


def _elementwise_factor(c: Tensor, x_shape, out_shape, multiply: bool) -> float | None:
    """The number that bounds x -> c * x (or x / c) as a product (quotient) by it, for a fixed
    tensor c broadcast over x, not x over c: a diagonal map of norm max |c| (1 / min |c|). None
    where x is broadcast (its entries copied) or c is not a real number."""
    if x_shape is None or tuple(x_shape) != tuple(out_shape or ()) or c.numel() == 0 or c.is_complex():
        return None
    magnitude = c.detach().abs().double()
    return float(magnitude.max() if multiply else magnitude.min())


# Positional parameters after the input, by op (the module forms pass them by name).
_PARAMS = {"leaky_relu": ("negative_slope",), "elu": ("alpha",), "dropout": ("p", "training"),
           "sum": ("dim",), "mean": ("dim",), "getitem": ("index",), "pad": ("pad", "mode", "value"),
           "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
           "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
           "interpolate": ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")}


def _base(name: str) -> str:
    base = re.sub(r"[123]d$", "", name.rstrip("_"))
    return "interpolate" if base == "upsample" else base


def _params(name: str, node: fx.Node) -> dict:
    values = dict(zip(_PARAMS.get(_base(name), ()), node.args[1:]))
    values.update(node.kwargs)
    return values


def _factor(name: str, params: dict, in_shape, out_shape) -> float | None:
    """The Lipschitz constant of a one-input op on inputs of `in_shape`; None if it has none stated."""
    base = _base(name)
    if base in UNIT:
        return 1.0
    fixed = {"sigmoid": 0.25,
             "leaky_relu": max(1.0, abs(float(params.get("negative_slope", 0.01)))),
             "elu": max(1.0, abs(float(params.get("alpha", 1.0)))),
             "dropout": 1.0 if params.get("training", True) is False else None,  # eval: the identity
             "pad": 1.0 if params.get("mode", "constant") == "constant" else None,  # zeros: an embedding
             "getitem": _index_norm(params.get("index"))}
    if base in fixed:
        return fixed[base]
    if in_shape is None:
        return None
    spatial = in_shape[2:]
    if base in ("sum", "mean"):
        factor = _reduction_norm(base, params.get("dim"), in_shape)
    elif base in ("expand", "expand_as", "repeat", "broadcast_to"):  # every entry copied equally often
        factor = math.sqrt(math.prod(out_shape) / math.prod(in_shape))
    elif base == "avg_pool":
        factor = _avg_pool_norm(params, spatial)
    elif base == "max_pool":
        factor = _max_pool_norm(params, spatial)
    elif base == "adaptive_avg_pool":
        factor = _separable_norm(lambda eye, i: F.adaptive_avg_pool1d(eye, out_shape[2 + i]), spatial)
    elif base == "interpolate":
        factor = _interpolate_norm(params, spatial, out_shape[2:])
    else:
        return None
    return None if factor is None else factor * (1 + ROUNDING)


def _index_norm(index) -> float | None:
    """Basic indexing (ints, slices) is a projection, norm <= 1; an index tensor or list may repeat entries."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if isinstance(item, (list, Tensor)) or (isinstance(item, fx.Node) and _shape(item) is not None):
            return None
    return 1.0


def _reduction_norm(base: str, dim, in_shape: tuple[int, ...]) -> float:
    """A sum over k entries has norm sqrt(k) (the all-ones row), a mean 1/sqrt(k)."""
    rank = len(in_shape)
    dims = range(rank) if dim is None or dim == () or dim == [] else ([dim] if isinstance(dim, int) else dim)
    count = math.prod(in_shape[d % rank] for d in {int(d) % rank for d in dims})
    return math.sqrt(count) if base == "sum" else 1 / math.sqrt(count)


def _per_dim(value, d: int) -> list:
    if value is None or isinstance(value, (int, float)):
        return [value] * d
    return list(value) if len(value) == d else [value[0]] * d


def _separable_norm(one_d: Callable[[Tensor, int], Tensor], spatial: Sequence[int]) -> float:
    """The norm of a per-channel op that acts on each spatial dimension separately (its matrix is
    the Kronecker product of 1-d matrices): the product of the 1-d norms, each from a dense SVD of
    the 1-d op applied to every unit vector."""
    norm = 1.0
    for i, n in enumerate(spatial):
        eye = torch.eye(int(n), dtype=torch.float64).unsqueeze(1)  # n unit inputs, one channel
        norm *= float(torch.linalg.matrix_norm(one_d(eye, i).squeeze(1), ord=2))
    return norm


def _avg_pool_norm(p: dict, spatial: Sequence[int]) -> float:
    """Exact: a window's divisor is the product of per-dimension counts (padding, ceil_mode and
    count_include_pad included), so the pooling is separable; divisor_override divides window sums."""
    d, override = len(spatial), p.get("divisor_override")
    k = _per_dim(p["kernel_size"], d)
    s = _per_dim(p.get("stride") or p["kernel_size"], d)
    pad = _per_dim(p.get("padding") or 0, d)
    ceil, include = bool(p.get("ceil_mode")), p.get("count_include_pad", True) is not False

    def one_d(eye: Tensor, i: int) -> Tensor:
        m = F.avg_pool1d(eye, k[i], s[i], pad[i], ceil, include)
        return (m != 0).to(m.dtype) if override else m
    return _separable_norm(one_d, spatial) / (override or 1)


def _max_pool_norm(p: dict, spatial: Sequence[int]) -> float | None:
    """Each output moves at most as far as its window: ||dy||^2 <= sum_i copies_i dx_i^2, so the
    bound is the root of the largest number of windows holding one input entry."""
    d = len(spatial)
    if p.get("return_indices") or any(x != 1 for x in _per_dim(p.get("dilation") or 1, d)):
        return None
    k = _per_dim(p["kernel_size"], d)
    s = _per_dim(p.get("stride") or p["kernel_size"], d)
    pad = _per_dim(p.get("padding") or 0, d)
    copies = 1
    for i, n in enumerate(spatial):
        eye = torch.eye(int(n), dtype=torch.float64).unsqueeze(1)
        windows = F.avg_pool1d(eye, k[i], s[i], pad[i], bool(p.get("ceil_mode")), False).squeeze(1) != 0
        copies *= int(windows.sum(dim=1).max())
    return math.sqrt(copies)


_ONE_D_MODES = {"nearest": "nearest", "nearest-exact": "nearest-exact", "linear": "linear", "bilinear": "linear",
                "trilinear": "linear", "area": "area"}


def _interpolate_norm(p: dict, spatial: Sequence[int], out_spatial: Sequence[int]) -> float | None:
    """These modes resample each dimension on its own: the product of the 1-d resamplings' norms
    (nearest 2x: each entry copied twice per dimension, sqrt(2) each)."""
    mode = _ONE_D_MODES.get(p.get("mode", "nearest"))
    if mode is None or p.get("antialias"):
        return None
    d = len(spatial)
    sizes, scales = _per_dim(p.get("size"), d), _per_dim(p.get("scale_factor"), d)
    extra = {"align_corners": p.get("align_corners")} if mode == "linear" else {}

    def one_d(eye: Tensor, i: int) -> Tensor:
        if sizes[i] is not None:
            out = F.interpolate(eye, size=sizes[i], mode=mode, **extra)
        else:
            out = F.interpolate(eye, scale_factor=scales[i], mode=mode,
                                recompute_scale_factor=p.get("recompute_scale_factor"), **extra)
        if out.shape[-1] != out_spatial[i]:
            raise NoCertifiedBound(f"no certified bound: interpolate to {tuple(out_spatial)} not separable")
        return out
    return _separable_norm(one_d, spatial)


def input_shape_from_layers(D: nn.Module, input_sizes: dict) -> tuple[int, ...] | None:
    """The shape of one input of D, read off the layer that takes D's input unchanged (its
    channels, and its spatial size in `input_sizes`, by qualified name); None if no layer does."""
    traced = _traced(D)
    if isinstance(traced, Exception):
        first = next(iter(D.children()), None) if isinstance(D, nn.Sequential) else None
        users = [("0", first)] if first is not None else []
    else:
        x = next((n for n in traced.graph.nodes if n.op == "placeholder"), None)
        users = [(u.target, D.get_submodule(u.target)) for u in (x.users if x is not None else ())
                 if u.op == "call_module" and u.args and u.args[0] is x]
    for name, layer in users:
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        if hasattr(layer, "in_channels") and input_sizes.get(name):
            return (layer.in_channels, *input_sizes[name])
    return None


def gradient_lower_bound(D: nn.Module, input_shape: Sequence[int], *, starts: int = 4, steps: int = 8,
                         seed: int = 0, rounding: float = ROUNDING) -> float:
    """A certified lower bound on D's Lipschitz constant: the largest norm of a gradient of D's
    output (for a vector output, of its mean direction, a unit vector's contraction with the
    Jacobian) at the points visited by `steps` steps of ascent on the difference quotient
    ||D(x) - D(y)|| / ||x - y|| from `starts` random pairs (a private generator: no global RNG
    draw), lowered by the relative `rounding`. D's samples must be independent (eval mode)."""
    net = _float64_copy(D)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    shape = (starts, *(int(s) for s in input_shape))
    radius = 0.05 * math.sqrt(math.prod(shape[1:]))  # a small move next to inputs of norm ~sqrt(n)
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    y = x + radius * _unit_rows(torch.randn(shape, generator=gen, dtype=torch.float64))
    z = torch.cat([x, y]).to(device)
    best = 0.0
    for step in range(steps + 1):
        z = z.detach().requires_grad_(True)
        out = net(z).reshape(2 * starts, -1)
        (grad,) = torch.autograd.grad(out.sum() / math.sqrt(out.shape[1]), z, retain_graph=True)
        best = max(best, float(grad.flatten(1).norm(dim=1).max()))
        if step == steps:
            break
        ratio = (out[:starts] - out[starts:]).norm(dim=1) / (z[:starts] - z[starts:]).flatten(1).norm(dim=1)
        (ascent,) = torch.autograd.grad(ratio.sum(), z)
        z = z.detach() + radius * _unit_rows(ascent)
    return best * (1 - rounding)


def computed_weights_rounding(D: nn.Module, weights: int) -> float:
    """The rounding allowance of a lower bound on a D whose forward computes `weights` of its
    weights (a hand-written w / sigma): the float64 copy computes them again in float64, and they
    differ from D's own by D's rounding, taken as 8 units in the last place of D's precision each."""
    eps = max((torch.finfo(p.dtype).eps for p in D.parameters() if p.is_floating_point()), default=0.0)
    return max(ROUNDING, 8 * eps * weights) if eps > torch.finfo(torch.float64).eps else ROUNDING


def _unit_rows(t: Tensor) -> Tensor:
    norms = t.flatten(1).norm(dim=1).clamp_min(1e-300)
    return t / norms.view(-1, *([1] * (t.dim() - 1)))


def _float64_copy(D: nn.Module) -> nn.Module:
    """A float64 eval-mode copy of D whose parametrized weights are fixed to the weights D's
    forward uses now (read in eval mode: no power iteration advances, in D or in the copy). A
    forward that advances its own state anyway (a wrapper's power step, even in eval mode) starts
    every time from the state D has now: the copy is one function."""
    net = copy.deepcopy(D).eval()
    for layer in [m for m in net.modules() if parametrize.is_parametrized(m)]:
        for name, chain in layer.parametrizations.items():
            with torch.no_grad():
                fixed = _Fixed(getattr(layer, name).detach().clone())
            for i in range(len(chain)):  # the class (shared with D's layer) stays as it is
                chain[i] = fixed
    net = net.double().requires_grad_(False)
    for m in net.modules():  # a tensor kept as a plain attribute (a hand-rolled hook's u) goes too
        for k, v in list(vars(m).items()):
            if torch.is_tensor(v) and v.is_floating_point():
                object.__setattr__(m, k, v.detach().double())
    state = [(t, t.detach().clone()) for t in [*net.parameters(), *net.buffers()]]

    def restore(module, args) -> None:
        with torch.no_grad():
            for t, value in state:
                t.copy_(value)

    net.register_forward_pre_hook(restore)
    return net


class _Fixed(nn.Module):
    """A parametrization that returns a stored tensor, whatever the original."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, original: Tensor) -> Tensor:
        return self.value
