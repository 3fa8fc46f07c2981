"""Report on a sweep of variants x seeds: runs.csv, curves.csv, statistics with intervals, plots.

    python -m sngan.train -m hydra/launcher=joblib hydra.sweep.dir=outputs/seeds resume=auto \\
        'seed=range(16)' variant=naive,reshaped                   # the runs (relaunch to resume)
    python scripts/compare_variants.py --collect outputs/seeds --out docs/results/seeds
    python scripts/compare_variants.py --out docs/results/seeds     # again, from the CSVs alone

`--collect` reads every run folder below SWEEP (a folder with .hydra/config.yaml): its config,
its TensorBoard scalars and its status.json (ok, failed with its reason, diverged with its step;
no status and fewer steps than asked: incomplete). It writes OUT/runs.csv (one row per run),
OUT/curves.csv (per run and logged step: clean_rate, modes, the largest sigmas, the Lipschitz
bound) and the report. Without `--collect` the report is rebuilt from those two CSVs, so a study
stays reportable after its run folders are gone.

Per run, collapse and the first warning come from replaying sngan.health's rules on the logged
values (the same code the trainer runs live): `collapsed` = clean_rate reached 0.1 and a later
evaluation fell below 0.3 x the best so far (`collapse_step`: that evaluation);
`first_warning_step` = the first normalization-violated warning (collapse warnings excluded).

report.md, per variant: collapse rate with a 95% Wilson interval, median and interquartile range
of final clean_rate and modes covered, how many runs warned; pairwise tests (Fisher's exact test
on collapse, two-sided Mann-Whitney U on final clean_rate and modes covered) for naive vs
reshaped, reshaped vs operator and none vs naive; and the early-warning analysis (lead time from
the first warning to the collapse; false alarms). Plots: every seed's clean_rate curve per
variant, a survival curve (share of runs not yet collapsed vs step), the largest sigma/matrix and
the Lipschitz bound over time; with run folders also the per-layer sigma plots and final samples.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from sngan.cli import ArgumentParser, run_main
from sngan.errors import UserError
from sngan.health import Health
from sngan.paths import writable_folder
from sngan.monitor import read_scalars
from sngan.spectral import VARIANTS
from sngan.status import read_status

RUN_COLUMNS = ["variant", "seed", "steps", "best_clean_rate", "best_step", "final_clean_rate",
               "final_modes_covered", "final_kl_uniform", "max_sigma_matrix", "max_lipschitz_bound",
               "collapsed", "collapse_step", "first_warning_step", "status", "first_worsening_step", "last_step",
               "optim", "reason", "run"]
CURVE_COLUMNS = ["variant", "seed", "optim", "step", "clean_rate", "modes_covered", "max_sigma_matrix",
                 "max_sigma_operator", "lipschitz_bound", "grad_norm"]
PAIRS = [("naive", "reshaped"), ("reshaped", "operator"), ("none", "naive")]

# --- collecting ----------------------------------------------------------------------------------

def _by_step(scalars: dict) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for tag, points in scalars.items():
        for step, value in points:
            steps[step][tag] = value
    return dict(sorted(steps.items()))


def replay_health(variant: str, readings: dict[int, dict[str, float]]) -> Health:
    """sngan.health's rules over a run's logged values, in the order the trainer applies them:
    at each step the diagnostics first, then the sample-quality metrics."""
    health = Health(variant)
    for step, values in readings.items():
        diagnostics = {k: v for k, v in values.items() if k.startswith(("sigma/", "lipschitz/"))}
        quality = {k: v for k, v in values.items() if k.startswith("metrics/")}
        if diagnostics:
            health.check(step, diagnostics)
        if quality:
            health.check(step, quality)
    return health


def _layer_max(values: dict[str, float], prefix: str) -> float | None:
    found = [v for k, v in values.items() if k.startswith(prefix)]
    return max(found) if found else None


def collect_run(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """(runs.csv row, curves.csv rows, all scalars) of one run folder."""
    record = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(record)
        variant, seed, steps = cfg.variant.name, int(cfg.seed), int(cfg.train.steps)
    except Exception as e:  # not YAML, or not a run's config
        raise UserError(f"{record} is not a readable run config ({' '.join(str(e).split())[:160]}); "
                        "repair it or move that run folder out of the sweep") from None
    scalars = read_scalars(run_dir) if any(run_dir.glob("events.out.tfevents.*")) else {}
    readings = _by_step(scalars)
    optim = cfg.optim.get("name") or f"lr{cfg.optim.lr:g},b{cfg.optim.beta1:g}/{cfg.optim.beta2:g},ndis{cfg.train.n_dis}"
    last_step = max(readings, default=0)
    status = read_status(run_dir) or {}
    state = status.get("status")
    if state is None:  # killed or still running, or a run from before status.json
        finite = all(math.isfinite(v) for values in readings.values() for v in values.values())
        state = "ok" if last_step >= steps and finite else ("diverged" if not finite else "incomplete")
    health = replay_health(variant, readings)
    clean = scalars.get("metrics/clean_rate", [])
    best_value, best_step = max(((v, -s) for s, v in clean), default=(None, None))
    final = lambda tag: scalars[tag][-1][1] if scalars.get(tag) else None
    sigma_matrix = [v for t, pts in scalars.items() if t.startswith("sigma/matrix/") for _, v in pts]
    bounds = [v for _, v in scalars.get("sigma/lipschitz_bound", [])]
    row = {"variant": variant, "seed": seed, "steps": steps,
           "best_clean_rate": best_value, "best_step": -best_step if best_step is not None else None,
           "final_clean_rate": final("metrics/clean_rate"), "final_modes_covered": final("metrics/modes_covered"),
           "final_kl_uniform": final("metrics/kl_uniform"),
           "max_sigma_matrix": max(sigma_matrix, default=None), "max_lipschitz_bound": max(bounds, default=None),
           "collapsed": bool(health.collapses), "collapse_step": health.collapses[0] if health.collapses else None,
           "first_warning_step": health.first_violation, "status": state,
           "first_worsening_step": health.worsenings[0] if health.worsenings else None, "last_step": last_step,
           "optim": optim, "reason": status.get("reason", ""), "run": str(run_dir)}
    curves = [{"variant": variant, "seed": seed, "optim": optim, "step": step,
               "clean_rate": values.get("metrics/clean_rate"), "modes_covered": values.get("metrics/modes_covered"),
               "max_sigma_matrix": _layer_max(values, "sigma/matrix/"),
               "max_sigma_operator": _layer_max(values, "sigma/operator/"),
               "lipschitz_bound": values.get("sigma/lipschitz_bound"), "grad_norm": values.get("lipschitz/grad_norm")}
              for step, values in readings.items()]
    return row, curves, scalars


def _rounded(record: dict) -> dict:
    """Floats to the 6 significant digits runs.csv keeps (they were logged as float32), so that a
    report from run folders and one rebuilt from the CSVs compute on the same numbers."""
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in record.items()}


def collect(roots: list[Path]) -> tuple[list[dict], list[dict], dict]:
    rows, curves, scalars = [], [], {}
    for root in roots:
        for config in sorted(Path(root).rglob(".hydra/config.yaml")):
            run_dir = config.parent.parent
            row, run_curves, run_scalars = collect_run(run_dir)
            rows.append(_rounded(row))
            curves.extend(_rounded(c) for c in run_curves)
            scalars[row["run"]] = run_scalars
    return rows, curves, scalars


# --- CSV -----------------------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value) -> str:
    """A CSV cell: floats (logged as float32) to 6 significant digits, None as empty."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _parse(value: str):
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if k in ("reason", "run", "optim", "variant", "status") else _parse(v))
                 for k, v in row.items()} for row in csv.DictReader(f)]


def merge(rows: list[dict], curves: list[dict], old_rows: list[dict], old_curves: list[dict]):
    """`rows`/`curves` plus the earlier runs no collected folder holds (same variant, seed, optim
    and steps: the collected run wins, it is the newer record of the same run)."""
    key = lambda r: (r["variant"], r["seed"], r["optim"], r["steps"])
    have = {key(r) for r in rows}
    kept = [r for r in old_rows if key(r) not in have]
    wanted = {(r["variant"], r["seed"], r["optim"]) for r in kept}
    return rows + kept, curves + [c for c in old_curves if (c["variant"], c["seed"], c["optim"]) in wanted]


# --- statistics ----------------------------------------------------------------------------------

def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def median_iqr(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q1, q3


def by_variant(rows: list[dict]) -> dict[str, list[dict]]:
    order = {v: i for i, v in enumerate(VARIANTS)}
    grouped = defaultdict(list)
    for row in sorted(rows, key=lambda r: (order.get(r["variant"], 99), r["seed"])):
        grouped[row["variant"]].append(row)
    return dict(grouped)


def finished(group: list[dict]) -> list[dict]:
    """Runs that count for the statistics: trained to the end (ok) or diverged (an outcome)."""
    return [r for r in group if r["status"] in ("ok", "diverged")]


def _values(group: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in group if r[key] is not None]


def pairwise(groups: dict[str, list[dict]], a: str, b: str) -> dict | None:
    """Fisher's exact test on collapse, Mann-Whitney U on final clean_rate and modes covered."""
    from scipy.stats import fisher_exact, mannwhitneyu

    ra, rb = finished(groups.get(a, [])), finished(groups.get(b, []))
    if not ra or not rb:
        return None
    ka, kb = sum(r["collapsed"] for r in ra), sum(r["collapsed"] for r in rb)
    out = {"a": a, "b": b, "n_a": len(ra), "n_b": len(rb), "collapse_a": ka, "collapse_b": kb,
           "fisher_p": fisher_exact([[ka, len(ra) - ka], [kb, len(rb) - kb]]).pvalue}
    for key in ("final_clean_rate", "final_modes_covered"):
        va, vb = _values(ra, key), _values(rb, key)
        out[f"mwu_{key}"] = mannwhitneyu(va, vb, alternative="two-sided").pvalue if va and vb else None
    return out


def early_warning(group: list[dict], signal: str = "first_warning_step") -> dict:
    """For `signal` (a step column): lead times (collapse step - signal step) of the collapsed runs
    that showed it by then; the runs without a collapse that showed it anyway (false alarms)."""
    collapsed = [r for r in group if r["collapsed"]]
    warned_before = [r for r in collapsed if r.get(signal) is not None and r[signal] <= r["collapse_step"]]
    leads = [r["collapse_step"] - r[signal] for r in warned_before]
    stable = [r for r in group if not r["collapsed"]]
    return {"collapsed": len(collapsed), "warned_before": len(warned_before), "leads": leads,
            "stable": len(stable), "false_alarms": sum(r.get(signal) is not None for r in stable)}


# --- plots ---------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_samples(path: Path, groups: dict) -> None:
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
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


# --- the report ----------------------------------------------------------------------------------

def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _miqr(values: list[float]) -> str:
    m = median_iqr(values)
    return "-" if m is None else f"{m[0]:.3g} [{m[1]:.3g}, {m[2]:.3g}]"


def variant_table(groups: dict) -> list[str]:
    lines = ["| variant | runs (ok) | failed / diverged / incomplete | collapsed | collapse rate [95% CI] | "
             "final clean_rate, median [IQR] | final modes covered, median [IQR] | best clean_rate, median | "
             "warned (normalization) | max sigma/matrix, median | max Lipschitz bound, median |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant, group in groups.items():
        done = finished(group)
        counts = [sum(r["status"] == s for r in group) for s in ("failed", "diverged", "incomplete")]
        ok = sum(r["status"] == "ok" for r in group)
        k = sum(r["collapsed"] for r in done)
        rate = "-"
        if done:
            low, high = wilson(k, len(done))
            rate = f"{k / len(done):.2f} [{low:.2f}, {high:.2f}]"
        warned = sum(r["first_warning_step"] is not None for r in done)
        med = lambda key: _f(statistics.median(_values(done, key))) if _values(done, key) else "-"
        lines.append(f"| {variant} | {len(group)} ({ok}) | {' / '.join(map(str, counts))} | {k} / {len(done)} | "
                     f"{rate} | {_miqr(_values(done, 'final_clean_rate'))} | "
                     f"{_miqr(_values(done, 'final_modes_covered'))} | {med('best_clean_rate')} | "
                     f"{warned} / {len(done)} | {med('max_sigma_matrix')} | {med('max_lipschitz_bound')} |")
    return lines


def tests_table(groups: dict) -> list[str]:
    lines = ["| comparison | collapsed | Fisher exact p (collapse) | Mann-Whitney p (final clean_rate) | "
             "Mann-Whitney p (final modes) |", "| --- | --- | ---: | ---: | ---: |"]
    for a, b in PAIRS:
        t = pairwise(groups, a, b)
        if t is None:
            lines.append(f"| {a} vs {b} | not enough runs | - | - | - |")
            continue
        lines.append(f"| {a} vs {b} | {t['collapse_a']}/{t['n_a']} vs {t['collapse_b']}/{t['n_b']} | "
                     f"{_f(t['fisher_p'], 2)} | {_f(t['mwu_final_clean_rate'], 2)} | "
                     f"{_f(t['mwu_final_modes_covered'], 2)} |")
    return lines


def early_warning_table(groups: dict) -> list[str]:
    lines = ["| variant | signal | collapsed runs | signalled before collapsing | lead time (steps), median "
             "[range] | runs without collapse | of which signalled (false alarms) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for variant, group in groups.items():
        for signal, name in (("first_warning_step", "first warning"), ("first_worsening_step", "a layer x1.25 worse")):
            e = early_warning(finished(group), signal)
            lead = (f"{statistics.median(e['leads']):.0f} [{min(e['leads'])}, {max(e['leads'])}]"
                    if e["leads"] else "-")
            lines.append(f"| {variant} | {name} | {e['collapsed']} | {e['warned_before']} | {lead} | {e['stable']} | "
                         f"{e['false_alarms']} |")
    return lines


def warned_vs_collapse(rows: list[dict]) -> str:
    """Across all finished runs: does a warning go with a higher collapse rate?"""
    from scipy.stats import fisher_exact

    done = [r for r in rows if r["status"] in ("ok", "diverged")]
    warned = [r for r in done if r["first_warning_step"] is not None]
    quiet = [r for r in done if r["first_warning_step"] is None]
    if not warned or not quiet:
        return "Every run warned, or none did: the warning cannot be compared with its absence."
    kw, kq = sum(r["collapsed"] for r in warned), sum(r["collapsed"] for r in quiet)
    p = fisher_exact([[kw, len(warned) - kw], [kq, len(quiet) - kq]]).pvalue
    return (f"Runs that warned collapsed in {kw} of {len(warned)} cases, runs that did not in {kq} of "
            f"{len(quiet)} (Fisher's exact test p = {p:.2g}). Where the warning fires at a variant's first "
            "reading (its sigma signature), this compares variants rather than moments of a run: the lead "
            "times above say how early, not whether, the signature foretells a collapse.")


def report(rows: list[dict], curves: list[dict], out: Path, scalars: dict | None = None) -> Path:
    """report.md and plots for `rows` (runs.csv) and `curves` (curves.csv); returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    groups = by_variant(rows)
    plot_clean_rate_curves(out / "clean_rate_curves.png", groups, curves)
    plot_survival(out / "survival.png", groups, curves)
    plot_signature(out / "signature.png", groups, curves)
    plots = ["clean_rate_curves.png", "survival.png", "signature.png"]
    if scalars:
        plots += plot_run_folders(out, rows, scalars)
    problems = [f"- {r['variant']} seed {r['seed']}: {r['status']}" + (f": {r['reason']}" if r["reason"] else "")
                for r in rows if r["status"] != "ok"]
    steps = sorted({r["steps"] for r in rows})
    text = "\n".join([
        "# Variants over seeds", "",
        f"{len(rows)} runs, train.steps {', '.join(map(str, steps))}. Collapse: clean_rate reached 0.1 and a later "
        "evaluation fell below 0.3 x the run's best so far. Statistics count runs that finished (ok) or diverged; "
        "failed and incomplete runs are listed below and left out.", "",
        *variant_table(groups), "",
        "Collapse rate: k / n with a 95% Wilson interval. IQR: interquartile range over seeds. "
        "`warned`: runs with at least one normalization-violated warning (sngan.health).", "",
        "## Pairwise tests (two-sided)", "", *tests_table(groups), "",
        "## Early warning", "",
        "Two signals from sngan.health, each against the run's first collapse: the first "
        "normalization-violated warning (the variant's sigma signature), and the first time a layer that "
        "had warned grew another 25% (a within-run change). Lead time: collapse step minus signal step.",
        "", *early_warning_table(groups), "",
        warned_vs_collapse(rows), "",
        "## Runs that did not finish", "", *(problems or ["None: every run trained to its last step."]), "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in plots), ""])
    (out / "report.md").write_text(text)
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="report folder (runs.csv, curves.csv, report.md, plots)")
    p.add_argument("--collect", type=Path, action="append", metavar="SWEEP",
                   help="a folder holding run folders (a Hydra sweep); repeatable. Without it: rebuild the "
                        "report from OUT/runs.csv and OUT/curves.csv")
    p.add_argument("--add-csv", type=Path, action="append", metavar="DIR",
                   help="with --collect: also the runs of an earlier report (DIR/runs.csv, DIR/curves.csv) "
                        "that no collected folder holds, e.g. a study continued in a new sweep folder; repeatable")
    a = p.parse_args(argv)
    scalars = None
    for folder in a.add_csv or []:
        if not (folder / "runs.csv").is_file() or not (folder / "curves.csv").is_file():
            p.error(f"--add-csv {folder}: no runs.csv and curves.csv there")
    if a.collect:
        missing = [str(root) for root in a.collect if not root.is_dir()]
        if missing:
            p.error(f"--collect {', '.join(missing)}: no such folder")
        rows, curves, scalars = collect(a.collect)
        for folder in a.add_csv or []:  # read before OUT's CSVs are rewritten: DIR may be OUT
            rows, curves = merge(rows, curves, read_csv(folder / "runs.csv"), read_csv(folder / "curves.csv"))
        if not rows:
            p.error(f"no runs (folders with .hydra/config.yaml) below {', '.join(map(str, a.collect))}")
        writable_folder(a.out, "--out")
        write_csv(a.out / "runs.csv", rows, RUN_COLUMNS)
        write_csv(a.out / "curves.csv", curves, CURVE_COLUMNS)
    else:
        if a.add_csv:
            p.error("--add-csv goes with --collect")
        if not (a.out / "runs.csv").is_file() or not (a.out / "curves.csv").is_file():
            p.error(f"{a.out} holds no runs.csv and curves.csv: pass --collect SWEEP to read run folders")
        rows, curves = read_csv(a.out / "runs.csv"), read_csv(a.out / "curves.csv")
    for row in rows:
        if row["status"] == "failed":
            print(f"failed run {row['run']}: {row['reason']}", file=sys.stderr)
    print(f"wrote {report(rows, curves, a.out, scalars)}")


if __name__ == "__main__":
    run_main(main)
