"""Audit any discriminator: what does its spectral normalization really bound?

    python -m sngan.audit pkg.models:Discriminator --input-shape 3,32,32 [--state-dict FILE] [--json]
    python -m sngan.audit model.pt --input-shape 3,32,32       # torch.save(model) of a whole module
    python -m sngan.audit outputs/synthetic-reshaped/<run>      # this project's run or checkpoint

One eval-mode forward of zeros finds every Conv/ConvTranspose/Linear/Embedding layer's real input
size; each layer then gets its reshaped-kernel sigma, a certified interval on its true operator
norm on that input (sngan.sigma.operator_sigma_bounds), and the normalization it carries: torch's
parametrization (`spectral_norm`), the legacy hook (`torch.nn.utils.spectral_norm`), one of this
project's variants, none, or unknown (some other forward pre-hook or parametrization). The
verdict: the product of the upper bounds (a certified bound on the Lipschitz constant when the
network is a plain chain of these layers with 1-Lipschitz activations, no skip connections), and
a warning for every layer normalized by its reshaped kernel whose operator norm is far above 1.
Nothing is trained, no power iteration advances: the model is audited as it is.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from sngan.run import checkpoint
from sngan.run.cli import ArgumentParser
from sngan.run.errors import UserError
from sngan.linalg.operators import SUPPORTED
from sngan.sigma import effective_weight, matrix_sigma, operator_sigma_bounds
from sngan.spectral import reshape_dim

FAR_ABOVE = 1.2  # an operator norm this far above the 1 that reshaped-kernel SN promises is flagged


def load_model(target: str, state_dict: str | None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """(the module, the input shape it was trained on when known) from an import path
    `pkg.module:Factory`, a file holding a whole pickled module, or this project's run/checkpoint."""
    if ":" in target and not Path(target).exists():
        module_name, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import {target}: {e}; give MODULE:NAME of a module class or factory "
                            "importable from here (PYTHONPATH)") from None
        model = factory()
        if not isinstance(model, nn.Module):
            raise UserError(f"{target}() returned a {type(model).__name__}, not a torch.nn.Module")
        if state_dict:
            try:
                model.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError, ValueError) as e:
                raise UserError(f"cannot load --state-dict {state_dict} into {target}: "
                                f"{str(e).splitlines()[0]}") from None
        return model, None
    path = Path(target)
    if not path.exists():
        raise UserError(f"{target} is neither an existing file or folder nor an import path MODULE:NAME")
    if path.is_dir():
        path = checkpoint.locate(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a TorchScript archive, garbage
        try:
            torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise UserError(f"{path} is not a readable torch file ({type(e).__name__}): save the whole "
                            "module with torch.save(model, path), or give MODULE:NAME") from None
        raise UserError(f"{path} is a TorchScript module, whose layers take no forward hooks: audit the "
                        "Python module it was scripted from (MODULE:NAME with --state-dict)") from None
    if isinstance(loaded, dict) and loaded.get("format") == checkpoint.FORMAT:  # this project's checkpoint
        from sngan.models import restore_models

        cfg, _, D, _ = restore_models(checkpoint.check_state(loaded, path), torch.device("cpu"), source=path)
        return D, (3, cfg.dataset.resolution, cfg.dataset.resolution)
    if not isinstance(loaded, nn.Module):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a whole module: give MODULE:NAME of its "
                        "class with --state-dict")
    return loaded, None


def normalization_of(layer: nn.Module) -> str:
    """Which normalization the layer carries, as far as can be told from outside."""
    if parametrize.is_parametrized(layer, "weight"):
        kinds = {type(p).__name__ for p in layer.parametrizations.weight}
        if "_SpectralNorm" in kinds:
            return "torch spectral_norm (parametrization)"
        if "_ReshapedSpectralNorm" in kinds:
            return "sngan reshaped"
        if "_OperatorSpectralNorm" in kinds:
            return "sngan operator"
        return f"unknown parametrization ({', '.join(sorted(kinds))})"
    hooks = [type(h).__name__ for h in layer._forward_pre_hooks.values()]
    if "SpectralNorm" in hooks:
        return "torch spectral_norm (legacy hook)"
    if "_NaiveSpectralNorm" in hooks:
        return "sngan naive"
    if hooks:
        return f"unknown (forward pre-hook {', '.join(hooks)})"
    return "none"


def audit(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Per layer: input size, reshaped sigma, certified operator interval, normalization; and the verdict."""
    sizes: dict[str, tuple[int, ...] | None] = {}
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SUPPORTED)]
    if not layers:
        raise UserError("the model has no Conv, ConvTranspose, Linear or Embedding layer to audit")

    def recorder(name: str):
        def record(module, args) -> None:  # a pre-hook that returned a value would replace the input
            sizes.setdefault(name, tuple(args[0].shape[2:]) if args[0].dim() > 2 else None)
        return record

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in layers]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except Exception as e:
        raise UserError(f"a forward of shape (1, {', '.join(map(str, input_shape))}) failed: "
                        f"{type(e).__name__}: {str(e).splitlines()[0]}; check --input-shape") from None
    finally:
        for h in handles:
            h.remove()
    rows, product, warnings = [], 1.0, []
    for name, layer in layers:
        if name not in sizes:
            continue  # not on the forward path
        lower, upper = operator_sigma_bounds(layer, sizes[name])
        norm = normalization_of(layer)
        kind = type(layer).__bases__[0] if parametrize.is_parametrized(layer) else type(layer)  # not Parametrized*
        row = {"layer": name, "type": kind.__name__, "input": list(sizes[name]) if sizes[name] else None,
               "normalization": norm, "sigma_matrix": matrix_sigma(effective_weight(layer), reshape_dim(layer)),
               "operator_lower": lower, "operator_upper": upper}
        rows.append(row)
        product *= upper
        reshaped_sn = norm.startswith(("torch spectral_norm", "sngan reshaped", "sngan naive"))
        if reshaped_sn and lower > FAR_ABOVE:
            warnings.append(f"{name}: normalized by its reshaped kernel ({norm}), yet its operator norm on "
                            f"{'x'.join(map(str, sizes[name] or ()))} inputs is at least {lower:.2f}")
    return {"input_shape": list(input_shape), "layers": rows, "lipschitz_bound_upper": product,
            "warnings": warnings}


def report_text(result: dict) -> str:
    lines = ["| layer | type | input | normalization | sigma/matrix | operator norm (certified) |",
             "| --- | --- | --- | --- | ---: | --- |"]
    for r in result["layers"]:
        shown = "x".join(map(str, r["input"])) if r["input"] else "vector"
        lines.append(f"| {r['layer']} | {r['type']} | {shown} | {r['normalization']} | {r['sigma_matrix']:.4f} | "
                     f"[{r['operator_lower']:.4f}, {r['operator_upper']:.4f}] |")
    lines.append(f"\nProduct of the upper bounds: {result['lipschitz_bound_upper']:.4g} (a certified bound on the "
                 "Lipschitz constant if the network is a plain chain of these layers with 1-Lipschitz "
                 "activations; not for skip connections)")
    lines += [f"WARNING: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 3,32,32, got {text!r}")
    return shape


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m sngan.audit", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="MODULE:NAME (a module class or factory), a torch.save'd module, or an sngan "
                                 "run folder / checkpoint")
    p.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 3,32,32 (sngan runs: their own)")
    p.add_argument("--state-dict", help="with MODULE:NAME: weights to load into it")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = p.parse_args(argv)
    try:
        model, known_shape = load_model(a.model, a.state_dict)
        shape = a.input_shape or known_shape
        if shape is None:
            raise UserError("--input-shape is needed (one sample's shape, e.g. 3,32,32)")
        result = audit(model, shape)
    except UserError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result) if a.json else report_text(result))


if __name__ == "__main__":
    main()
