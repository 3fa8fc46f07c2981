"""Report on a sweep of variants x seeds: runs.csv, curves.csv, statistics with intervals, plots.

    python -m sngan.train -m hydra/launcher=joblib hydra.sweep.dir=outputs/seeds resume=auto \\
        'seed=range(16)' variant=naive,reshaped                   # the runs (relaunch to resume)
    python scripts/compare_variants.py --collect outputs/seeds --out outputs/seeds_report
    python scripts/compare_variants.py --out outputs/seeds_report   # again, from the CSVs alone

`--collect` reads every run folder below SWEEP (a folder with .hydra/config.yaml): its config,
its TensorBoard scalars and its status.json (ok, failed with its reason, diverged with its step;
no status and fewer steps than asked: incomplete). It writes OUT/runs.csv (one row per run),
OUT/curves.csv (per run and logged step: clean_rate, modes, the largest sigmas, the Lipschitz
bound) and the report; runs OUT's runs.csv already holds and no collected folder does are kept
with `--add-csv OUT`, and refused without it (the CSV may be their only record). Without
`--collect` the report is rebuilt from those two CSVs, so a study stays reportable after its run
folders are gone.

Per run, collapse and the first warning come from replaying sngan.diagnostics.health's rules on the logged
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
import sys
from pathlib import Path

from sngan.report.collect import collect
from sngan.report.csvs import CURVE_COLUMNS, RUN_COLUMNS, merge, read_csv, run_key, write_csv
from sngan.report.document import write_report
from sngan.run.cli import ArgumentParser, run_main
from sngan.run.errors import UserError
from sngan.run.paths import writable_folder


def check_nothing_dropped(out: Path, rows: list[dict]) -> None:
    """Collecting into a report folder rewrites its runs.csv, the only record of runs whose folders
    are gone: refused while that file holds runs the collected rows do not."""
    if not (out / "runs.csv").is_file():
        return
    same_run = lambda r: run_key(r)[:3]  # a run lengthened since is the same run
    have = {same_run(r) for r in rows}
    dropped = [r for r in read_csv(out / "runs.csv", RUN_COLUMNS) if same_run(r) not in have]
    if dropped:
        example = ", ".join(f"{r['variant']} seed {r['seed']}" for r in dropped[:2])
        raise UserError(f"--out {out} holds {len(dropped)} run(s) that no --collect folder holds ({example}"
                        f"{', ...' if len(dropped) > 2 else ''}), and its runs.csv would be rewritten without them: "
                        f"add --add-csv {out} to keep them, or choose another --out")


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
    if a.add_csv and not a.collect:
        p.error("--add-csv goes with --collect; add --collect SWEEP, or drop --add-csv")
    for folder in a.add_csv or []:
        if not (folder / "runs.csv").is_file() or not (folder / "curves.csv").is_file():
            p.error(f"--add-csv {folder}: no runs.csv and curves.csv there; give the --out folder of an earlier report")
    if a.collect:
        missing = [str(root) for root in a.collect if not root.is_dir()]
        if missing:
            p.error(f"--collect {', '.join(missing)}: no such folder; give the sweep's folder (hydra.sweep.dir), "
                    "which holds the run folders")
        rows, curves, scalars = collect(a.collect)
        for folder in a.add_csv or []:  # read before OUT's CSVs are rewritten: DIR may be OUT
            rows, curves = merge(rows, curves, read_csv(folder / "runs.csv", RUN_COLUMNS),
                                 read_csv(folder / "curves.csv", CURVE_COLUMNS))
        if not rows:
            p.error(f"no runs (folders with .hydra/config.yaml) below {', '.join(map(str, a.collect))}; give the "
                    "sweep's folder (hydra.sweep.dir), which holds the run folders")
        writable_folder(a.out, "--out")
        check_nothing_dropped(a.out, rows)
        write_csv(a.out / "runs.csv", rows, RUN_COLUMNS)
        write_csv(a.out / "curves.csv", curves, CURVE_COLUMNS)
    else:
        if not (a.out / "runs.csv").is_file() or not (a.out / "curves.csv").is_file():
            p.error(f"{a.out} holds no runs.csv and curves.csv: pass --collect SWEEP to read run folders")
        rows, curves = read_csv(a.out / "runs.csv", RUN_COLUMNS), read_csv(a.out / "curves.csv", CURVE_COLUMNS)
    for row in rows:
        if row["status"] == "failed":
            print(f"failed run {row['run']}: {row['reason']}", file=sys.stderr)
    print(f"wrote {write_report(rows, curves, a.out, scalars)}")


if __name__ == "__main__":
    run_main(main)
