"""One live training run per work directory.

mmengine lets two runs share a ``work_dir`` and overwrite each other's
checkpoints, config and logs.  :class:`WorkDirLock` refuses that: the run
holds ``<work_dir>/.psbn.lock`` (its pid inside) from start to exit; a lock
whose process is gone is stale and taken over.
"""
from __future__ import annotations

import atexit
import os
from pathlib import Path

from .errors import UserError

LOCK_NAME = '.psbn.lock'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class WorkDirLock:
    """Hold a work directory for this process (a context manager).

    Raises:
        UserError: a live process holds it, naming the pid.
    """

    def __init__(self, work_dir) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a stale lock is removed once, then retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    owner = 0
                if owner and owner != os.getpid() and _alive(owner):
                    raise UserError(
                        f'{self.path.parent} is in use by a live training '
                        f'run (pid {owner}); choose another --work-dir, or '
                        'wait for it to end') from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(f'{os.getpid()}\n')
            self.held = True
            atexit.register(self.release)
            return
        raise UserError(f'{self.path}: cannot take the work dir lock')

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                if self.path.read_text().strip() == str(os.getpid()):
                    self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> 'WorkDirLock':
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
