"""Recompute the confirmatory study's primary p from runs.csv alone, independently of the report's
code, and check it against the p that report.md prints.

    python scripts/recompute_primary_p.py [docs/results/seeds]

The registered primary test (docs/results/seeds/preregistration.md): `naive` against `reshaped` on
seeds 16-47, runs that finished (ok or diverged); a run's time is its `collapse_step`, or its
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
FINISHED = ("ok", "diverged")
PRIMARY_ROW = re.compile(r"^\| \*\*primary\*\*[^|]*\|[^|]*\| (?P<z>[-0-9.]+|nan) \| (?P<p>[0-9.e+-]+|nan) \|", re.M)


def read_times(path: Path) -> tuple[dict[str, list[tuple[int, bool]]], dict[str, int]]:
    """(time, collapsed) of every finished registered run, by variant; and how many registered runs
    each variant still lacks."""
    times: dict[str, list[tuple[int, bool]]] = {v: [] for v in PAIR}
    seen: dict[str, set[int]] = {v: set() for v in PAIR}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["variant"] not in PAIR or int(row["seed"]) not in SEEDS:
                continue
            seen[row["variant"]].add(int(row["seed"]))
            if row["status"] not in FINISHED:
                continue
            collapsed = row["collapsed"] == "True"
            times[row["variant"]].append((int(row["collapse_step"] if collapsed else row["last_step"]), collapsed))
    return times, {v: len(SEEDS) - len(seen[v]) for v in PAIR if len(seen[v]) < len(SEEDS)}


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
        _say(f"{folder / 'runs.csv'}: registered runs missing ({', '.join(f'{v}: {n}' for v, n in missing.items())}); "
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
    same = (f"{z:.3f}" == shown_z and (f"{p_value:.2g}" if p_value >= 0.001 else f"{p_value:.1e}") == shown_p)
    print("they agree" if same else "THEY DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
