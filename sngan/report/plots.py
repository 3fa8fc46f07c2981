"""The study's plots (matplotlib with the Agg backend: no display needed). From the CSVs: every
seed's clean_rate curve per variant, a survival curve (share of runs not yet collapsed vs step),
the largest sigma/matrix and the Lipschitz bound over time. With the run folders' scalars also
the per-layer sigmas, the Lipschitz bound and gradient norm, the losses and metrics (mean over
seeds), and each variant's final sample grid."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from sngan.report.stats import by_variant, finished


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, **layout) -> None:
    fig.tight_layout(**layout)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_clean_rate_curves(path: Path, groups: dict, curves: list[dict]) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.2), squeeze=False, sharey=True)
    by_run = defaultdict(list)
    for c in curves:
        if c["clean_rate"] is not None:
            by_run[(c["variant"], c["seed"], c["optim"])].append((c["step"], c["clean_rate"]))
    for ax, (variant, rows) in zip(axes.flat, groups.items()):
        for row in rows:
            points = sorted(by_run.get((variant, row["seed"], row["optim"]), []))
            if not points:
                continue
            line, = ax.plot(*zip(*points), lw=0.9, alpha=0.8)
            if row["collapsed"]:
                value = dict(points).get(row["collapse_step"])
                if value is not None:
                    ax.plot(row["collapse_step"], value, "x", color=line.get_color(), ms=6)
        ax.set_title(f"{variant} ({len(rows)} runs)", fontsize=9)
        ax.set_xlabel("step")
    axes.flat[0].set_ylabel("metrics/clean_rate")
    fig.suptitle("clean_rate of every seed (x: collapse)", fontsize=10)
    _save(plt, fig, path)


def plot_survival(path: Path, groups: dict, curves: list[dict]) -> None:
    """Share of a variant's runs not yet collapsed, at every evaluated step."""
    plt = _pyplot()
    steps = sorted({c["step"] for c in curves if c["clean_rate"] is not None})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for variant, rows in groups.items():
        rows = finished(rows)
        if not rows or not steps:
            continue
        alive = [sum(not r["collapsed"] or r["collapse_step"] > s for r in rows) / len(rows) for s in steps]
        ax.step(steps, alive, where="post", label=f"{variant} (n={len(rows)})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("share of runs not yet collapsed")
    if ax.get_legend_handles_labels()[0]:  # no curves (no evaluations yet): no legend
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_signature(path: Path, groups: dict, curves: list[dict]) -> None:
    """Median over seeds of the largest per-layer sigma/matrix and of the Lipschitz bound."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, ax, log_y, title in (
            ("max_sigma_matrix", axes[0], False, "largest per-layer sigma/matrix (SN promises 1)"),
            ("lipschitz_bound", axes[1], True, "sigma/lipschitz_bound (product of operator norms)")):
        for variant in groups:
            by_step = defaultdict(list)
            for c in curves:
                if c["variant"] == variant and c[key] is not None:
                    by_step[c["step"]].append(c[key])
            if by_step:
                steps = sorted(by_step)
                ax.plot(steps, [statistics.median(by_step[s]) for s in steps], label=variant)
        ax.set_title(f"{title}, median over seeds", fontsize=9)
        ax.set_xlabel("step")
        if log_y:
            ax.set_yscale("log")
    axes[0].axhline(1.0, color="grey", lw=0.6, ls="--")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    _save(plt, fig, path)


def _mean_curve(runs: list[dict], tag: str) -> tuple[list[int], list[float]]:
    by_step = defaultdict(list)
    for run in runs:
        for step, value in run["scalars"].get(tag, []):
            by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def plot_tags(path: Path, groups: dict, tags: list[str], title: str, log_y: bool = False) -> bool:
    """Mean over seeds of each tag per variant, one panel per tag; False (no file) with no tags."""
    if not tags:
        return False
    plt = _pyplot()
    cols = min(3, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for variant, runs in groups.items():
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
    _save(plt, fig, path)
    return True


def plot_samples(path: Path, groups: dict) -> None:
    """Each variant's last sample grid, from the first of its runs that saved one."""
    plt = _pyplot()
    import matplotlib.image as mpimg

    shown = []
    for variant, runs in groups.items():
        samples = [sorted((Path(r["run"]) / "samples").glob("step_*.png")) for r in runs]
        shown.append((variant, next((s[-1] for s in samples if s), None)))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.8), squeeze=False)
    for ax, (variant, sample) in zip(axes.flat, shown):
        if sample is not None:
            ax.imshow(mpimg.imread(sample), interpolation="nearest")  # crisp pixels, small PNG
        ax.set_title(f"{variant}" + (f"\n{sample.stem}" if sample is not None else ""), fontsize=9)
        ax.axis("off")
    _save(plt, fig, path, rect=(0, 0, 1, 0.95))


def plot_run_folders(out: Path, rows: list[dict], scalars: dict) -> list[str]:
    """The per-layer plots that need every logged tag (run folders present); returns their names."""
    runs = [{**r, "scalars": scalars.get(r["run"], {})} for r in rows]
    groups = by_variant(runs)
    all_tags = sorted({t for r in runs for t in r["scalars"]})
    layers = [t for t in all_tags if t.startswith("sigma/matrix/")]
    made = []
    for name, tags, title, log_y in (
            ("sigma_matrix", layers, "sigma/matrix per layer", False),
            ("sigma_operator", [t for t in all_tags if t.startswith("sigma/operator/")], "sigma/operator per layer", False),
            ("lipschitz", [t for t in ("sigma/lipschitz_bound", "lipschitz/grad_norm") if t in all_tags],
             "Lipschitz bound and gradient norm", True),
            ("losses", [t for t in ("loss/d", "loss/g") if t in all_tags], "losses", False),
            ("metrics", [t for t in all_tags if t.startswith("metrics/") and t != "metrics/num_modes"],
             "metrics", False)):
        if plot_tags(out / f"{name}.png", groups, tags, title, log_y):
            made.append(f"{name}.png")
    plot_samples(out / "samples.png", groups)
    return made + ["samples.png"]


def plot_kaplan_meier(path: Path, curves: dict[str, list[tuple[int, float, float, float]]], n: dict[str, int],
                      last_step: int) -> None:
    """Kaplan-Meier curves of time to first collapse with their 95% pointwise intervals (shaded)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for variant, curve in curves.items():
        steps = [0] + [t for t, _, _, _ in curve] + [last_step]
        share = [1.0] + [s for _, s, _, _ in curve]
        line = ax.step(steps, share + share[-1:], where="post", label=f"{variant} (n={n[variant]})")[0]
        low = [1.0] + [lo if lo == lo else s for _, s, lo, _ in curve]
        high = [1.0] + [hi if hi == hi else s for _, s, _, hi in curve]
        ax.fill_between(steps, low + low[-1:], high + high[-1:], step="post", alpha=0.2, color=line.get_color())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("share of runs not yet collapsed")
    ax.set_title("confirmatory study: time to first collapse (95% CI)", fontsize=9)
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_study(out: Path, groups: dict, curves: list[dict]) -> list[str]:
    """The plots the CSVs allow; returns their names."""
    plot_clean_rate_curves(out / "clean_rate_curves.png", groups, curves)
    plot_survival(out / "survival.png", groups, curves)
    plot_signature(out / "signature.png", groups, curves)
    return ["clean_rate_curves.png", "survival.png", "signature.png"]
