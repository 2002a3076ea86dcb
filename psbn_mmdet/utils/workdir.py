"""One live training run per work directory.

mmengine lets two runs share a ``work_dir`` and overwrite each other's
checkpoints, config and logs.  :class:`WorkDirLock` refuses that: the run
holds an exclusive ``flock`` on ``<work_dir>/.psbn.lock`` from start to exit.
The kernel releases the lock when the process ends, however it ends, so a
lock is never stale and no pid is guessed: the pid and host written inside
only say, in the message, who holds it.  ``flock`` works across PID
namespaces (containers) on one kernel; on NFS, Linux maps it to POSIX locks
(lockd).  A file system that cannot lock is said so, not silently ignored.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from .errors import UserError

LOCK_NAME = '.psbn.lock'


class WorkDirLock:
    """Hold a work directory for this process (a context manager).

    Raises:
        UserError: another run holds it (its pid and host named, and the
            lock file), the lock file cannot be created, or the file system
            cannot lock.
    """

    def __init__(self, work_dir) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        directory = self.path.parent
        if directory.exists() and not directory.is_dir():
            raise UserError(f'{directory}: not a directory (the work dir)')
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f'cannot create the work dir {directory}: '
                            f'{error.strerror}') from None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise UserError(
                        f'{directory} is in use by a live training run '
                        f'({self._holder()}; lock {self.path}); choose another '
                        'work dir, or wait for it to end') from None
                raise UserError(f'{self.path}: the file system cannot lock '
                                f'({error.strerror}); use a work dir on a '
                                'local file system') from None
            # The holder before us may have removed the file at release
            # after we opened it: then we locked a file nobody else sees.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'
                 .encode())
        self.fd = fd

    def _open(self) -> int:
        if self.path.is_dir():
            raise UserError(f'{self.path} is a directory, not a lock file; '
                            'remove it')
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f'{self.path}: cannot create the lock file '
                            f'({error.strerror})') from None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or 'holder unknown'
        except OSError:
            return 'holder unknown'

    def release(self) -> None:
        """Remove the lock file, then release the lock (a rival that opened
        the file before it was removed sees that, and retries)."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> 'WorkDirLock':
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
