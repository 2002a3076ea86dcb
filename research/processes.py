"""Training processes of the research studies: one ``tools/train.py`` run."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from psbn_mmdet.utils import UserError

REPO = Path(__file__).resolve().parents[1]


def log_path(work_dir: Path) -> Path:
    """Where :func:`train_process` writes a run's output: beside its work dir
    (``w0.5_x`` -> ``w0.5_x.log``; a dot in the name is kept)."""
    return work_dir.parent / f'{work_dir.name}.log'


def train_process(config: str, work_dir: Path, options: list[str],
                  threads: int = 1) -> float:
    """Train ``config`` (relative to the repository) into ``work_dir`` with
    ``--cfg-options options`` in a ``tools/train.py`` process on
    ``threads`` torch threads; its wall seconds.  Research configs import
    ``research.*`` (``custom_imports``), hence the repository on the path."""
    command = [sys.executable, str(REPO / 'tools' / 'train.py'),
               str(REPO / config), '--work-dir', str(work_dir)]
    if options:
        command += ['--cfg-options', *options]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(
                   [str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])]))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path(work_dir), 'w') as log:
        done = subprocess.run(command, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise UserError(f'training failed: {shlex.join(command)} (log: '
                        f'{log_path(work_dir)})')
    return time.perf_counter() - started


def in_pool(items: list, work, processes: int, finished=None) -> list:
    """``work(item)`` for every item, ``processes`` at a time (threads that
    wait on training processes); ``finished(count, item, value)`` runs under
    one lock as each item finishes (``count``: how many have); returns the
    values in item order and raises the first failure in that order."""
    lock, count = threading.Lock(), 0

    def one(item):
        nonlocal count
        value = work(item)
        with lock:
            count += 1
            if finished is not None:
                finished(count, item, value)
        return value

    with ThreadPoolExecutor(processes) as pool:
        return list(pool.map(one, items))
