"""report.md: the study's tables with the text that reads them, and links to its plots, written
with the plots into one folder."""

from __future__ import annotations

from pathlib import Path

from sngan.report.confirmatory import CONFIRMATORY_SEEDS, PAIR, analyse, complete
from sngan.report.plots import plot_kaplan_meier, plot_run_folders, plot_study
from sngan.report.stats import by_variant
from sngan.report.tables import early_warning_table, problems, tests_table, variant_table, warned_vs_collapse
from sngan.report.verdict import confirmatory_section
from sngan.run.checkpoint import atomic_write_text

KAPLAN_MEIER = "kaplan_meier.png"
RUN_FOLDER_PLOTS = ("sigma_matrix.png", "sigma_operator.png", "lipschitz.png", "losses.png", "metrics.png",
                    "samples.png")  # what plot_run_folders makes


def exploratory(rows: list[dict]) -> list[dict]:
    """The exploratory study's runs: every seed below the confirmatory study's (registered later)."""
    return [r for r in rows if r["seed"] < CONFIRMATORY_SEEDS.start]


def report_text(rows: list[dict], plots: list[str], confirmatory_plots: list[str] = ()) -> str:
    """The text of report.md for `rows` (runs.csv), linking `plots`: the exploratory study's tables
    (seeds 0-15), then the pre-registered confirmatory study's section."""
    everything, rows = rows, exploratory(rows)
    groups = by_variant(rows)
    steps = sorted({r["steps"] for r in rows})
    return "\n".join([
        "# Variants over seeds", "",
        "## Exploratory study", "",
        f"{len(rows)} runs (seeds 0-15, fixed in advance; analysed before the confirmatory study below was "
        f"registered), train.steps {', '.join(map(str, steps))}. Collapse: clean_rate reached 0.1 and a later "
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
        "Plots: " + ", ".join(f"[{p}]({p})" for p in plots), "",
        *confirmatory_section(everything, list(confirmatory_plots))])


def write_report(rows: list[dict], curves: list[dict], out: Path, scalars: dict | None = None) -> Path:
    """report.md and plots for `rows` (runs.csv) and `curves` (curves.csv), plus the per-layer plots
    when the run folders' `scalars` are given; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_study(out, by_variant(exploratory(rows)), [c for c in curves if c["seed"] < CONFIRMATORY_SEEDS.start])
    explored = exploratory(rows)
    if scalars and any(r["run"] in scalars for r in explored):
        plots += plot_run_folders(out, explored, scalars)
    else:  # the exploratory runs' folders are gone: keep the plots an earlier collection made of them
        plots += [name for name in RUN_FOLDER_PLOTS if (out / name).is_file()]
    confirmatory_plots = []
    if complete(rows):  # as registered: nothing of the outcome is shown before every run is in
        result = analyse(rows)
        plot_kaplan_meier(out / KAPLAN_MEIER, result["curves"], {v: result["times"][v].n for v in PAIR}, 1500)
        confirmatory_plots.append(KAPLAN_MEIER)
    atomic_write_text(out / "report.md", report_text(rows, plots, confirmatory_plots))
    return out / "report.md"
