"""runs.csv and curves.csv, the study's records: a report can be rebuilt from them alone, after
its run folders are gone. Floats (logged as float32) are kept to 6 significant digits, a missing
value is an empty cell."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sngan.run.checkpoint import atomic_write_text

RUN_COLUMNS = ["variant", "seed", "steps", "best_clean_rate", "best_step", "final_clean_rate",
               "final_modes_covered", "final_kl_uniform", "max_sigma_matrix", "max_lipschitz_bound",
               "collapsed", "collapse_step", "first_warning_step", "status", "first_worsening_step", "last_step",
               "optim", "reason", "run"]
CURVE_COLUMNS = ["variant", "seed", "optim", "step", "clean_rate", "modes_covered", "max_sigma_matrix",
                 "max_sigma_operator", "lipschitz_bound", "grad_norm"]
TEXT_COLUMNS = ("reason", "run", "optim", "variant", "status")  # read back as they are written


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Replace `path` atomically: the study's only record of runs whose folders are gone."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_text(Path(path), text.getvalue())


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
        return [{k: (v if k in TEXT_COLUMNS else _parse(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def merge(rows: list[dict], curves: list[dict], old_rows: list[dict], old_curves: list[dict]):
    """`rows`/`curves` plus the earlier runs no collected folder holds (same variant, seed, optim
    and steps: the collected run wins, it is the newer record of the same run)."""
    key = lambda r: (r["variant"], r["seed"], r["optim"], r["steps"])
    have = {key(r) for r in rows}
    kept = [r for r in old_rows if key(r) not in have]
    wanted = {(r["variant"], r["seed"], r["optim"]) for r in kept}
    return rows + kept, curves + [c for c in old_curves if (c["variant"], c["seed"], c["optim"]) in wanted]
