"""Audit any discriminator: what does its spectral normalization really bound?

    python -m sngan.audit pkg.models:Discriminator --input-shape 3,32,32 [--state-dict FILE] [--json]
    python -m sngan.audit pkg.models:Discriminator --input-shape 3,32,32 --state-dict ckpt.pt [--state-key net_D]
    python -m sngan.audit pkg.models:ProjectionD --input-shape 3,32,32 --label 3   # D(x, y)
    python -m sngan.audit model.pt --input-shape 3,32,32       # torch.save(model) of a whole module
    python -m sngan.audit outputs/synthetic-reshaped/<run>      # this project's run or checkpoint

One eval-mode forward of zeros is watched at the functional level (sngan.diagnostics.forward_calls):
every conv, transposed conv, linear, embedding and batch-norm call it makes is recorded with the
weight it really received and its input size, named by the module that made it, whether the
weight came from a plain parameter, a parametrization, a legacy hook, or a division written
inside some forward. Each call then gets its reshaped-kernel sigma, a certified interval on its
true operator norm (sngan.sigma.operator_sigma_bounds on the call's own weight and geometry),
what is attached to its layer, and what the forward measurably did: effective weight = stored /
reshaped sigma (reshaped-kernel SN), / operator norm, / something else, = stored (none), or
unknown. Eval-mode BatchNorm is a per-channel gain; a class embedding's norm on one-hot inputs
is its largest row norm. The verdict: the product of the upper bounds (a certified bound on the
Lipschitz constant when the network is a plain chain of these layers with 1-Lipschitz
activations, no skip connections); the whole D's certified interval through its graph, every
layer bounded by its recorded call (for a projection D, in the image for the label given); and a
warning for every normalized layer whose operator norm is far above 1. No hook is added to the model, and its parameters, buffers and train/eval flags
are put back after the forward: the model is audited as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import json
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

import sngan.sigma
from sngan.diagnostics import normalization_labels as labels
from sngan.diagnostics.forward_calls import Call, Forward, record_forward, stored_weight
from sngan.linalg.bounds import ROUNDING
from sngan.linalg.calls import call_input_size, layer_of_call, self_padding
from sngan.run import checkpoint
from sngan.run.cli import ArgumentParser, refuse
from sngan.run.errors import UserError, fits_in_memory, unreadable
from sngan.sigma import matrix_sigma, operator_sigma_bounds

FAR_ABOVE = 1.2  # an operator norm this far above the 1 that a normalized layer promises is flagged
NORMALIZATIONS = ("torch spectral_norm", "sngan reshaped", "sngan operator")  # attached, and divide in eval
TORCHSCRIPT = ("is a TorchScript module: its forward runs compiled, where the audit cannot see the calls "
               "it makes; audit the Python module it was scripted from (MODULE:NAME with --state-dict)")


def load_model(target: str, state_dict: str | None,
               state_key: str | None = None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """(the module, the input shape it was trained on when known) from an import path
    `pkg.module:Factory`, a file holding a whole pickled module, or this project's run/checkpoint."""
    if ":" in target and not Path(target).exists():
        model = _from_factory(target)
        if state_dict:
            _load_state_dict(model, state_dict, target, state_key)
        return model, None
    path = Path(target)
    if not path.exists():
        raise UserError(f"{target} is neither an existing file or folder nor an import path MODULE:NAME; check the "
                        "path, or give the class as MODULE:NAME (importable from here) with --state-dict FILE")
    if state_dict:
        raise UserError(f"--state-dict applies to MODULE:NAME only: {target} holds its own weights (a whole "
                        f"module or a run), so {state_dict} would be ignored; drop --state-dict, or give the "
                        "module's class as MODULE:NAME")
    if path.is_dir():
        path = checkpoint.locate(path)
    if _is_torchscript(path):
        raise UserError(f"{path} {TORCHSCRIPT}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as e:  # permissions, an I/O error: not a damaged file
        raise unreadable(path, e) from None
    except Exception as e:  # garbage, a truncated file
        raise UserError(f"{path} is not a readable torch file ({type(e).__name__}): save the whole "
                        "module with torch.save(model, path), or give MODULE:NAME") from None
    if isinstance(loaded, torch.jit.ScriptModule):
        raise UserError(f"{path} {TORCHSCRIPT}")
    if isinstance(loaded, dict) and loaded.get("format") == checkpoint.FORMAT:  # this project's checkpoint
        from sngan.models import restore_models

        cfg, _, D, _ = restore_models(checkpoint.check_state(loaded, path), torch.device("cpu"), source=path)
        return D, (3, cfg.dataset.resolution, cfg.dataset.resolution)
    if not isinstance(loaded, nn.Module):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a whole module: give MODULE:NAME of its "
                        "class with --state-dict")
    return loaded, None


def _from_factory(target: str) -> nn.Module:
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import {target}: {e}; give MODULE:NAME of a module class or factory "
                        "importable from here (PYTHONPATH)") from None
    try:
        inspect.signature(factory).bind()
    except TypeError as e:  # a class whose constructor wants its settings
        raise UserError(f"{target}() cannot be called without arguments ({e}); give MODULE:NAME of a function "
                        "that builds the discriminator with its settings and returns it") from None
    except ValueError:  # no signature to read (a builtin): let the call itself say
        pass
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserError(f"{target}() returned a {type(model).__name__}, not a torch.nn.Module; give MODULE:NAME of "
                        "the discriminator's class, or of a function that returns the discriminator")
    return model


def _is_state(value) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, torch.Tensor) for v in value.values())


def _fits(state: Mapping, own: Mapping) -> bool:
    return state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own)


def _state_in(loaded, path: str, key: str | None, own: Mapping) -> Mapping:
    """The state dict in what `path` holds: itself, the one under `key`, or, in a training checkpoint
    ({"net_D": ..., "optim_D": ..., "step": ...}), the one state dict there that fits the model."""
    nested = [k for k, v in loaded.items() if _is_state(v)] if isinstance(loaded, Mapping) else []
    if key is not None:
        if not isinstance(loaded, Mapping) or key not in loaded or not _is_state(loaded[key]):
            found = f"its state dicts are under {', '.join(map(repr, nested))}" if nested else "it holds none under a key"
            raise UserError(f"--state-key {key}: {path} holds no state dict under {key!r}; {found}")
        return loaded[key]
    if _is_state(loaded):
        return loaded
    fitting = [k for k in nested if _fits(loaded[k], own)]
    if len(fitting) == 1:
        print(f"--state-dict {path}: the state dict under {fitting[0]!r} fits the model: auditing it", file=sys.stderr)
        return loaded[fitting[0]]
    if nested:
        which = "none fits the model" if not fitting else f"{', '.join(map(repr, fitting))} all fit the model"
        raise UserError(f"--state-dict {path} is a checkpoint with state dicts under {', '.join(map(repr, nested))} "
                        f"({which}): name the discriminator's with --state-key KEY")
    what = (f"a dict whose values are not all tensors (keys: {', '.join(map(str, list(loaded)[:4]))})"
            if isinstance(loaded, Mapping) else f"a {type(loaded).__name__}")
    raise UserError(f"--state-dict {path} holds {what}, not a state dict: save model.state_dict()")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose records include constants.pkl (as torch.load tells them)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.split("/")[-1] == "constants.pkl" for name in z.namelist())


def _load_state_dict(model: nn.Module, path: str, target: str, key: str | None = None) -> None:
    """Load `path` (a state dict, or the one under `key` of a training checkpoint) into `model`,
    strictly, or say in one line why not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise UserError(f"cannot read --state-dict {path}: {e.strerror or e}") from None
    except Exception as e:  # text, garbage, or pickled objects (a whole module) that weights_only refuses
        raise UserError(f"--state-dict {path} is not a state dict ({type(e).__name__} reading it with "
                        "weights_only=True): save model.state_dict() with torch.save; a whole pickled module "
                        "is audited by giving its file as the model") from None
    own = model.state_dict()
    state = _state_in(state, path, key, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} (saved {'x'.join(map(str, state[k].shape))}, model {'x'.join(map(str, own[k].shape))})"
                for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{len(found)} {what} ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
                for found, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
                if found]
    if problems:
        raise UserError(f"--state-dict {path} does not fit {target}: keys {'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"cannot load --state-dict {path} into {target}: "
                        + " ".join(str(e).split())) from None


def forward_inputs(model: nn.Module, input_shape: tuple[int, ...], label: int | None) -> tuple:
    """(zeros of one sample,) or (zeros, LongTensor([label])) for a D that takes a class label."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin forward: let the call itself tell
        signature = None
    if signature is not None:
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        name = f"{type(model).__name__}.forward{signature}"
        if label is not None and len(positional) < 2 and not varargs:
            raise UserError(f"--label {label} given, but {name} takes no class label (no second argument); "
                            "drop --label")
        if label is None and len(positional) >= 2 and positional[1].default is inspect.Parameter.empty:
            raise UserError(f"{name} needs a second argument: give --label N (a class index) to audit "
                            "a conditional discriminator")
    x = torch.zeros(1, *input_shape)
    return (x,) if label is None else (x, torch.tensor([label]))


def audit(model: nn.Module, input_shape: tuple[int, ...], label: int | None = None) -> dict:
    """Per weight-using call of one forward: what it used and what that bounds; and the verdict."""
    inputs = forward_inputs(model, input_shape, label)
    try:
        forward = record_forward(model, inputs)
    except Exception as e:
        with_label = "" if label is None else f" with label {label}"
        raise UserError(f"a forward of shape (1, {', '.join(map(str, input_shape))}){with_label} failed: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; check --input-shape"
                        + (" and --label" if label is not None else "")) from None
    on_path = [c for c in forward.calls if c.on_input_path]
    if not on_path:
        raise UserError(f"the forward of {type(model).__name__} made no conv, linear, embedding or batch-norm "
                        "call on its input: nothing to audit")
    rows, seen = [], {}
    for call in on_path:
        rows.append(call_row(forward, call, seen))
    product = 1.0
    for r in rows:
        product = None if product is None or r["operator_upper"] is None else product * r["operator_upper"]
    internal = sorted({_name(forward, c) + f" ({c.op})" for c in forward.calls if not c.on_input_path})
    return {"input_shape": list(input_shape), "label": label, "layers": rows, "lipschitz_bound_upper": product,
            "internal_calls": internal, "whole_network": whole_network_bounds(model, input_shape, label, [
                sngan.sigma.RecordedCall(c.op, c.input_shape, tuple(c.weight.shape), r["operator_upper"])
                for c, r in zip(on_path, rows)]),
            "warnings": [w for r in rows for w in row_warnings(r)]}


def _name(forward: Forward, call: Call) -> str:
    if call.owner is None:
        return "(no module)"
    return forward.names.get(id(call.owner)) or type(call.owner).__name__


def call_row(forward: Forward, call: Call, seen: dict) -> dict:
    """One table row: the call's layer name (`name[2]` for a module's second call), its type,
    input, attached normalization, measured behaviour, sigmas."""
    name = _name(forward, call)
    seen[name] = seen.get(name, 0) + 1
    kind = type(call.owner).__name__ if call.owner is not None else call.op
    if call.owner is not None and parametrize.is_parametrized(call.owner):
        kind = type(call.owner).__bases__[0].__name__  # not Parametrized*
    row = {"layer": name if seen[name] == 1 else f"{name}[{seen[name]}]", "type": kind, "call": call.op}
    if call.op == "batch_norm":
        row.update(_batch_norm_numbers(call))
        row.update(normalization=attached_of(forward, call, False), behaviour=labels.NONE, stored=None,
                   divisor=None)
        return row
    if call.op == "embedding":
        row.update(_embedding_numbers(call))
    else:
        padder = self_padding(call.owner, call.op, call.options)
        size = call_input_size(call.op, call.input_shape, call.weight, padder)
        layer = layer_of_call(call.op, call.weight, call.options, padder)
        lower, upper = operator_sigma_bounds(layer, size)
        row.update(input=list(size) if size else None, operator_lower=lower, operator_upper=upper,
                   sigma_matrix=matrix_sigma(call.weight, 1 if "transpose" in call.op else 0))
    stored = stored_weight(forward, call)
    category, measured, s = labels.behaviour(call.weight, stored, row["sigma_matrix"],
                                             (row["operator_lower"], row["operator_upper"]))
    row.update(normalization=attached_of(forward, call, s is not None), behaviour=category, measured=measured,
               stored=stored[0] if stored else None, divisor=s)
    return row


def attached_of(forward: Forward, call: Call, divided: bool) -> str:
    return labels.attached(call.owner, call.stack, forward.names, divided)


def _embedding_numbers(call: Call) -> dict:
    """A lookup is the map one_hot(index) -> one_hot @ W: on one-hot inputs its norm is W's largest
    row norm; on the labels looked up, their rows' norms."""
    rows = call.weight.detach().double().norm(dim=1)
    largest = float(rows.max())
    return {"input": None, "indices": call.options["indices"], "sigma_matrix": matrix_sigma(call.weight),
            "operator_lower": largest * (1 - ROUNDING), "operator_upper": largest * (1 + ROUNDING),
            "label_norm": max(float(rows[i]) for i in call.options["indices"])}


def _batch_norm_numbers(call: Call) -> dict:
    """Eval-mode BatchNorm is x -> gain * x + shift per channel, gain = gamma / sqrt(running_var + eps):
    its Lipschitz constant is max |gain|. With batch statistics it is no fixed map (no bound)."""
    var = call.options.get("running_var")
    if call.options.get("training") or var is None:
        return {"input": list(call.input_shape[2:]) or None, "sigma_matrix": None, "operator_lower": None,
                "operator_upper": None, "measured": "batch statistics: no fixed map, no bound"}
    gamma = call.weight if call.weight is not None else torch.ones_like(var)
    gain = float((gamma.double().abs() / (var.double() + call.options.get("eps", 1e-5)).sqrt()).max())
    return {"input": list(call.input_shape[2:]) or None, "sigma_matrix": gain, "operator_lower": gain * (1 - ROUNDING),
            "operator_upper": gain * (1 + ROUNDING), "measured": "eval BatchNorm: per-channel gain"}


def row_warnings(row: dict) -> list[str]:
    """Warnings follow what the forward measurably did, not what a class is called."""
    size = "x".join(map(str, row["input"] or ())) or "vector"
    if row["operator_upper"] is None:
        return [f"{row['layer']}: {row['measured']}: the product is no bound"]
    if row["behaviour"] == labels.RESHAPED and row["operator_lower"] > FAR_ABOVE:
        return [f"{row['layer']}: normalized by its reshaped kernel ({row['measured']}), yet its operator norm "
                f"on {size} inputs is at least {row['operator_lower']:.2f}"]
    if row["behaviour"] == labels.OTHER and row["operator_lower"] > FAR_ABOVE:
        return [f"{row['layer']}: divided during the forward ({row['measured']}), yet its operator norm on "
                f"{size} inputs is at least {row['operator_lower']:.2f}"]
    if row["normalization"] == labels.NAIVE_RECIPE and row["operator_lower"] > FAR_ABOVE:
        return [f"{row['layer']}: carries the naive recipe (an in-place division in training), yet its operator "
                f"norm on {size} inputs is at least {row['operator_lower']:.2f}"]
    if row["normalization"].startswith(NORMALIZATIONS) and row["behaviour"] in (labels.NONE, labels.UNKNOWN):
        return [f"{row['layer']}: carries {row['normalization']}, yet its forward used a weight that is "
                f"{row['measured']}"]
    return []


class _Labelled(nn.Module):
    """D(x, y) with its class label fixed: a function of the image alone, as the bound needs."""

    def __init__(self, D: nn.Module, label: int):
        super().__init__()
        self.D = D
        self.register_buffer("label", torch.tensor([label]))

    def forward(self, x):
        return self.D(x, self.label)


def whole_network_bounds(model: nn.Module, input_shape: tuple[int, ...], label: int | None,
                         calls: list | None = None) -> dict | None:
    """The certified interval on the whole D's Lipschitz constant, through its graph, from
    sngan.sigma.network_lipschitz_bounds(D, input_shape) when that exists (None otherwise); with
    `calls` (the recorded forward's), every layer is bounded on the weight its call received."""
    bounds = getattr(sngan.sigma, "network_lipschitz_bounds", None)
    if bounds is None:
        return None
    # A weight a wrapper computed and set as a plain attribute (christiancosgrove's SpectralNorm)
    # still holds the recorded forward's graph, which deepcopy refuses: copy its value instead.
    computed = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
                if torch.is_tensor(v) and not v.is_leaf}
    try:
        copied = copy.deepcopy(model, computed)  # whatever that function registers or runs, the model stays as it is
    except Exception as e:
        return {"error": f"the model cannot be copied for it ({type(e).__name__})"}
    if label is not None:  # a function of the image: the label's embedding row is a fixed factor
        copied = _Labelled(copied, label)
        calls = None if calls is None else [c for c in calls if c.op != "embedding"]
    try:
        lower, upper = bounds(copied, input_shape, calls=calls)
    except Exception as e:  # another module's limits must not end the audit: say what they were
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return {"lower": float(lower), "upper": float(upper)}


def report_text(result: dict) -> str:
    lines = ["| layer | type | input | attached | measured (effective weight) | sigma/matrix | operator norm (certified) |",
             "| --- | --- | --- | --- | --- | ---: | --- |"]
    for r in result["layers"]:
        shown = "x".join(map(str, r["input"])) if r["input"] else "vector"
        if r["call"] == "embedding":
            shown = "index " + ",".join(map(str, r["indices"]))
        number = lambda v: "-" if v is None else f"{v:.4f}"
        interval = "none" if r["operator_upper"] is None else f"[{r['operator_lower']:.4f}, {r['operator_upper']:.4f}]"
        if "label_norm" in r:
            interval += f" (row of the label: {r['label_norm']:.4f})"
        lines.append(f"| {r['layer']} | {r['type']} | {shown} | {r['normalization']} | {r['measured']} | "
                     f"{number(r['sigma_matrix'])} | {interval} |")
    product = result["lipschitz_bound_upper"]
    lines.append(f"\nProduct of the upper bounds: {'none' if product is None else f'{product:.4g}'} (a certified "
                 "bound on the Lipschitz constant if the network is a plain chain of these layers with "
                 "1-Lipschitz activations; not for skip connections or a projection head)")
    lines += [whole_network_line(result["whole_network"], result["label"])]
    if result["internal_calls"]:
        lines.append("Left out, as calls on the model's own state rather than on its input (e.g. a sigma "
                     "estimate): " + ", ".join(result["internal_calls"]))
    lines += [f"WARNING: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def whole_network_line(whole: dict | None, label: int | None = None) -> str:
    if whole is None:
        return "whole D: no certified bound through its graph yet (sngan.sigma.network_lipschitz_bounds is absent)"
    if "error" in whole:
        return f"whole D: no certified Lipschitz interval ({whole['error']})"
    given = "" if label is None else f" in the image, for label {label}"
    return f"whole D: certified Lipschitz interval{given} [{whole['lower']:.4g}, {whole['upper']:.4g}]"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 3,32,32, got {text!r}")
    return shape


def _label(text: str) -> int:
    try:
        label = int(text)
    except ValueError:
        label = -1
    if label < 0:
        raise argparse.ArgumentTypeError(f"expected a class index (an integer >= 0), got {text!r}")
    return label


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m sngan.audit", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="MODULE:NAME (a module class or factory), a torch.save'd module, or an sngan "
                                 "run folder / checkpoint")
    p.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 3,32,32 (sngan runs: their own)")
    p.add_argument("--state-dict", help="with MODULE:NAME: weights to load into it (a state dict, or a training "
                                        "checkpoint holding one)")
    p.add_argument("--state-key", help="with --state-dict: the key of the D's state dict in a checkpoint "
                                       "(e.g. net_D), when more than one fits")
    p.add_argument("--label", type=_label, help="a class index, passed as D(x, LongTensor([N])): "
                                                "audits a conditional (projection) discriminator")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = p.parse_args(argv)
    # What the model's own code prints (BigGAN's D prints its parameter count) goes to stderr:
    # standard output is the report alone, one JSON object with --json.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if a.state_key and not a.state_dict:
                raise UserError("--state-key goes with --state-dict FILE (the checkpoint it picks from); add --state-dict "
                                "FILE, or drop --state-key")
            model, known_shape = load_model(a.model, a.state_dict, a.state_key)
            shape = a.input_shape or known_shape
            if shape is None:
                raise UserError("--input-shape is needed (one sample's shape, e.g. 3,32,32): a module class or a whole "
                                "saved module does not record it; add --input-shape C,H,W")
            with fits_in_memory(f"inputs of shape {','.join(map(str, shape))}",
                                "give the shape one sample has in training (--input-shape C,H,W)"):
                result = audit(model, shape, a.label)
    except UserError as e:
        refuse(e)
    print(json.dumps(result) if a.json else report_text(result))


if __name__ == "__main__":
    main()
