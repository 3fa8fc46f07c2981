"""How well a subset of a batch estimates the logged input-gradient norm (`lipschitz/grad_norm`).

    python scripts/grad_norm_subset.py RUN_DIR [RUN_DIR ...] [--subset 16] [--batches 50]

For each run's checkpoints (every snapshot in checkpoints/), draws `--batches` batches of 64 real
and 64 fake images (a private RNG), and compares the mean of ||grad_x D(x)|| over the first
`--subset` of each with the mean over all 64: the relative error's mean and spread across
batches. The trainer logs the subset's value; the full batch's is itself a sample mean, with its
own spread across batches, printed beside it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from sngan.config import integer
from sngan.run import checkpoint
from sngan.run.cli import ArgumentParser, run_main
from sngan.run.errors import UserError
from sngan.data import build_dataset
from sngan.diagnostics.monitor import input_grad_norm
from sngan.models import restore_models


def main() -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with a checkpoints/ folder)")
    p.add_argument("--subset", type=integer(1, 64).arg_type("--subset"), default=16,
                   help="images of each 64-image batch the estimate uses (default: 16)")
    p.add_argument("--batches", type=integer(2).arg_type("--batches"), default=50,
                   help="batches drawn per checkpoint (default: 50)")
    args = p.parse_args()
    for run in args.runs:
        if not any((run / "checkpoints").glob("step_*.pt")):
            raise UserError(f"{run} has no checkpoints/step_*.pt; pass a run folder of sngan.train")
    gen = torch.Generator().manual_seed(0)
    print(f"{'checkpoint':<60} {'full':>8} {'spread':>8} {'subset err':>10} {'err spread':>10}")
    for run in args.runs:
        for path in sorted((run / "checkpoints").glob("step_*.pt")):
            state = checkpoint.load(path)
            cfg, G, D, _ = restore_models(state, torch.device("cpu"))
            data = build_dataset(cfg.dataset)
            full, errors = [], []
            for _ in range(args.batches):
                index = torch.randint(len(data), (64,), generator=gen)
                real = torch.stack([data[int(i)] for i in index])
                with torch.no_grad():
                    G.eval()
                    fake = G(torch.randn(64, cfg.model.z_dim, generator=gen))
                whole = 0.5 * (input_grad_norm(D, real) + input_grad_norm(D, fake))
                part = 0.5 * (input_grad_norm(D, real[:args.subset]) + input_grad_norm(D, fake[:args.subset]))
                full.append(whole)
                errors.append(part / whole - 1)
            name = f"{run.name}/{path.name}"
            print(f"{name:<60} {statistics.mean(full):>8.4f} {statistics.stdev(full) / statistics.mean(full):>8.2%} "
                  f"{statistics.mean(errors):>10.2%} {statistics.stdev(errors):>10.2%}")


if __name__ == "__main__":
    run_main(main)
