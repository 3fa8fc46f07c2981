"""Per-layer matrix vs operator spectral norm of an SNGAN discriminator, as a markdown table.

    python scripts/sigma_table.py                        # SNGAN CNN D, paper widths, 32x32, reshaped SN
    python scripts/sigma_table.py --model resnet --d-ch 128 --variant builtin
    python scripts/sigma_table.py --ckpt outputs/synthetic-reshaped/<run>   # a trained D instead

The discriminator is built at init, normalized with --variant, and its power iteration is run to
convergence (--warmup training-mode forwards, no weight update); each layer is then measured at its
real input size: sigma/matrix is what spectral normalization controls, sigma/operator is the
layer's true Lipschitz constant on that input, with its certified interval (sngan.sigma.
operator_sigma_bounds) and the interval's relative gap upper / lower - 1.
"""

from __future__ import annotations

import torch

from sngan.run.cli import ArgumentParser, run_main
from sngan.config import KEYS, check_values, integer
from sngan.models import MODELS, build_discriminator
from sngan.diagnostics.monitor import layer_input_sizes, sigma_scalars
from sngan.spectral import VARIANTS, apply_spectral_norm


def sigma_rows(model: str, resolution: int, d_ch: int, variant: str, *, warmup: int, seed: int):
    """[(layer, input size, matrix sigma, operator sigma)] for a freshly built, normalized D."""
    torch.manual_seed(seed)
    D = apply_spectral_norm(build_discriminator(model, resolution=resolution, d_ch=d_ch), variant)
    sizes = layer_input_sizes(D, (3, resolution, resolution), "cpu")
    with torch.no_grad():
        for _ in range(warmup):
            D(torch.randn(1, 3, resolution, resolution))
    scalars = sigma_scalars(D, sizes, tol=1e-6)
    return _rows(sizes, scalars), (scalars["sigma/lipschitz_bound"], scalars["sigma/lipschitz_bound_upper"])


def checkpoint_rows(ckpt: str):
    """The same rows for the discriminator saved in a checkpoint (or run folder)."""
    from sngan.run import checkpoint
    from sngan.models import restore_models

    path = checkpoint.locate(ckpt, "--ckpt")
    cfg, _, D, _ = restore_models(checkpoint.load(path), torch.device("cpu"), source=path)
    res = cfg.dataset.resolution
    sizes = layer_input_sizes(D, (3, res, res), "cpu")
    scalars = sigma_scalars(D, sizes, tol=1e-6)
    return _rows(sizes, scalars), (scalars["sigma/lipschitz_bound"], scalars["sigma/lipschitz_bound_upper"])


def _rows(sizes: dict, scalars: dict) -> list[tuple]:
    return [(name, sizes[name], *(scalars[f"sigma/{kind}/{name}"] for kind in
                                  ("matrix", "operator", "operator_lower", "operator_upper")))
            for name in sizes]


def markdown(rows, bounds: tuple[float, float]) -> str:
    lines = ["| layer | input | sigma/matrix | sigma/operator | operator / matrix | certified interval | gap |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for name, size, mat, op, lower, upper in rows:
        shown = "x".join(map(str, size)) if size else "vector"
        lines.append(f"| {name} | {shown} | {mat:.4f} | {op:.4f} | {op / mat:.3f} | [{lower:.4f}, {upper:.4f}] "
                     f"| {upper / lower - 1:.2%} |")
    lines.append(f"\nProduct of the operator sigmas (D's Lipschitz bound): {bounds[0]:.2f}; of their certified "
                 f"upper bounds: {bounds[1]:.2f}")
    return "\n".join(lines)


def main() -> None:
    import argparse

    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="cnn", choices=MODELS)
    p.add_argument("--resolution", type=KEYS["dataset.resolution"].arg_type("dataset.resolution"), default=32)
    p.add_argument("--d-ch", type=KEYS["model.d_ch"].arg_type("model.d_ch"), default=64)
    p.add_argument("--variant", default="reshaped", choices=VARIANTS)
    p.add_argument("--warmup", type=integer(0).arg_type("warmup"), default=200,
                   help="training-mode forwards before measuring")
    p.add_argument("--seed", type=KEYS["seed"].arg_type("seed"), default=0)
    p.add_argument("--ckpt", help="measure the trained D of this checkpoint or run folder instead")
    a = p.parse_args()
    check_values({"model.name": a.model, "dataset.resolution": a.resolution, "model.d_ch": a.d_ch},
                 shown={"model.name": "--model", "dataset.resolution": "--resolution", "model.d_ch": "--d-ch"})
    if a.ckpt:
        rows, bound = checkpoint_rows(a.ckpt)
    else:
        rows, bound = sigma_rows(a.model, a.resolution, a.d_ch, a.variant, warmup=a.warmup, seed=a.seed)
    print(markdown(rows, bound))


if __name__ == "__main__":
    run_main(main)
