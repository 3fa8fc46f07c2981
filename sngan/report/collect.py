"""Read a sweep's run folders into the study's records: one row per run (runs.csv) and one point
per run and logged step (curves.csv: clean_rate, modes, the largest sigmas, the Lipschitz bound).

A run folder is any folder with .hydra/config.yaml below a sweep. Its config gives the variant,
seed and steps asked for; its TensorBoard scalars the values; its status.json the outcome (ok,
failed with its reason, diverged with its step). A run without status.json (killed, still
running, or older than status.json) counts as ok when it logged every step with finite values,
diverged when a value is not finite, and incomplete otherwise.

Collapse and the first warning come from replaying sngan.diagnostics.health's rules on the logged
values (the same code the trainer runs live): `collapsed` = clean_rate reached 0.1 and a later
evaluation fell below 0.3 x the best so far (`collapse_step`: that evaluation);
`first_warning_step` = the first normalization-violated warning (collapse warnings excluded);
`first_worsening_step` = the first time a layer that had warned grew another 25%.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from sngan.diagnostics.health import replay
from sngan.diagnostics.monitor import read_scalars
from sngan.run.errors import UserError
from sngan.run.status import read_status


def by_step(scalars: dict) -> dict[int, dict[str, float]]:
    """{tag: [(step, value)]} -> {step: {tag: value}}, by step."""
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for tag, points in scalars.items():
        for step, value in points:
            steps[step][tag] = value
    return dict(sorted(steps.items()))


def _layer_max(values: dict[str, float], prefix: str) -> float | None:
    found = [v for k, v in values.items() if k.startswith(prefix)]
    return max(found) if found else None


def _outcome(run_dir: Path, readings: dict[int, dict[str, float]], steps: int) -> tuple[str, str]:
    """(status, reason) of a run: its status.json's, else judged from what it logged."""
    status = read_status(run_dir) or {}
    state = status.get("status")
    if state is None:  # killed or still running, or a run from before status.json
        finite = all(math.isfinite(v) for values in readings.values() for v in values.values())
        state = "ok" if max(readings, default=0) >= steps and finite else ("diverged" if not finite else "incomplete")
    return state, status.get("reason", "")


def _curves(variant: str, seed: int, optim: str, readings: dict[int, dict[str, float]]) -> list[dict]:
    return [{"variant": variant, "seed": seed, "optim": optim, "step": step,
             "clean_rate": values.get("metrics/clean_rate"), "modes_covered": values.get("metrics/modes_covered"),
             "max_sigma_matrix": _layer_max(values, "sigma/matrix/"),
             "max_sigma_operator": _layer_max(values, "sigma/operator/"),
             "lipschitz_bound": values.get("sigma/lipschitz_bound"), "grad_norm": values.get("lipschitz/grad_norm")}
            for step, values in readings.items()]


def collect_run(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """(runs.csv row, curves.csv rows, all scalars) of one run folder."""
    record = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(record)
        variant, seed, steps = cfg.variant.name, int(cfg.seed), int(cfg.train.steps)
    except Exception as e:  # not YAML, or not a run's config
        raise UserError(f"{record} is not a readable run config ({' '.join(str(e).split())[:160]}); "
                        "repair it or move that run folder out of the sweep") from None
    scalars = read_scalars(run_dir) if any(run_dir.glob("events.out.tfevents.*")) else {}
    readings = by_step(scalars)
    optim = cfg.optim.get("name") or f"lr{cfg.optim.lr:g},b{cfg.optim.beta1:g}/{cfg.optim.beta2:g},ndis{cfg.train.n_dis}"
    state, reason = _outcome(run_dir, readings, steps)
    health = replay(variant, readings)
    clean = scalars.get("metrics/clean_rate", [])
    best_value, best_step = max(((v, -s) for s, v in clean), default=(None, None))
    final = lambda tag: scalars[tag][-1][1] if scalars.get(tag) else None
    sigma_matrix = [v for t, pts in scalars.items() if t.startswith("sigma/matrix/") for _, v in pts]
    bounds = [v for _, v in scalars.get("sigma/lipschitz_bound", [])]
    row = {"variant": variant, "seed": seed, "steps": steps,
           "best_clean_rate": best_value, "best_step": -best_step if best_step is not None else None,
           "final_clean_rate": final("metrics/clean_rate"), "final_modes_covered": final("metrics/modes_covered"),
           "final_kl_uniform": final("metrics/kl_uniform"),
           "max_sigma_matrix": max(sigma_matrix, default=None), "max_lipschitz_bound": max(bounds, default=None),
           "collapsed": bool(health.collapses), "collapse_step": health.collapses[0] if health.collapses else None,
           "first_warning_step": health.first_violation, "status": state,
           "first_worsening_step": health.worsenings[0] if health.worsenings else None,
           "last_step": max(readings, default=0), "optim": optim, "reason": reason, "run": str(run_dir)}
    return row, _curves(variant, seed, optim, readings), scalars


def _rounded(record: dict) -> dict:
    """Floats to the 6 significant digits runs.csv keeps (they were logged as float32), so that a
    report from run folders and one rebuilt from the CSVs compute on the same numbers."""
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in record.items()}


def collect(roots: list[Path]) -> tuple[list[dict], list[dict], dict]:
    """(rows, curves, {run folder: its scalars}) of every run folder below `roots`."""
    rows, curves, scalars = [], [], {}
    for root in roots:
        for config in sorted(Path(root).rglob(".hydra/config.yaml")):
            run_dir = config.parent.parent
            row, run_curves, run_scalars = collect_run(run_dir)
            rows.append(_rounded(row))
            curves.extend(_rounded(c) for c in run_curves)
            scalars[row["run"]] = run_scalars
    return rows, curves, scalars
