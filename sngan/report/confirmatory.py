"""The pre-registered confirmatory study (docs/results/seeds/preregistration.md): does `naive`
collapse sooner than `reshaped`? Time to first collapse on seeds 16-47, its one-sided log-rank
test, and the secondary analyses and effect sizes the registration names, from runs.csv rows.

A run's time to first collapse is its `collapse_step` (the report's replay of sngan's health
rules); a run that never collapsed is censored at its `last_step`. Nothing here is computed for
the decision before all 64 registered runs are accounted for (`complete`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sngan.report.stats import FINISHED, wilson

EXPLORATORY_SEEDS = range(0, 16)
CONFIRMATORY_SEEDS = range(16, 48)
PAIR = ("naive", "reshaped")    # (hypothesised to collapse sooner, the correct recipe)
STEPS, SETTING = 1500, "lr0.001,b0.5/0.999,ndis5"  # the registered runs' length and optimizer (setting E)
ABANDONED = "abandoned"         # the status of a run given up on (a dated addendum says why; its row the reason)
ALPHA = 0.05
REGISTERED_POWER = 0.83         # the registration's power at the exploratory rates (fixed before the runs)
EXPLORATORY_RATES = (0.44, 0.19)


def _stats():
    from scipy import stats  # the study's extra (pip install -e ".[study]")

    return stats


@dataclass(frozen=True)
class Times:
    """Times to first collapse of one variant's runs: `events[i]` False means censored at `times[i]`."""

    times: tuple[int, ...]
    events: tuple[bool, ...]

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def collapsed(self) -> int:
        return sum(self.events)

    def censored_data(self):
        return _stats().CensoredData(uncensored=[t for t, e in zip(self.times, self.events) if e],
                                     right=[t for t, e in zip(self.times, self.events) if not e])


def times_of(rows: list[dict], divergence_is_collapse: bool = False) -> Times:
    """Time to first collapse of each finished run (ok or diverged) in `rows`. A diverged run that
    had not collapsed is censored at its last step, or counted as collapsing there (the
    registration's sensitivity analysis)."""
    times, events = [], []
    for row in rows:
        if row["status"] not in FINISHED:
            continue
        if row["collapsed"]:
            times.append(int(row["collapse_step"]))
        else:
            times.append(int(row["last_step"]))
        events.append(_collapses(row, divergence_is_collapse))
    return Times(tuple(times), tuple(events))


def logrank_greater(a: Times, b: Times) -> tuple[float, float]:
    """(statistic, one-sided p) of the log-rank test that `a` has the higher hazard of collapse."""
    result = _stats().logrank(a.censored_data(), b.censored_data(), alternative="greater")
    return float(result.statistic), float(result.pvalue)


def fisher(k_a: int, n_a: int, k_b: int, n_b: int) -> tuple[float, float]:
    """(one-sided p that `a` collapses more often, two-sided p) of Fisher's exact test."""
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    stats = _stats()
    return (float(stats.fisher_exact(table, alternative="greater").pvalue),
            float(stats.fisher_exact(table, alternative="two-sided").pvalue))


def mcnemar_exact(pairs: list[tuple[bool, bool]]) -> tuple[int, int, float]:
    """(pairs where only `a` collapsed, pairs where only `b` did, one-sided exact p that `a` does
    more often): the binomial test on the discordant pairs at 1/2."""
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(_stats().binomtest(only_a, only_a + only_b, 0.5, alternative="greater").pvalue)


def newcombe(k_a: int, n_a: int, k_b: int, n_b: int) -> tuple[float, float, float]:
    """(p_a - p_b, its 95% interval): Newcombe's hybrid score interval (method 10), from the two
    Wilson intervals."""
    p_a, p_b = k_a / n_a, k_b / n_b
    (l_a, u_a), (l_b, u_b) = wilson(k_a, n_a), wilson(k_b, n_b)
    d = p_a - p_b
    return d, d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2), d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)


def kaplan_meier(data: Times) -> list[tuple[int, float, float, float]]:
    """(step, share not yet collapsed, its 95% pointwise interval low, high) after each event time;
    the interval by the log-log method (NaN where undefined: a share of 0 or 1)."""
    if data.collapsed == 0:
        return []
    sf = _stats().ecdf(data.censored_data()).sf
    ci = sf.confidence_interval(confidence_level=0.95, method="log-log")
    return [(int(t), float(s), float(lo), float(hi))
            for t, s, lo, hi in zip(sf.quantiles, sf.probabilities, ci.low.probabilities, ci.high.probabilities)]


def median_time(curve: list[tuple[int, float, float, float]]) -> int | None:
    """The first step at which the share not yet collapsed is at most 1/2 (None: not reached)."""
    return next((t for t, s, _, _ in curve if s <= 0.5), None)


def registered_runs(rows: list[dict], seeds: range = CONFIRMATORY_SEEDS) -> dict[str, list[dict]]:
    """The rows of the pair's variants on `seeds` at the registered length and setting, by variant."""
    return {v: sorted((r for r in rows if r["variant"] == v and r["seed"] in seeds and r["steps"] == STEPS
                       and r["optim"] == SETTING), key=lambda r: r["seed"]) for v in PAIR}


def duplicates(rows: list[dict]) -> list[tuple[str, int]]:
    """(variant, seed) of the registered runs with more than one row: which one counts is not decided."""
    runs = registered_runs(rows)
    return sorted({(v, r["seed"]) for v in PAIR for r in runs[v] if sum(o["seed"] == r["seed"] for o in runs[v]) > 1})


def complete(rows: list[dict]) -> bool:
    """Every registered run is accounted for: one row each, finished (ok or diverged) or abandoned
    with its reason. A failed run is not: it is relaunched until it finishes."""
    runs = registered_runs(rows)
    return not duplicates(rows) and all(
        {r["seed"] for r in runs[v]} == set(CONFIRMATORY_SEEDS) and
        all(r["status"] in FINISHED or (r["status"] == ABANDONED and r.get("reason")) for r in runs[v]) for v in PAIR)


def _collapses(row: dict, divergence_is_collapse: bool) -> bool:
    return bool(row["collapsed"]) or (divergence_is_collapse and row["status"] == "diverged")


def analyse(rows: list[dict], seeds: range = CONFIRMATORY_SEEDS, divergence_is_collapse: bool = False) -> dict:
    """The registered tests and effect sizes on `seeds` (the new ones, or all 48 for the pooled look)."""
    runs = registered_runs(rows, seeds)
    a, b = (times_of(runs[v], divergence_is_collapse) for v in PAIR)
    statistic, p = logrank_greater(a, b)
    by_seed = {v: {r["seed"]: _collapses(r, divergence_is_collapse) for r in runs[v] if r["status"] in FINISHED}
               for v in PAIR}
    pairs = [(by_seed[PAIR[0]][s], by_seed[PAIR[1]][s]) for s in seeds if all(s in by_seed[v] for v in PAIR)]
    curves = {v: kaplan_meier(t) for v, t in zip(PAIR, (a, b))}
    return {"times": dict(zip(PAIR, (a, b))), "logrank": (statistic, p),
            "fisher": fisher(a.collapsed, a.n, b.collapsed, b.n), "mcnemar": mcnemar_exact(pairs),
            "difference": newcombe(a.collapsed, a.n, b.collapsed, b.n), "curves": curves,
            "medians": {v: median_time(c) for v, c in curves.items()}}
