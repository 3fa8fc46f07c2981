"""`status.json`: a run's outcome, where a sweep's report can read it.

Inside a Hydra multirun a job has no exit code of its own, so every job records how it ended:
`ok` (with its final step), `diverged` (a non-finite loss, with the step), or `failed` (with the
one-line reason). The file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sngan.run.checkpoint import atomic_write_text

STATUS_FILE = "status.json"


def write_status(run_dir: Path, status: str, **details) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / STATUS_FILE, json.dumps({"status": status, **details}, indent=1) + "\n")


def clear_status(run_dir: Path) -> None:
    """A run starts or resumes: until it ends, its outcome is what its logs say."""
    (Path(run_dir) / STATUS_FILE).unlink(missing_ok=True)


def read_status(run_dir: Path) -> dict | None:
    """The recorded outcome, or None when the run wrote none (still running, killed, or older)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
