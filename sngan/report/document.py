"""report.md: the study's tables with the text that reads them, and links to its plots, written
with the plots into one folder."""

from __future__ import annotations

from pathlib import Path

from sngan.report.plots import plot_run_folders, plot_study
from sngan.report.stats import by_variant
from sngan.report.tables import early_warning_table, problems, tests_table, variant_table, warned_vs_collapse


def report_text(rows: list[dict], plots: list[str]) -> str:
    """The text of report.md for `rows` (runs.csv), linking `plots`."""
    groups = by_variant(rows)
    steps = sorted({r["steps"] for r in rows})
    return "\n".join([
        "# Variants over seeds", "",
        f"{len(rows)} runs, train.steps {', '.join(map(str, steps))}. Collapse: clean_rate reached 0.1 and a later "
        "evaluation fell below 0.3 x the run's best so far. Statistics count runs that finished (ok) or diverged; "
        "failed and incomplete runs are listed below and left out.", "",
        *variant_table(groups), "",
        "Collapse rate: k / n with a 95% Wilson interval. IQR: interquartile range over seeds. "
        "`warned`: runs with at least one normalization-violated warning (sngan.diagnostics.health).", "",
        "## Pairwise tests (two-sided)", "", *tests_table(groups), "",
        "## Early warning", "",
        "Two signals from sngan.diagnostics.health, each against the run's first collapse: the first "
        "normalization-violated warning (the variant's sigma signature), and the first time a layer that "
        "had warned grew another 25% (a within-run change). Lead time: collapse step minus signal step.",
        "", *early_warning_table(groups), "",
        warned_vs_collapse(rows), "",
        "## Runs that did not finish", "", *(problems(rows) or ["None: every run trained to its last step."]), "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in plots), ""])


def write_report(rows: list[dict], curves: list[dict], out: Path, scalars: dict | None = None) -> Path:
    """report.md and plots for `rows` (runs.csv) and `curves` (curves.csv), plus the per-layer plots
    when the run folders' `scalars` are given; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_study(out, by_variant(rows), curves)
    if scalars:
        plots += plot_run_folders(out, rows, scalars)
    (out / "report.md").write_text(report_text(rows, plots))
    return out / "report.md"
