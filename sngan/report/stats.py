"""The study's statistics, over the runs that finished (ok) or diverged: failed and incomplete
runs are no outcome and are left out.

Per variant: collapse rate k / n with a 95% Wilson interval; median and interquartile range
(inclusive quartiles) over seeds. Pairwise: Fisher's exact test on collapse and two-sided
Mann-Whitney U on final clean_rate and modes covered. Early warning: for a signal (a step column
of runs.csv), the lead time from the signal to a run's first collapse, and the runs that showed
the signal without collapsing (false alarms).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from sngan.spectral import VARIANTS

FINISHED = ("ok", "diverged")


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
    """Rows grouped by variant, in sngan.spectral.VARIANTS order (others last), each by seed."""
    order = {v: i for i, v in enumerate(VARIANTS)}
    grouped = defaultdict(list)
    for row in sorted(rows, key=lambda r: (order.get(r["variant"], 99), r["seed"])):
        grouped[row["variant"]].append(row)
    return dict(grouped)


def finished(group: list[dict]) -> list[dict]:
    """Runs that count for the statistics: trained to the end (ok) or diverged (an outcome)."""
    return [r for r in group if r["status"] in FINISHED]


def column(group: list[dict], key: str) -> list[float]:
    """The values of `key` the rows have, as floats (missing ones left out)."""
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
        va, vb = column(ra, key), column(rb, key)
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


def warning_and_collapse(rows: list[dict]) -> dict | None:
    """Across all finished runs: collapses among the runs that warned and among those that did
    not, with Fisher's exact p; None when every run warned, or none did."""
    from scipy.stats import fisher_exact

    done = finished(rows)
    warned = [r for r in done if r["first_warning_step"] is not None]
    quiet = [r for r in done if r["first_warning_step"] is None]
    if not warned or not quiet:
        return None
    kw, kq = sum(r["collapsed"] for r in warned), sum(r["collapsed"] for r in quiet)
    return {"collapsed_warned": kw, "warned": len(warned), "collapsed_quiet": kq, "quiet": len(quiet),
            "fisher_p": fisher_exact([[kw, len(warned) - kw], [kq, len(quiet) - kq]]).pvalue}
