"""The work-dir lock: one holder at a time, whatever the processes do.

Real processes race for it (the kernel's flock is what is tested), one holds
it from another PID namespace, and what is left on disk never blocks a run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from psbn_mmdet.utils.errors import UserError
from psbn_mmdet.utils.workdir import LOCK_NAME, WorkDirLock

#: a process that tries the lock in each trial (all start together) and
#: records when it held it
RACER = '''
import json, sys, time
from psbn_mmdet.utils.errors import UserError
from psbn_mmdet.utils.workdir import WorkDirLock
work_dir, start, trials, period, stale = sys.argv[1:6]
start, trials, period = float(start), int(trials), float(period)
held, refused = [], 0
for trial in range(trials):
    at = start + trial * period
    time.sleep(max(0.0, at - 0.02 - time.time()))
    while time.time() < at:  # spin: every racer tries at the same moment
        pass
    lock = WorkDirLock(work_dir)
    try:
        lock.acquire()
    except UserError:
        refused += 1
        continue
    began = time.time()
    time.sleep(period / 4)
    held.append([trial, began, time.time()])
    lock.release()
    if stale == '1':  # what a killed run leaves: a file naming a dead pid
        with open(lock.path, 'w') as f:
            f.write('pid 999999 on nowhere\\n')
print(json.dumps([held, refused]))
'''


@pytest.mark.slow
@pytest.mark.parametrize('stale', ['0', '1'], ids=['clean', 'stale-file'])
def test_racing_processes_never_hold_it_together(tmp_path, stale):
    trials, period, racers = 60, 0.12, 4
    start = time.time() + 3.0  # after every interpreter has started
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen(
        [sys.executable, '-c', RACER, str(tmp_path), str(start), str(trials),
         str(period), stale], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(racers)]
    spans, refusals = [], 0
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        held, refused = json.loads(out)
        spans += held
        refusals += refused
    spans.sort(key=lambda span: span[1])
    overlapping = [(a, b) for a, b in zip(spans, spans[1:]) if b[1] < a[2]]
    assert not overlapping, f'{len(overlapping)} trials with two holders'
    # the race was run: held in many trials, refused in many
    assert len({span[0] for span in spans}) >= 5 and refusals > 0


def test_a_second_holder_is_refused_naming_the_holder_and_the_file(tmp_path):
    with WorkDirLock(tmp_path):
        with pytest.raises(UserError) as refused:
            WorkDirLock(tmp_path).acquire()
    message = str(refused.value)
    assert f'pid {os.getpid()} on ' in message
    assert str(tmp_path / LOCK_NAME) in message
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed


def test_a_file_left_by_a_dead_or_reused_pid_never_blocks(tmp_path):
    """No pid guessing: what matters is the kernel's lock, not the text."""
    for text in ('1\n', 'pid 1 on this-host\n', '', 'garbage'):
        (tmp_path / LOCK_NAME).write_text(text)
        with WorkDirLock(tmp_path) as lock:
            assert lock.held


def test_a_lock_path_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(UserError, match='is a directory, not a lock file; '
                       'remove it'):
        WorkDirLock(tmp_path).acquire()


def test_a_work_dir_that_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    with pytest.raises(UserError, match='not a directory'):
        WorkDirLock(afile).acquire()


def test_a_holder_that_has_not_written_its_pid_yet_keeps_it(tmp_path):
    """The moment between taking the lock and writing who holds it: the
    file is empty, and the holder keeps the lock all the same."""
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        f'fd = os.open({str(tmp_path / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n'
        'fcntl.flock(fd, fcntl.LOCK_EX)\n'
        'print("held", flush=True)\n'
        'time.sleep(30)\n')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert (tmp_path / LOCK_NAME).read_text() == ''
        with pytest.raises(UserError, match='holder unknown'):
            WorkDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


TRY = """
import sys
from psbn_mmdet.utils.errors import UserError
from psbn_mmdet.utils.workdir import WorkDirLock
try:
    WorkDirLock(sys.argv[1]).acquire()
    print('acquired')
except UserError as error:
    print('refused:', error)
"""


def _unshare() -> list[str]:
    """``unshare`` into a new PID namespace, or skip."""
    unshare = shutil.which('unshare')
    command = [unshare or 'unshare', '--pid', '--fork', '--kill-child',
               '--mount-proc']
    probe = subprocess.run(command + ['true'], capture_output=True)
    if unshare is None or probe.returncode != 0:
        pytest.skip('cannot create a PID namespace here (unshare: '
                    f'{probe.stderr.decode().strip() or "not found"})')
    return command


@pytest.mark.slow
def test_a_run_in_another_pid_namespace_is_refused(tmp_path):
    """Our pid does not exist in its namespace: it must not take the lock
    for a stale one."""
    command = _unshare()
    with WorkDirLock(tmp_path):
        inside = subprocess.run(command + [sys.executable, '-c', TRY,
                                           str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.startswith('refused:'), inside.stdout
        assert f'pid {os.getpid()} on ' in inside.stdout


HOLDER = '''
import sys, time
from psbn_mmdet.utils.workdir import WorkDirLock
lock = WorkDirLock(sys.argv[1])
lock.acquire()
print('held', flush=True)
time.sleep(float(sys.argv[2]))
'''


@pytest.mark.slow
def test_a_holder_in_another_pid_namespace_keeps_it(tmp_path):
    """Its pid means nothing here (1 in its namespace); the lock still
    holds, and is free once that process is gone."""
    holder = subprocess.Popen(
        _unshare() + [sys.executable, '-c', HOLDER, str(tmp_path), '30'],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert 'pid 1 on ' in (tmp_path / LOCK_NAME).read_text()
        with pytest.raises(UserError, match='in use by a live training run'):
            WorkDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while True:  # the namespace's processes end with its init
        try:
            with WorkDirLock(tmp_path) as lock:
                assert lock.held
            break
        except UserError:
            assert time.time() < deadline
            time.sleep(0.2)
