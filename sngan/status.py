"""`status.json`: a run's outcome, where a sweep's report can read it.

Inside a Hydra multirun a job has no exit code of its own, so every job records how it ended:
`ok` (with its final step), `diverged` (a non-finite loss, with the step), or `failed` (with the
one-line reason). The file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

STATUS_FILE = "status.json"


def write_status(run_dir: Path, status: str, **details) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{STATUS_FILE}.", suffix=".tmp", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"status": status, **details}, f, indent=1)
            f.write("\n")
        os.replace(tmp, run_dir / STATUS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(run_dir: Path) -> dict | None:
    """The recorded outcome, or None when the run wrote none (still running, killed, or older)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
