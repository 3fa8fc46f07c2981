"""Output paths, checked before any work: a folder that can be created and written in, a file
that can be written. Each refusal is one line naming the setting, the path and what to do."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sngan.run.errors import UserError, describe_os_error


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` (or `path` itself) when it is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _create_and_probe(folder: Path) -> None:
    """Create `folder` if needed and prove it takes a file (one created and removed at once); an
    OSError names the folder, not the probe."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)


def writable_folder(path, key: str) -> Path:
    """`path` as a folder that exists (created if needed) and takes files."""
    path = Path(str(path)).expanduser()
    blocker = _file_above(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"lies under the file {blocker}"
        raise UserError(f"{key}={path} {where}, not a folder; choose another {key}")
    try:
        _create_and_probe(path)
    except OSError as e:
        raise UserError(f"{key}={path} cannot be written: {describe_os_error(e)}; choose a writable {key}") from None
    return path


def writable_file(path, key: str) -> Path:
    """`path` as a file that can be written: not a folder, in a folder that takes files."""
    path = Path(str(path)).expanduser()
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder; name a file there instead (e.g. {key}={path / 'out.png'})")
    blocker = _file_above(path.parent)
    if blocker is not None:
        raise UserError(f"{key}={path} lies under the file {blocker}, not a folder; choose another {key}")
    try:
        _create_and_probe(path.parent)
    except OSError as e:
        raise UserError(f"{key}={path} cannot be written: {describe_os_error(e)}; choose a writable {key}") from None
    return path
