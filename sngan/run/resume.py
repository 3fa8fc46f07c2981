"""Which checkpoint a run continues from, and with which config."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from sngan.config import check_config, flatten, resumable_key, resumable_summary
from sngan.run import checkpoint
from sngan.run.errors import UserError

log = logging.getLogger("sngan.train")


def load_resume_state(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
                      is_main: bool = True) -> tuple[dict | None, DictConfig]:
    """(the checkpoint this run continues from, the config it continues with), or (None, cfg) for a
    fresh run. A resume takes the saved run's config plus the resumable command-line overrides
    (cfg.resume: false | true | auto | a path). A folder that holds a run is never started over."""
    resume_from = find_resume_checkpoint(cfg.resume, run_dir)
    if resume_from is None:
        if checkpoint.holds_run(run_dir):
            raise UserError(f"{run_dir} already holds a run: pass resume=true to continue it, "
                            "or choose another hydra.run.dir")
        return None, cfg
    own_checkpoints = (Path(run_dir) / "checkpoints").resolve()
    if checkpoint.holds_run(run_dir) and Path(resume_from).resolve().parent != own_checkpoints:
        raise UserError(f"resume={cfg.resume} would continue that run in {run_dir}, which already holds another "
                        "run: choose a new hydra.run.dir for the fork, or pass resume=true to continue "
                        f"the run in {run_dir}")
    # A folder's checkpoint may be swapped for an older good one; a file the command named may not.
    chosen = cfg.resume in (True, "true", "auto") or Path(str(cfg.resume)).expanduser().is_dir()
    state, resume_from = load_for_resume(resume_from, warn=log.warning, fall_back=chosen)  # config checked
    cfg = resume_config(state["config"], cfg, overrides, resume_from, state.get(checkpoint.ADDED_SINCE, ()))
    try:
        check_config(cfg)
    except UserError as e:
        raise UserError(f"cannot resume {resume_from}: {e}") from None
    state["resumed_from"] = resume_from
    return state, cfg


def find_resume_checkpoint(resume, run_dir: Path) -> Path | None:
    """None for a fresh run; else the checkpoint that `resume` names: `true` (this run folder's),
    `auto` (this run folder's if it holds one, else None: a fresh run), a run folder or a file."""
    if resume is False or resume is None or resume == "false":
        return None
    if resume == "auto":
        return checkpoint.run_checkpoint(Path(run_dir) / "checkpoints")
    target = run_dir if resume is True or resume == "true" else resume
    try:
        return checkpoint.locate(target, "resume=")
    except UserError as e:
        shown = str(resume).lower() if isinstance(resume, bool) else resume
        raise UserError(f"resume={shown}: nothing to resume: {e}; run without resume to start fresh") from None


def config_differences(saved: dict, current: dict, added: Sequence[str] = ()) -> list[str]:
    """Keys whose values differ between two resolved configs, ignoring the resumable keys. A key the
    saved config lacked (`added` since, filled in as its default on reading) is not a difference."""
    a, b = flatten(saved), flatten(current)
    return sorted(k for k in a if k not in added and not resumable_key(k, a) and a.get(k) != b.get(k))


# What a command-line override touches: a key and the keys below it; a config group the keys of
# its files (an experiment may touch anything).
_GROUP_KEYS = {"optim": ("optim", "train.n_dis"), "experiment": ("",)}


def _override_names(overrides: list[str]) -> list[str]:
    return [item.split("=", 1)[0].lstrip("+~") for item in overrides]


def _overridden(key: str, overrides: list[str]) -> bool:
    for name in _override_names(overrides):
        for prefix in _GROUP_KEYS.get(name, (name,)):
            if prefix == "" or key == prefix or key.startswith(prefix + "."):
                return True
    return False


def _named(key: str, overrides: list[str]) -> bool:
    """The command line sets `key` (or a key above it) by name, not through a config group."""
    return any(key == name or key.startswith(name + ".")
               for name in _override_names(overrides) if name not in _GROUP_KEYS)


_THIS_COMMAND = ("resume", "device")  # belong to the command at hand, not to the run


def resume_config(saved: dict, current: DictConfig, overrides: list[str] | None, source: Path,
                  added: Sequence[str] = ()) -> DictConfig:
    """The config a resumed run continues with: the saved run's, plus the resumable keys the command
    line set. A command-line override of any other key that differs from the saved run is refused,
    naming the keys. `overrides` None (a direct caller): every key of `current` counts as set.
    `added`: the keys the saved config lacked (config.upgrade filled them in on reading)."""
    current_dict = OmegaConf.to_container(current, resolve=True)
    differing = config_differences(saved, current_dict, added)
    refused = differing if overrides is None else [k for k in differing if _overridden(k, overrides)]
    if "train.steps" in refused and flatten(saved).get("optim.lr_decay") == "linear":
        raise UserError(f"cannot resume {source} with another train.steps: its learning rate decays linearly to 0 "
                        f"at train.steps={saved['train']['steps']}, so the run cannot be lengthened: drop "
                        "train.steps, or start a new run with the longer train.steps")
    if refused:
        raise UserError(f"cannot resume {source}: these settings differ from the saved run: {', '.join(refused)} "
                        f"(a resume takes the saved run's config; only {resumable_summary()} may "
                        "change: drop those overrides, or start a new run)")
    # A key added since the checkpoint was written: the run trained as it did before the key existed
    # (its default). Setting it by name on the command line would change the maths unnoticed.
    saved_flat = flatten(saved)
    if overrides is not None:
        newer = [k for k in flatten(current_dict) if (k not in saved_flat or k in added)
                 and not resumable_key(k, saved_flat) and _named(k, overrides)]
        if newer:
            raise UserError(f"cannot resume {source}: the saved run predates {', '.join(newer)} and trained "
                            "without them (as their defaults): drop those overrides, or start a new run")
    # Keys added since the checkpoint was written take today's defaults: fill them in from `current`,
    # except inside a config group that chose another option (its keys are that option's).
    defaults = copy.deepcopy(current_dict)
    for group in ("variant", "dataset", "model", "loss"):
        if isinstance(saved.get(group), dict) and saved[group].get("name") != defaults.get(group, {}).get("name"):
            defaults[group] = {}
    merged = OmegaConf.merge(OmegaConf.create(defaults), saved)
    for key, value in flatten(current_dict).items():
        if resumable_key(key, saved_flat) and (overrides is None or _overridden(key, overrides) or key in _THIS_COMMAND):
            OmegaConf.update(merged, key, value, merge=False)
    OmegaConf.set_struct(merged, True)
    return merged


def load_for_resume(path: Path, warn, fall_back: bool = True) -> tuple[dict, Path]:
    """Load the checkpoint to resume from; if it is damaged and `fall_back`, the newest good
    snapshot beside it instead (reported through `warn`). Returns (state, the file it came from)."""
    path = Path(path)
    try:
        return checkpoint.load(path, need=checkpoint.RESUME_KEYS), path
    except UserError as error:
        if not fall_back:
            raise
        for snapshot in reversed([p for p in checkpoint.snapshots(path.parent) if p != path]):
            try:
                state = checkpoint.load(snapshot, need=checkpoint.RESUME_KEYS)
            except UserError:
                continue
            warn(f"{error}; resuming from the newest good snapshot {snapshot.name} instead")
            return state, snapshot
        raise

