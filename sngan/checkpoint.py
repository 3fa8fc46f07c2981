"""Checkpoints: atomic writes, numbered snapshots, and everything an exact resume needs.

A checkpoint is a plain dict: step, models (G, D with every variant's buffers, G EMA), both
optimizers and LR schedulers, RNG states (python, numpy, torch CPU and CUDA), the data position
and the resolved config. It is written to a temporary file in the same folder, flushed and
fsynced, then moved over the target with os.replace, so a kill at any instant leaves either the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import copy
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sngan.errors import UserError

FORMAT = "sngan-checkpoint-v1"
LAST = "last.pt"
_SNAPSHOT = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """`write(f)` into a temporary file in `path`'s folder (binary), fsynced, then os.replace over
    `path`, and the rename itself made durable: a kill at any instant leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the mode open() would give, not mkstemp's private 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:  # a write into the open file names no path
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to `path` atomically (see atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: Path, text: str) -> None:
    """Replace a small text file atomically (see atomic_write)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def save(ckpt_dir: Path, state: dict, *, keep: int) -> Path:
    """Write `last.pt` and a numbered snapshot `step_<N>.pt`, keeping the newest `keep` snapshots."""
    ckpt_dir = Path(ckpt_dir)
    for stale in ckpt_dir.glob(".*.tmp"):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    state = {"format": FORMAT, **state}
    snapshot = ckpt_dir / f"step_{state['step']:07d}.pt"
    if keep > 0:
        atomic_save(state, snapshot)
    atomic_save(state, ckpt_dir / LAST)
    for old in snapshots(ckpt_dir)[:-keep] if keep > 0 else snapshots(ckpt_dir):
        old.unlink(missing_ok=True)
    return ckpt_dir / LAST


def snapshots(ckpt_dir: Path) -> list[Path]:
    """Numbered snapshots in `ckpt_dir`, oldest first."""
    found = [p for p in Path(ckpt_dir).glob("step_*.pt") if _SNAPSHOT.match(p.name)]
    return sorted(found, key=lambda p: int(_SNAPSHOT.match(p.name).group(1)))


# What a checkpoint must hold to give its models (sample, evaluate, audit), and to resume its run.
MODEL_KEYS = ("step", "config", "G", "D", "G_ema")
RESUME_KEYS = MODEL_KEYS + ("opt_g", "opt_d", "sched_g", "sched_d", "rng", "data")


def other_snapshot(path: Path) -> str:
    """What to pass instead of an unusable checkpoint: the newest other checkpoint beside it."""
    path = Path(path)
    others = [p for p in [*reversed(snapshots(path.parent)), path.parent / LAST] if p.is_file() and p != path]
    if others:
        return f"pass another snapshot of the run instead, e.g. {others[0]}"
    return f"no other snapshot is beside it in {path.parent}"


def load(path: Path, map_location="cpu", need: tuple[str, ...] = MODEL_KEYS) -> dict:
    """Read a checkpoint; a missing, truncated or foreign file, or one without the entries `need`
    names, is a UserError naming it and what to pass instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, not a torch file, ...
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"{path} is not a readable checkpoint ({reason}); {other_snapshot(path)}") from None
    return check_state(state, path, need)


def check_state(state, path: Path, need: tuple[str, ...] = MODEL_KEYS) -> dict:
    """`state` (read from `path`) if it is an sngan checkpoint holding the entries `need` names."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an sngan checkpoint; {other_snapshot(path)}")
    missing = [key for key in need if key not in state]
    if not missing and "config" in need and not isinstance(state["config"], dict):
        missing = ["config"]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (a damaged or edited checkpoint); {other_snapshot(path)}")
    return state


def newest_readable(ckpt_dir: Path) -> tuple[Path, int] | None:
    """(path, step) of the newest checkpoint in `ckpt_dir` that loads whole (last.pt first), or None."""
    ckpt_dir = Path(ckpt_dir)
    for path in [ckpt_dir / LAST, *reversed(snapshots(ckpt_dir) if ckpt_dir.is_dir() else [])]:
        if path.is_file():
            try:
                return path, load(path, need=RESUME_KEYS)["step"]
            except UserError:
                continue
    return None


def holds_run(run_dir: Path) -> bool:
    """True when `run_dir` holds a run's checkpoint (last.pt, or a snapshot of a run killed before it)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    return (ckpt_dir / LAST).exists() or bool(ckpt_dir.is_dir() and snapshots(ckpt_dir))


# Config keys a resume may change: they do not change the maths of the run.
RESUMABLE_CHANGES = ("train.steps", "log", "ckpt", "device", "resume", "dataset.num_workers", "dataset.root",
                     "dataset.download", "train.amp", "train.compile", "train.channels_last",
                     "train.cudnn_benchmark", "train.cuda_graph", "train.deterministic")


def locate(target: str | Path) -> Path:
    """The checkpoint a path names: a file itself, or a run folder's checkpoints/last.pt."""
    target = Path(str(target)).expanduser()
    if target.is_file():
        return target
    if target.is_dir():
        ckpt = target / "checkpoints" / LAST if (target / "checkpoints").is_dir() else target / LAST
        if ckpt.is_file():
            return ckpt
        raise UserError(f"no checkpoint in {target} (expected checkpoints/{LAST})")
    if target.exists():
        raise UserError(f"{target} is neither a checkpoint file nor a run folder")
    raise UserError(f"{target} does not exist")


def find_resume_checkpoint(resume, run_dir: Path) -> Path | None:
    """None for a fresh run; else the checkpoint that `resume` names: `true` (this run folder's),
    `auto` (this run folder's if it holds one, else None: a fresh run), a run folder or a file."""
    if resume is False or resume is None or resume == "false":
        return None
    if resume == "auto":
        ckpt_dir = Path(run_dir) / "checkpoints"
        if (ckpt_dir / LAST).exists():
            return ckpt_dir / LAST
        found = snapshots(ckpt_dir) if ckpt_dir.is_dir() else []
        return found[-1] if found else None  # killed between its first snapshot and last.pt
    target = run_dir if resume is True or resume == "true" else resume
    try:
        return locate(target)
    except UserError as e:
        shown = str(resume).lower() if isinstance(resume, bool) else resume
        raise UserError(f"resume={shown}: nothing to resume: {e}; run without resume to start fresh") from None


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between two resolved configs, ignoring RESUMABLE_CHANGES. A key the
    saved config lacks (added since) counts as its default: it is not a difference."""
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in a if not resumable(k, a) and a.get(k) != b.get(k))


def resumable(key: str, saved_flat: dict) -> bool:
    if saved_flat.get("optim.lr_decay") == "linear" and key == "train.steps":
        return False  # the schedule runs to train.steps: part of the maths
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)


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


def resume_config(saved: dict, current: DictConfig, overrides: list[str] | None, source: Path) -> DictConfig:
    """The config a resumed run continues with: the saved run's, plus the resumable keys the command
    line set. A command-line override of any other key that differs from the saved run is refused,
    naming the keys. `overrides` None (a direct caller): every key of `current` counts as set."""
    current_dict = OmegaConf.to_container(current, resolve=True)
    differing = config_differences(saved, current_dict)
    refused = differing if overrides is None else [k for k in differing if _overridden(k, overrides)]
    if refused:
        raise UserError(f"cannot resume {source}: these settings differ from the saved run: {', '.join(refused)} "
                        f"(a resume takes the saved run's config; only {', '.join(RESUMABLE_CHANGES)} may "
                        "change: drop those overrides, or start a new run)")
    # A key added since the checkpoint was written: the run trained as it did before the key existed
    # (its default). Setting it by name on the command line would change the maths unnoticed.
    saved_flat = _flatten(saved)
    if overrides is not None:
        added = [k for k in _flatten(current_dict)
                 if k not in saved_flat and not resumable(k, saved_flat) and _named(k, overrides)]
        if added:
            raise UserError(f"cannot resume {source}: the saved run predates {', '.join(added)} and trained "
                            "without them (as their defaults): drop those overrides, or start a new run")
    # Keys added since the checkpoint was written take today's defaults: fill them in from `current`,
    # except inside a config group that chose another option (its keys are that option's).
    defaults = copy.deepcopy(current_dict)
    for group in ("variant", "dataset", "model", "loss"):
        if isinstance(saved.get(group), dict) and saved[group].get("name") != defaults.get(group, {}).get("name"):
            defaults[group] = {}
    merged = OmegaConf.merge(OmegaConf.create(defaults), saved)
    for key, value in _flatten(current_dict).items():
        if resumable(key, saved_flat) and (overrides is None or _overridden(key, overrides) or key in _THIS_COMMAND):
            OmegaConf.update(merged, key, value, merge=False)
    OmegaConf.set_struct(merged, True)
    return merged


def load_for_resume(path: Path, warn) -> tuple[dict, Path]:
    """Load the checkpoint to resume from; if a damaged last.pt has good snapshots beside it, fall
    back to the newest of them (reported through `warn`). Returns (state, the file it came from)."""
    path = Path(path)
    try:
        return load(path, need=RESUME_KEYS), path
    except UserError as error:
        if path.name != LAST:
            raise
        for snapshot in reversed(snapshots(path.parent)):
            try:
                state = load(snapshot, need=RESUME_KEYS)
            except UserError:
                continue
            warn(f"{error}; resuming from the newest good snapshot {snapshot.name} instead")
            return state, snapshot
        raise
