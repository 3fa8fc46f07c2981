"""User-facing errors: the command-line entry points print these as one line, with no traceback."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """A mistake in the user's input (config value, path, missing data) with a message that says what to do."""


class RunDiverged(Exception):
    """Training produced a non-finite loss; the run stops and keeps its last good checkpoint."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


# The errors of a file system that takes no more writes: full, over quota, read-only.
_WRITE_ERRNOS = {errno.ENOSPC: "free space on that file system",
                 errno.EDQUOT: "free space within your quota",
                 errno.EFBIG: "free space on that file system",
                 errno.EROFS: "make the file system writable"}


def is_write_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _WRITE_ERRNOS


def write_error_fix(error: OSError) -> str:
    """What to do about a write error, in a few words."""
    return _WRITE_ERRNOS.get(error.errno, "check the file system")


def describe_os_error(error: OSError) -> str:
    """`PATH (reason)` on one line."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{error.filename} ({reason})" if error.filename else reason


def unreadable(path, error: OSError) -> UserError:
    """A file that exists but cannot be opened (permissions, an I/O error): the file may be fine."""
    return UserError(f"{path} cannot be read ({error.strerror or type(error).__name__}): fix its permissions "
                     "(or copy it somewhere readable) and run the command again")


# What torch's allocators say when an allocation fails: CPU ("DefaultCPUAllocator: can't allocate
# memory"), CUDA and MPS ("... out of memory"), C++'s bad_alloc. Nothing broader: NCCL's socket and
# malloc failures, say, are not the user's sizes.
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "bad_alloc")


def is_out_of_memory(error: BaseException) -> bool:
    """A failed allocation, of host or device memory (torch raises RuntimeErrors that say so)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in text for words in _OUT_OF_MEMORY)


def out_of_memory(error: BaseException, what: str, fix: str) -> UserError:
    """`what` did not fit in memory: the allocator's words, shortened, and what to do."""
    return UserError(f"{what} do not fit in memory ({' '.join(str(error).split())[:120]}); {fix}")


@contextmanager
def fits_in_memory(what: str, fix: str) -> Iterator[None]:
    """A failed allocation inside the block is the user's sizes: a UserError naming `what` and `fix`."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise out_of_memory(e, what, fix) from None
