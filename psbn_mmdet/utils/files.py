"""All of a tool's outputs or none: write beside, then rename into place."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import UserError


def check_writable(path, is_dir: bool = False) -> None:
    """Fail now, before any work, if ``path`` cannot be written later."""
    path = Path(path)
    if path.exists() and path.is_dir() != is_dir:
        raise UserError(f'{path}: {"not" if is_dir else "is"} a directory')
    if path.exists() and not is_dir and not path.is_file():
        raise UserError(f'{path}: not a regular file')
    existing = path if path.exists() else next(
        p for p in path.absolute().parents if p.exists())
    if not existing.is_dir() and existing != path:
        raise UserError(f'{path}: {existing} is not a directory')
    if not os.access(existing if existing.is_dir() else existing.parent,
                     os.W_OK):
        raise UserError(f'{path}: cannot write there')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(files: Mapping[str | Path, bytes]) -> None:
    """Write every ``{path: content}``, or none of them.

    Each file is written and flushed to a temporary name in its own
    directory, and only when all are complete are they renamed into place;
    on any error the temporaries are removed and nothing is replaced.  The
    files get the mode an ``open(path, 'w')`` would give them (0644 under
    the usual umask), not the temporary's private 0600.

    Raises:
        UserError: a target is not a regular file, or a write failed (a full
            disk, a read-only directory), naming the path and the reason.
    """
    staged: list[tuple[str, Path]] = []
    created: list[Path] = []  # directories made here, removed on failure
    mode = 0o666 & ~_umask()
    try:
        for path, content in files.items():
            path = Path(path)
            check_writable(path)
            missing = [p for p in path.parents if not p.exists()]
            for directory in reversed(missing):
                directory.mkdir()
                created.append(directory)
            fd, tmp = tempfile.mkstemp(dir=path.parent,
                                       prefix=f'.{path.name}.', suffix='.tmp')
            staged.append((tmp, path))
            os.fchmod(fd, mode)
            with os.fdopen(fd, 'wb') as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
        staged.clear()
        created.clear()
    except OSError as error:
        raise UserError(f'cannot write {error.filename or path}: '
                        f'{error.strerror}') from None
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
