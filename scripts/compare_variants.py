"""Train (or collect) runs of several variants x seeds and write a comparison report.

    python scripts/compare_variants.py --out reports/embedded --seeds 0,1,2 train.steps=500
    python scripts/compare_variants.py --out docs/results/variants --runs outputs/variants train.steps=400
    python scripts/compare_variants.py --out reports/sweep --collect outputs/multirun/2026-11-24_10-00-00

Training runs `python -m sngan.train variant=V seed=S hydra.run.dir=RUNS/V-seedS [overrides]`
once per (variant, seed), with a progress bar; a run that exits non-zero (a non-finite loss) is
reported as diverged. `--collect` reads every run folder below a directory instead (a Hydra
multirun sweep, say). The report folder gets PNG plots (per-layer sigma/matrix and
sigma/operator over time per variant, the Lipschitz bound, losses, metric curves, final sample
grids side by side) and report.md: final metrics as mean +- std over seeds, and diverged runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from sngan.monitor import read_scalars
from sngan.spectral import VARIANTS

SUMMARY_TAGS = ("metrics/clean_rate", "metrics/modes_covered", "metrics/kl_uniform", "metrics/fid",
                "metrics/isc", "metrics/kid", "sigma/lipschitz_bound", "lipschitz/grad_norm", "loss/d")


def train_runs(runs_dir: Path, variants: list[str], seeds: list[int], overrides: list[str]) -> None:
    """One training subprocess per (variant, seed); failures are kept as diverged runs."""
    jobs = [(v, s) for v in variants for s in seeds]
    for variant, seed in tqdm(jobs, desc="runs", unit="run"):
        run_dir = runs_dir / f"{variant}-seed{seed}"
        if (run_dir / "checkpoints" / "last.pt").exists():
            continue  # already trained: rerunning the script resumes the study
        cmd = [sys.executable, "-m", "sngan.train", f"variant={variant}", f"seed={seed}",
               f"hydra.run.dir={run_dir}", "log.progress=false", *overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "failed.txt").write_text(proc.stderr[-4000:])


def collect(root: Path) -> list[dict]:
    """Every run folder below `root` (it has .hydra/config.yaml): its config, scalars and outcome."""
    runs = []
    for config in sorted(root.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        cfg = OmegaConf.load(config)
        scalars = read_scalars(run_dir)
        last_step = max((pts[-1][0] for pts in scalars.values()), default=0)
        finite = all(math.isfinite(v) for pts in scalars.values() for _, v in pts)
        diverged = (run_dir / "failed.txt").exists() or not finite or last_step < cfg.train.steps
        samples = sorted((run_dir / "samples").glob("step_*.png"))
        runs.append({"dir": run_dir, "variant": cfg.variant.name, "seed": cfg.seed, "scalars": scalars,
                     "diverged": diverged, "last_sample": samples[-1] if samples else None})
    return runs


def _mean_curve(runs: list[dict], tag: str) -> tuple[list[int], list[float]]:
    by_step = defaultdict(list)
    for run in runs:
        for step, value in run["scalars"].get(tag, []):
            by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def _plot_tags(path: Path, by_variant: dict, tags: list[str], title: str, log_y: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for variant, runs in by_variant.items():
            steps, values = _mean_curve(runs, tag)
            if steps:
                ax.plot(steps, values, label=variant)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        if log_y:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{title} (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_samples(path: Path, by_variant: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    shown = [(v, next((r["last_sample"] for r in runs if r["last_sample"]), None)) for v, runs in by_variant.items()]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.8), squeeze=False)
    for ax, (variant, sample) in zip(axes.flat, shown):
        if sample is not None:
            ax.imshow(mpimg.imread(sample), interpolation="nearest")  # crisp pixels, small PNG
        ax.set_title(f"{variant}" + (f"\n{sample.stem}" if sample is not None else ""), fontsize=9)
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.fmean(values):.3g} ± {statistics.stdev(values):.2g}"


def report(runs: list[dict], out: Path) -> Path:
    """Plots and report.md for `runs`; returns the markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    order = {v: i for i, v in enumerate(VARIANTS)}
    by_variant = defaultdict(list)
    for run in sorted(runs, key=lambda r: (order.get(r["variant"], 99), r["seed"])):
        by_variant[run["variant"]].append(run)
    all_tags = sorted({t for r in runs for t in r["scalars"]})
    layers = [t for t in all_tags if t.startswith("sigma/matrix/")]
    _plot_tags(out / "sigma_matrix.png", by_variant, layers, "sigma/matrix per layer")
    _plot_tags(out / "sigma_operator.png", by_variant, [t.replace("matrix", "operator") for t in layers],
               "sigma/operator per layer")
    _plot_tags(out / "lipschitz.png", by_variant, ["sigma/lipschitz_bound", "lipschitz/grad_norm"],
               "Lipschitz bound and gradient norm", log_y=True)
    _plot_tags(out / "losses.png", by_variant, ["loss/d", "loss/g"], "losses")
    metric_tags = [t for t in all_tags if t.startswith("metrics/") and t != "metrics/num_modes"]
    if metric_tags:
        _plot_tags(out / "metrics.png", by_variant, metric_tags, "metrics")
    _plot_samples(out / "samples.png", by_variant)

    tags = [t for t in SUMMARY_TAGS if t in all_tags]
    lines = ["| variant | runs | diverged | max sigma/matrix | " + " | ".join(tags) + " |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in tags) + " |"]
    for variant, group in by_variant.items():
        ok = [r for r in group if not r["diverged"]]
        max_sigma = [max(v for t in layers for _, v in r["scalars"].get(t, [])) for r in ok if layers]
        finals = [_fmt([r["scalars"][t][-1][1] for r in ok if t in r["scalars"]]) for t in tags]
        lines.append(f"| {variant} | {len(group)} | {len(group) - len(ok)} | {_fmt(max_sigma)} | "
                     + " | ".join(finals) + " |")
    diverged = [f"- {r['dir']}" for r in runs if r["diverged"]]
    text = ("# Variant comparison\n\nFinal values (last logged step), mean ± std over the runs that did not "
            "diverge; `max sigma/matrix` is the largest per-layer value over the whole run.\n\n"
            + "\n".join(lines) + "\n\n"
            + ("Diverged runs:\n" + "\n".join(diverged) + "\n\n" if diverged else "No run diverged.\n\n")
            + "Plots: sigma_matrix.png, sigma_operator.png, lipschitz.png, losses.png, metrics.png, samples.png\n")
    (out / "report.md").write_text(text)
    return out / "report.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--runs", type=Path, help="where to train the runs (default: OUT/runs)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--collect", type=Path, help="report on the runs below this folder instead of training")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to every training run")
    a = p.parse_args()
    variants = a.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    runs_dir = a.runs or a.out / "runs"
    if a.collect is None:
        train_runs(runs_dir, variants, [int(s) for s in a.seeds.split(",")], a.overrides)
    root = a.collect or runs_dir
    runs = collect(root)
    if not runs:
        p.error(f"no runs (folders with .hydra/config.yaml) below {root}")
    print(f"wrote {report(runs, a.out)}")


if __name__ == "__main__":
    main()
