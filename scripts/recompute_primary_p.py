"""Recompute the confirmatory study's primary p from runs.csv alone, independently of the report's
code, and check it against the p that report.md prints.

    python scripts/recompute_primary_p.py [docs/results/seeds]

The registered primary test (docs/results/seeds/preregistration.md): `naive` against `reshaped` on
seeds 16-47 at 1500 steps of setting E, one row per run, every run finished (ok or diverged) or
abandoned with its reason (out of the test); a run's time is its `collapse_step`, or its
`last_step` (censored) when it never collapsed; the one-sided log-rank test that `naive` has the
higher hazard. Here it is done by hand: standard library only (no sngan, no scipy), the sums in
exact fractions, Z = (O - E) / sqrt(V) summed over the distinct collapse steps (a run censored at
a step is still at risk there), p = 1 - Phi(Z). Exit 0 when the report's p is this p at the
report's precision, 1 when it differs, 2 when there is nothing to compare yet.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from fractions import Fraction
from pathlib import Path

SEEDS = range(16, 48)
PAIR = ("naive", "reshaped")
STEPS, SETTING = "1500", "lr0.001,b0.5/0.999,ndis5"  # the registered length and optimizer (setting E)
FINISHED = ("ok", "diverged")
ABANDONED = "abandoned"  # a run given up on, with its reason: out of the test, not missing
PRIMARY_ROW = re.compile(r"^\| \*\*primary\*\*[^|]*\|[^|]*\| (?P<z>[-0-9.]+|nan) \| (?P<p>[0-9.e+-]+|nan) \|", re.M)


def read_times(path: Path) -> tuple[dict[str, list[tuple[int, bool]]], dict[str, int]]:
    """(time, collapsed) of every finished registered run, by variant; and how many registered runs
    each variant still lacks (not finished nor abandoned, or with more than one row)."""
    times: dict[str, list[tuple[int, bool]]] = {v: [] for v in PAIR}
    rows: dict[str, dict[int, list[dict]]] = {v: {} for v in PAIR}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if (row["variant"] in PAIR and int(row["seed"]) in SEEDS and row["steps"] == STEPS
                    and row["optim"] == SETTING):
                rows[row["variant"]].setdefault(int(row["seed"]), []).append(row)
    lacking = {}
    for v in PAIR:
        accounted = 0
        for found in rows[v].values():
            row = found[0]
            if len(found) > 1 or not (row["status"] in FINISHED or (row["status"] == ABANDONED and row["reason"])):
                continue
            accounted += 1
            if row["status"] in FINISHED:
                collapsed = row["collapsed"] == "True"
                times[v].append((int(row["collapse_step"] if collapsed else row["last_step"]), collapsed))
        if accounted < len(SEEDS):
            lacking[v] = len(SEEDS) - accounted
    return times, lacking


def logrank(a: list[tuple[int, bool]], b: list[tuple[int, bool]]) -> tuple[float, float]:
    """(Z, one-sided p that `a` collapses sooner) of the log-rank test, by hand."""
    observed_minus_expected, variance = Fraction(0), Fraction(0)
    for t in sorted({time for time, event in a + b if event}):
        at_risk_a = sum(time >= t for time, _ in a)
        at_risk = at_risk_a + sum(time >= t for time, _ in b)
        events_a = sum(time == t and event for time, event in a)
        events = events_a + sum(time == t and event for time, event in b)
        observed_minus_expected += events_a - Fraction(events * at_risk_a, at_risk)
        if at_risk > 1:
            variance += Fraction(events * at_risk_a * (at_risk - at_risk_a) * (at_risk - events),
                                 at_risk * at_risk * (at_risk - 1))
    if variance == 0:  # no collapse in either variant: the test is undefined (scipy gives nan too)
        return math.nan, math.nan
    z = float(observed_minus_expected) / math.sqrt(variance)
    return z, 0.5 * math.erfc(z / math.sqrt(2))


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="docs/results/seeds", type=Path,
                   help="the folder with runs.csv and report.md (default: docs/results/seeds)")
    folder = p.parse_args(argv).folder
    for name in ("runs.csv", "report.md"):
        if not (folder / name).is_file():
            _say(f"error: {folder / name} not found; pass the folder that holds runs.csv and report.md")
            return 2
    times, missing = read_times(folder / "runs.csv")
    if missing:
        _say(f"{folder / 'runs.csv'}: registered runs not accounted for ({', '.join(f'{v}: {n}' for v, n in missing.items())}); "
             "the report prints no p before every registered run is in")
        return 2
    z, p_value = logrank(times["naive"], times["reshaped"])
    print(f"recomputed from runs.csv: log-rank Z = {z:.6f}, one-sided p = {p_value:.6g} "
          f"({sum(e for _, e in times['naive'])}/{len(times['naive'])} naive against "
          f"{sum(e for _, e in times['reshaped'])}/{len(times['reshaped'])} reshaped collapsed)")
    match = PRIMARY_ROW.search((folder / "report.md").read_text())
    if not match:
        _say(f"{folder / 'report.md'} prints no primary test yet: regenerate it "
             f"(python scripts/compare_variants.py --out {folder})")
        return 2
    shown_p, shown_z = match["p"], match["z"]
    print(f"report.md prints:         log-rank Z = {shown_z}, one-sided p = {shown_p}")
    digits = 3 if abs(p_value - 0.05) < 0.005 else 2  # near alpha the report prints three
    same = f"{z:.3f}" == shown_z and (f"{p_value:.{digits}g}" if p_value >= 0.001 else f"{p_value:.1e}") == shown_p
    print("they agree" if same else "THEY DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
