"""Checkpoints: atomic writes, numbered snapshots, and everything an exact resume needs.

A checkpoint is a plain dict: step, models (G, D with every variant's buffers, G EMA), both
optimizers and LR schedulers, RNG states (python, numpy, torch CPU and CUDA), the data position
and the resolved config. It is written to a temporary file in the same folder, flushed and
fsynced, then moved over the target with os.replace, so a kill at any instant leaves either the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from sngan.config import check_saved_config, upgrade
from sngan.run.info import restart_command
from sngan.run.errors import UserError, unreadable

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


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind `error`: itself, or the one torch's zip writer hides behind a RuntimeError
    ("unexpected pos ...") when a write into it fails, e.g. on a full disk."""
    seen = error if isinstance(error, Exception) else None  # Ctrl-C stays Ctrl-C
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
        cause = _os_error(e)
        if cause is not None and (cause is not e or not e.filename):  # a write into the open file names no path
            raise OSError(cause.errno, cause.strerror, str(path)) from e
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
    """Write `last.pt`, then a numbered snapshot `step_<N>.pt`, keeping the newest `keep` snapshots.
    last.pt first: a kill or a full disk between the two writes leaves last.pt the newest state."""
    ckpt_dir = Path(ckpt_dir)
    for stale in [*ckpt_dir.glob(f".{LAST}.*.tmp"), *ckpt_dir.glob(".step_*.pt.*.tmp")]:  # a killed save's
        stale.unlink(missing_ok=True)
    state = {"format": FORMAT, **state}
    atomic_save(state, ckpt_dir / LAST)
    if keep > 0:
        atomic_save(state, ckpt_dir / f"step_{state['step']:07d}.pt")
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
ADDED_SINCE = "config_keys_added_since"  # set on reading: the config keys the file predates


def other_snapshot(path: Path, need: tuple[str, ...] = MODEL_KEYS) -> str:
    """What to pass instead of an unusable checkpoint: the newest other checkpoint beside it that
    reads back whole, or, with none, that the run must start again and the command that does it."""
    path = Path(path)
    for other in [*reversed(snapshots(path.parent)), path.parent / LAST]:
        if other != path and other.is_file() and _usable(other, need):
            return f"pass another snapshot of the run instead, e.g. {other}"
    if path.parent.name != "checkpoints":  # not a run's file: nothing says a run was lost
        return (f"no readable snapshot is beside it in {path.parent}: pass a run folder, or a checkpoint that "
                "sngan.train wrote (in a run's checkpoints/)")
    return (f"no readable snapshot is beside it in {path.parent}: the run must start again, e.g. "
            f"{restart_command(path.parent.parent)}")


def _usable(path: Path, need: tuple[str, ...]) -> bool:
    """`path` reads back as an sngan checkpoint holding `need` (quietly: a refusal's suggestion)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return (isinstance(state, dict) and state.get("format") == FORMAT and all(key in state for key in need)
            and isinstance(state.get("config"), dict))


def load(path: Path, map_location="cpu", need: tuple[str, ...] = MODEL_KEYS) -> dict:
    """Read a checkpoint; a missing, truncated or foreign file, or one without the entries `need`
    names, is a UserError naming it and what to pass instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; give a run folder, or a .pt file in its checkpoints/")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except OSError as e:  # permissions, an I/O error: not a damaged file
        raise unreadable(path, e) from None
    except Exception as e:  # truncated zip, not a torch file, ...
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"{path} is not a readable checkpoint ({reason}); {other_snapshot(path, need)}") from None
    return check_state(state, path, need)


def check_state(state, path: Path, need: tuple[str, ...] = MODEL_KEYS) -> dict:
    """`state` (read from `path`) if it is an sngan checkpoint holding the entries `need` names."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an sngan checkpoint; {other_snapshot(path, need)}")
    missing = [key for key in need if key not in state]
    if not missing and "config" in need and not isinstance(state["config"], dict):
        missing = ["config"]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (a damaged or edited checkpoint); {other_snapshot(path, need)}")
    if isinstance(state.get("config"), dict):
        if "config" in need:
            check_saved_config(state["config"], path, other_snapshot(path, need))
        state[ADDED_SINCE] = upgrade(state["config"])  # keys added since it was written, as their absence meant
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


def run_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint a run's `checkpoints/` folder continues from: last.pt, else its newest snapshot
    (last.pt deleted, or a run of an earlier version, which wrote the snapshot first, killed between
    the two), else None."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / LAST).is_file():
        return ckpt_dir / LAST
    found = snapshots(ckpt_dir) if ckpt_dir.is_dir() else []
    return found[-1] if found else None


def holds_run(run_dir: Path) -> bool:
    """True when `run_dir` holds a run's checkpoint (last.pt or a snapshot)."""
    return run_checkpoint(Path(run_dir) / "checkpoints") is not None


def locate(target: str | Path, arg: str = "ckpt=") -> Path:
    """The checkpoint a path names: a file itself, or a run folder's (run_checkpoint). `arg`: how
    the command takes the path (`ckpt=`, `resume=`, `--ckpt`), for the refusal's next step."""
    target = Path(str(target)).expanduser()
    if target.is_file():
        return target
    takes = f"{arg} takes a run folder (one holding checkpoints/{LAST}) or a checkpoint file"
    if target.is_dir():
        ckpt = run_checkpoint(target / "checkpoints" if (target / "checkpoints").is_dir() else target)
        if ckpt is not None:
            return ckpt
        runs = sorted(found.parent.parent for found in target.glob(f"*/checkpoints/{LAST}"))
        if runs:  # a sweep's folder: its jobs are the runs
            given = f"{arg}{runs[0]}" if arg.endswith("=") else f"{arg} {runs[0]}"
            raise UserError(f"no checkpoint in {target} itself, but {len(runs)} run folder(s) below it: pass one, "
                            f"e.g. {given}")
        raise UserError(f"no checkpoint in {target} (expected checkpoints/{LAST}); {takes}")
    if target.exists():
        raise UserError(f"{target} is neither a checkpoint file nor a run folder; {takes}")
    raise UserError(f"{target} does not exist; {takes}")


