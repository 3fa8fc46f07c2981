"""runs.csv and curves.csv, the study's records: a report can be rebuilt from them alone, after
its run folders are gone. Floats (logged as float32) are kept to 6 significant digits, a missing
value is an empty cell."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sngan.run.checkpoint import atomic_write_text
from sngan.run.errors import UserError

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


def read_csv(path: Path, columns: list[str] | None = None) -> list[dict]:
    """The rows of `path`; with `columns`, a file that lacks any of them (another program's CSV, an
    empty file) is refused in one line."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns or [] if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a {Path(path).name} of scripts/compare_variants.py (it lacks the "
                            f"column{'s' if len(missing) > 1 else ''} {', '.join(missing[:4])}"
                            f"{', ...' if len(missing) > 4 else ''}): give the --out folder of an earlier report")
        return [{k: (v if k in TEXT_COLUMNS else _parse(v)) for k, v in row.items()} for row in reader]


def run_key(row: dict) -> tuple:
    """What makes two rows the same run: variant, seed, optimizer setting and length."""
    return row["variant"], row["seed"], row["optim"], row["steps"]


def merge(rows: list[dict], curves: list[dict], old_rows: list[dict], old_curves: list[dict]):
    """`rows`/`curves` plus the earlier runs no collected folder holds (same variant, seed, optim
    and steps: the collected run wins, it is the newer record of the same run)."""
    have = {run_key(r) for r in rows}
    kept = [r for r in old_rows if run_key(r) not in have]
    wanted = {(r["variant"], r["seed"], r["optim"]) for r in kept}
    return rows + kept, curves + [c for c in old_curves if (c["variant"], c["seed"], c["optim"]) in wanted]
