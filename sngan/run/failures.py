"""A run that cannot write (a full or read-only disk) ends in one line saying what is kept and
what to do; the writer threads' own tracebacks would only repeat it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sngan.run import checkpoint
from sngan.run.errors import UserError, describe_os_error, is_write_error, write_error_fix


def write_failure(error: OSError, run_dir: Path) -> UserError:
    """A full or read-only file system during a run, as one line saying what is kept and what to do."""
    found = checkpoint.newest_readable(run_dir / "checkpoints")  # named only once read back whole
    if found is None:
        kept, then = "no checkpoint was written yet", "then start the run again"
    else:
        kept, then = (f"the last checkpoint {found[0]} (step {found[1]}) is intact",
                      f"then continue with resume=true hydra.run.dir={run_dir}")
    # A writer that names no file (TensorBoard's thread, the log): the run folder is what filled up.
    what = describe_os_error(error) if error.filename else f"into {run_dir} ({describe_os_error(error)})"
    return UserError(f"cannot write {what}; {kept}: {write_error_fix(error)}, {then}")


def quiet_write_errors_in_threads() -> None:
    """A full disk seen by TensorBoard's writer thread comes back in the main thread, where it
    becomes the run's one-line error; the thread's own traceback would only repeat it. The same for
    a log file that takes no more lines (logging would print a traceback per line)."""
    default = threading.excepthook

    def hook(args) -> None:
        if not is_write_error(args.exc_value):
            default(args)
    threading.excepthook = hook
    logging.raiseExceptions = False
