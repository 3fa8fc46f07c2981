"""The confirmatory study's section of report.md: where the registered runs stand, and once all are
in, the registered test, the secondary analyses, the effect sizes and the sentence the
registration fixed for the outcome that occurred."""

from __future__ import annotations

from sngan.report.confirmatory import (ALPHA, CONFIRMATORY_SEEDS, EXPLORATORY_RATES, PAIR, REGISTERED_POWER, analyse,
                                       complete, duplicates, registered_runs)
from sngan.report.stats import FINISHED, wilson

ALL_SEEDS = range(0, CONFIRMATORY_SEEDS.stop)


def _p(value: float) -> str:
    """Two significant digits; three next to alpha, where two would round across it."""
    if value < 0.001:
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value - ALPHA) < 0.005 else f"{value:.2g}"


def _steps(value: int | None) -> str:
    return "not reached" if value is None else f"step {value}"


def status_lines(rows: list[dict]) -> list[str]:
    """How many registered runs finished, failed (with reasons) or are still to come: no outcome
    (the registration looks at the collapses once, when every run is in)."""
    runs = registered_runs(rows)
    n = len(CONFIRMATORY_SEEDS)
    lines = ["| variant | registered | finished | failed | not yet finished |",
             "| --- | ---: | ---: | ---: | ---: |"]
    failed = []
    for v in PAIR:
        done = {r["seed"] for r in runs[v] if r["status"] in FINISHED}
        bad = [r for r in runs[v] if r["status"] not in FINISHED and r.get("reason")]
        failed += [f"- {v} seed {r['seed']}: {r['status']}: {r['reason']}" for r in bad]
        lines.append(f"| {v} | {n} | {len(done)} | {len(bad)} | {n - len(done) - len(bad)} |")
    twice = [f"{v} seed {seed}" for v, seed in duplicates(rows)]
    if twice:
        failed.append(f"- more than one row (not counted until one is removed): {', '.join(twice)}")
    return lines + ([""] + failed if failed else [])


def sentence(result: dict) -> str:
    """The registration's sentence for the outcome that occurred, its numbers filled in."""
    a, b = (result["times"][v] for v in PAIR)
    statistic, p = result["logrank"]
    d, low, high = result["difference"]
    counts = f"{a.collapsed} of {a.n} `naive` runs had collapsed by step 1500 against {b.collapsed} of {b.n} `reshaped` runs"
    seeds = len(CONFIRMATORY_SEEDS)  # as registered; runs that could not be finished show in "K of n"
    reverse = " `reshaped` collapsed more often than `naive`." if b.collapsed / b.n > a.collapsed / a.n else ""
    if p < ALPHA:
        m_a, m_b = (result["medians"][v] for v in PAIR)
        often = f"{d:.2f} more often" if d >= 0 else f"{-d:.2f} less often"
        return (f"Yes. In a pre-registered study of {seeds} new seeds per variant, the naive recipe collapsed sooner "
                f"than correct SN (log-rank, one-sided p = {_p(p)}): {counts} ({often}, 95% CI "
                f"[{low:.2f}, {high:.2f}]); median time to first collapse {_steps(m_a)} against {_steps(m_b)}."
                f"{reverse}")
    return (f"The data do not show it. A pre-registered study of {seeds} new seeds per variant did not find that the "
            f"naive recipe collapses sooner than correct SN (log-rank, one-sided p = {_p(p)}; {counts}, difference "
            f"{d:.2f}, 95% CI [{low:.2f}, {high:.2f}]). Had the exploratory study's rates ({EXPLORATORY_RATES[0]} "
            f"against {EXPLORATORY_RATES[1]}) been the truth, the test would have detected them with a probability "
            f"of {REGISTERED_POWER}; a smaller effect is not ruled out. The normalization itself fails in every "
            f"`naive` run (its sigma signature), whatever training does.{reverse}")


def tests_lines(result: dict, label: str) -> list[str]:
    statistic, p = result["logrank"]
    one, two = result["fisher"]
    only_a, only_b, p_pairs = result["mcnemar"]
    a, b = (result["times"][v] for v in PAIR)
    return [f"| {label} | {a.collapsed}/{a.n} vs {b.collapsed}/{b.n} | {statistic:.3f} | {_p(p)} | {_p(one)} "
            f"({_p(two)}) | {only_a} vs {only_b}: {_p(p_pairs)} |"]


def effect_lines(result: dict) -> list[str]:
    lines = ["| variant | collapsed by step 1500 [95% Wilson CI] | median time to first collapse (Kaplan-Meier) |",
             "| --- | ---: | ---: |"]
    for v in PAIR:
        t = result["times"][v]
        low, high = wilson(t.collapsed, t.n)
        lines.append(f"| {v} | {t.collapsed}/{t.n} = {t.collapsed / t.n:.2f} [{low:.2f}, {high:.2f}] | "
                     f"{_steps(result['medians'][v])} |")
    d, low, high = result["difference"]
    return lines + ["", f"Difference in collapse rate (naive - reshaped): {d:.2f}, 95% CI [{low:.2f}, {high:.2f}] "
                        "(Newcombe's hybrid score interval)."]


def confirmatory_section(rows: list[dict], plots: list[str]) -> list[str]:
    lines = ["## Confirmatory study (pre-registered)", "",
             "`naive` against `reshaped`, seeds 16-47, as fixed in [preregistration.md](preregistration.md) before "
             "its first run: time to first collapse, the one-sided log-rank test at alpha 0.05 on the new seeds "
             "alone. Runs made by `bash scripts/confirmatory_study.sh`; the primary p is recomputed from runs.csv alone, "
             "by other code, with `python scripts/recompute_primary_p.py`.", ""]
    lines += status_lines(rows) + [""]
    if not complete(rows):
        finished = sum(r["status"] in FINISHED for v in PAIR for r in registered_runs(rows)[v])
        return lines + [f"In progress: {finished} of {2 * len(CONFIRMATORY_SEEDS)} runs finished. As registered, "
                        "no test is computed before every registered run is accounted for.", ""]
    result = analyse(rows)
    lines += ["**" + sentence(result) + "**", "",
              "| analysis | collapsed | log-rank statistic | log-rank p (one-sided) | Fisher p one-sided (two-sided) "
              "| McNemar, discordant pairs: exact p |", "| --- | --- | ---: | ---: | ---: | --- |"]
    lines += tests_lines(result, "**primary**: seeds 16-47")
    lines += tests_lines(analyse(rows, divergence_is_collapse=True), "sensitivity: a divergence counts as a collapse")
    lines += tests_lines(analyse(rows, ALL_SEEDS), "pooled across a look already taken: seeds 0-47 (not confirmatory)")
    lines += ["", "Only the first row decides; the others are the registration's secondary analyses, with no "
              "correction for multiplicity.", ""] + effect_lines(result) + [""]
    lines += [f"![time to first collapse]({name})" for name in plots] + [""]
    return lines
