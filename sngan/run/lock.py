"""One trainer per run folder: an OS file lock (flock) on the run folder itself, held while the run
trains and released by the kernel when the process ends, however it ends: never a stale marker.

The lock is taken on the folder, not on a file in it, so that taking it writes nothing: a command
that is refused leaves the folder as it was. The holder's pid comes from /proc/locks.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sngan.run.errors import UserError

log = logging.getLogger("sngan.train")


class RunInUse(UserError):
    """Another process holds the run folder: the refused command leaves it, and its records, alone."""


def _holder(fd: int) -> str:
    """The pid holding a flock on the file `fd` refers to (Linux /proc/locks), or 'unknown'."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
                    return fields[4]
    except OSError:
        pass
    return "unknown"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock; a second holder fails at once, naming the first one's pid."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunInUse(f"{run_dir} is in use by another trainer (pid {holder}): wait for it to end, "
                       "or stop it, before starting another on this folder") from None
    except OSError as e:  # a file system without flock (NFS mounted nolock, Lustre noflock): train unguarded
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        log.warning("cannot lock %s (%s): nothing stops a second trainer on this folder", run_dir, e.strerror)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock
