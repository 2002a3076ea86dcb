"""tools/slurm_train.sh and tools/slurm_test.sh through a real Slurm.

``tools/slurm_local.sh`` starts a one-node cluster on the loopback (munged,
slurmctld, slurmd; 2 CPUs; no cgroups) in a temporary directory; the demo
detector trains with 2 tasks on CPU (``--launcher slurm``, gloo), resumes,
is evaluated, and a job with a failing task is ended by ``--kill-on-bad-exit``.
``make test`` installs Slurm first (``tools/slurm_local.sh install``: Debian's
packages, needs root and apt-get); where that was not possible the Slurm tests
are skipped with the missing piece named.

``tests/cli/slurm_probe.py`` is the hook the tasks load to record what each rank
decided.  The argument handling of the scripts is tested without Slurm, with a
stand-in ``srun`` that prints its arguments.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / 'tests' / 'cli'
SLURM_LOCAL = REPO / 'tools' / 'slurm_local.sh'
SLURM_TRAIN = REPO / 'tools' / 'slurm_train.sh'
SLURM_TEST = REPO / 'tools' / 'slurm_test.sh'
SLURM_SRUN = REPO / 'tools' / 'slurm_srun.sh'
#: the demo detector the Slurm jobs train, from random init, with psBN (not
#: psSyncBN: torch's SyncBatchNorm refuses CPU tensors when it must
#: synchronize processes)
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'faster_rcnn_r18_demo_bn_pretrain.py'
PARTITION = 'psbn-test'
TASKS = 2
SLURM_COMMANDS = ('munged', 'mungekey', 'slurmctld', 'slurmd', 'srun',
                  'scontrol', 'sinfo', 'squeue', 'scancel')
#: variables of an enclosing job or launcher that would redirect the tasks
FOREIGN_ENV = re.compile(
    r'^(SLURM_.*|SRUN_.*|SBATCH_.*|RANK|WORLD_SIZE|LOCAL_RANK|MASTER_ADDR|'
    r'MASTER_PORT|GPUS|GPUS_PER_NODE|TASKS_PER_NODE|CPUS_PER_TASK|'
    r'OMP_NUM_THREADS|PSBN_.*)$')

PROBE_CONFIG = f"""\
_base_ = {str(DEMO_CONFIG)!r}
custom_imports = dict(imports=['psbn_mmdet', 'slurm_probe'],
                      allow_failed_imports=False)
model = dict(backbone=dict(norm_cfg=dict(type='psBN', requires_grad=True),
                           frozen_stages=-1, norm_eval=False))
# a window of 2 iterations: psBN decides at iterations 2 and 4
custom_hooks = [dict(type='PostShiftHook', interval=1, window=2),
                dict(type='SlurmProbeHook')]
train_cfg = dict(max_iters=2, val_interval=2, val_begin=1000)
train_dataloader = dict(batch_size=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
# per-rank seeds (0 and 1), as many mmdet configs set them: psBN's fresh
# filters must still be drawn alike on every rank
randomness = dict(seed=0, diff_rank_seed=True)
"""


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not FOREIGN_ENV.match(k)}
    env.update(extra)
    return env


def _free_port(pair: bool = False) -> int:
    """A free TCP port on the loopback (with pair: the next one is free too)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(('127.0.0.1', 0))
            port = first.getsockname()[1]
            if not pair:
                return port
            try:
                second.bind(('127.0.0.1', port + 1))
            except (OSError, OverflowError):
                continue
            return port
    raise RuntimeError('no two free ports in a row on 127.0.0.1')


def _cluster_processes(state: Path) -> list[int]:
    """Pids of Slurm/munge daemons and step daemons of the cluster in state."""
    conf = f'SLURM_CONF={state}/slurm.conf'.encode()
    socket_arg = f'--socket={state}/munge/munge.socket'.encode()
    pids = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / 'comm').read_text().strip()
            if comm in ('slurmctld', 'slurmd', 'slurmstepd'):
                found = conf in (proc / 'environ').read_bytes().split(b'\0')
            elif comm == 'munged':
                found = socket_arg in (proc / 'cmdline').read_bytes().split(
                    b'\0')
            else:
                continue
        except OSError:
            continue
        if found:
            pids.append(int(proc.name))
    return pids


class Cluster:

    def __init__(self, state: Path, env: dict, start_s: float) -> None:
        self.state, self.env, self.start_s = state, env, start_s

    def run(self, *args, timeout=60, **extra_env):
        return subprocess.run([str(a) for a in args],
                              env=dict(self.env, **extra_env),
                              capture_output=True, text=True, timeout=timeout)

    def local(self, command: str):
        return self.run('bash', SLURM_LOCAL, command, timeout=120)

    def pids(self) -> dict:
        return {name: (self.state / f'{name}.pid').read_text().strip()
                for name in ('munged', 'slurmctld', 'slurmd')}


@pytest.fixture(scope='module')
def cluster():
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        pytest.skip(f'Slurm is not installed (missing: {" ".join(missing)}); '
                    '`make slurm` or `bash tools/slurm_local.sh install` '
                    'installs it (needs root and apt-get)')
    if os.geteuid() != 0:
        pytest.skip('not root: slurmd and munged of the test cluster run as '
                    'root')
    state = Path(tempfile.mkdtemp(prefix='psbn-slurm-'))
    state.chmod(0o755)  # munged wants its socket's directories searchable
    env = _clean_env(PSBN_SLURM_DIR=str(state),
                     PSBN_SLURM_PORT=str(_free_port(pair=True)),
                     PSBN_SLURM_PARTITION=PARTITION,
                     SLURM_CONF=str(state / 'slurm.conf'))
    started = time.monotonic()
    cluster = Cluster(state, env, 0.0)
    result = cluster.local('start')
    cluster.start_s = time.monotonic() - started
    try:
        assert result.returncode == 0, (
            f'the test cluster did not start:\n{result.stderr}')
        yield cluster
    finally:
        result = cluster.local('stop')
        left = _cluster_processes(state)
        shutil.rmtree(state, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert left == [], f'processes left after stop: {left}'


@pytest.fixture(scope='module')
def slurm_ws(tmp_path_factory) -> Path:
    """Demo data, the probe config and output folders, in a path with spaces."""
    ws = tmp_path_factory.mktemp('slurm ws')
    made = subprocess.run(
        [sys.executable, REPO / 'tools' / 'make_demo_data.py',
         '--out-dir', ws / 'data' / 'demo', '--num-train', '8',
         '--num-val', '4'],
        cwd=ws, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert made.returncode == 0, made.stderr
    (ws / 'psbn probe.py').write_text(PROBE_CONFIG)
    (ws / 'probe').mkdir()
    return ws


def _job(cluster: Cluster, ws: Path, script: Path, *args, tag: str,
         timeout: float = 600, **extra_env):
    """Run a Slurm script from ws; returns (result, wall seconds)."""
    env = dict(cluster.env, PYTHON=sys.executable, PYTHONPATH=str(TESTS),
               GPUS=str(TASKS), GPUS_PER_NODE='0', CPUS_PER_TASK='1',
               MASTER_PORT=str(_free_port()), PSBN_PROBE_DIR=str(ws / 'probe'),
               PSBN_PROBE_TAG=tag, **extra_env)
    started = time.monotonic()
    result = subprocess.run(['bash', script, PARTITION, f'psbn-{tag}',
                             *map(str, args)], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def _output(result) -> str:
    return f'{result.stdout}\n{result.stderr}'


def _tail(result, lines: int = 40) -> str:
    return '\n'.join(_output(result).splitlines()[-lines:])


def _probes(ws: Path, tag: str) -> list[dict]:
    return [torch.load(ws / 'probe' / f'{tag}-rank{rank}.pt',
                       weights_only=False) for rank in range(TASKS)]


def _exit_states(ws: Path, tag: str) -> list[str]:
    """What each task's process group was at exit (tests/cli/slurm_probe.py)."""
    return [(ws / 'probe' / f'{tag}-rank{rank}.exit').read_text()
            for rank in range(TASKS)]


def _assert_same_decisions(records: list[dict]) -> None:
    first, *others = records
    for other in others:
        assert [w['step'] for w in other['windows']] == \
            [w['step'] for w in first['windows']]
        for mine, theirs in zip(first['windows'], other['windows']):
            assert mine['dead'].keys() == theirs['dead'].keys()
            for name, dead in mine['dead'].items():
                assert torch.equal(dead, theirs['dead'][name]), (
                    f'step {mine["step"]}: ranks disagree on {name}')
        assert first['shift_counts'].keys() == other['shift_counts'].keys()
        for name, counts in first['shift_counts'].items():
            assert torch.equal(counts, other['shift_counts'][name]), name
        for name, (weight, bias) in first['bn'].items():
            assert torch.equal(weight, other['bn'][name][0]), name
            assert torch.equal(bias, other['bn'][name][1]), name
        assert first['params'].keys() == other['params'].keys()
        for name, value in first['params'].items():
            assert torch.equal(value, other['params'][name]), (
                f'ranks differ in {name}')


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def trained(cluster, slurm_ws):
    result, wall = _job(cluster, slurm_ws, SLURM_TRAIN,
                        slurm_ws / 'psbn probe.py', slurm_ws / 'work dir',
                        tag='train')
    assert result.returncode == 0, _tail(result)
    return result, wall


@pytest.fixture(scope='module')
def resumed(cluster, slurm_ws, trained):
    result, wall = _job(cluster, slurm_ws, SLURM_TRAIN,
                        slurm_ws / 'psbn probe.py', slurm_ws / 'work dir',
                        '--resume', '--cfg-options', 'train_cfg.max_iters=4',
                        tag='resume')
    assert result.returncode == 0, _tail(result)
    return result, wall


# ------------------------------------------------------- scripts, no Slurm
@pytest.fixture
def fake_srun(tmp_path) -> dict:
    """PATH with an ``srun`` that prints one argument per line."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n'
                    'echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"\n')
    srun.chmod(0o755)
    return _clean_env(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')


@pytest.mark.parametrize('script, usage', [
    (SLURM_TRAIN, 'PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]'),
    (SLURM_TEST, 'PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]'),
    (SLURM_SRUN, 'PARTITION JOB_NAME TOOL.py [tool args]'),
    (SLURM_LOCAL, 'install|start|stop|status|env')])
def test_scripts_without_arguments_print_one_usage_line(script, usage):
    result = subprocess.run(['bash', script], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ''
    assert result.stderr.count('\n') == 1
    assert 'error: usage: ' in result.stderr
    assert f'{script.name} {usage}' in result.stderr


def _srun_args(env, script, *args, **variables):
    result = subprocess.run(['bash', script, *args], capture_output=True,
                            text=True, env=dict(env, **variables))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_gpu_partition_keeps_mmdet_arguments(fake_srun):
    args = _srun_args(fake_srun, SLURM_TRAIN, 'gpu', 'job', 'cfg.py', 'wd',
                      '--amp')
    assert args[:2] == ['-p', 'gpu']
    assert args[2:8] == ['--job-name=job', '--ntasks=8', '--cpus-per-task=5',
                         '--gres=gpu:8', '--ntasks-per-node=8',
                         '--kill-on-bad-exit=1']
    assert args[8:] == ['python', '-u', str(SLURM_TRAIN.parent / 'train.py'),
                        'cfg.py', '--work-dir=wd', '--launcher=slurm',
                        '--amp', 'OMP_NUM_THREADS=unset']
    args = _srun_args(fake_srun, SLURM_TEST, 'gpu', 'job', 'cfg.py', 'x.pth',
                      GPUS='16', GPUS_PER_NODE='4', CPUS_PER_TASK='2')
    assert '--gres=gpu:4' in args and '--ntasks=16' in args
    assert '--ntasks-per-node=4' in args and '--cpus-per-task=2' in args
    assert args[args.index('-u') + 1:] == [
        str(SLURM_TEST.parent / 'test.py'), 'cfg.py', 'x.pth',
        '--launcher=slurm', 'OMP_NUM_THREADS=unset']


def test_cpu_partition_paths_with_spaces_and_srun_args(fake_srun):
    args = _srun_args(fake_srun, SLURM_TRAIN, 'my cpu', 'a job', 'my cfg.py',
                      'work dir', '--cfg-options', 'a=b c', GPUS='2',
                      GPUS_PER_NODE='0', CPUS_PER_TASK='1',
                      SRUN_ARGS='--time=5  --exclusive', PYTHON='/x y/python')
    assert not any(a.startswith('--gres') for a in args)
    assert not any(a.startswith('--ntasks-per-node') for a in args)
    assert args[:2] == ['-p', 'my cpu'] and '--job-name=a job' in args
    assert '--time=5' in args and '--exclusive' in args
    assert args[args.index('/x y/python'):] == [
        '/x y/python', '-u', str(SLURM_TRAIN.parent / 'train.py'),
        'my cfg.py', '--work-dir=work dir', '--launcher=slurm',
        '--cfg-options', 'a=b c', 'OMP_NUM_THREADS=1']
    args = _srun_args(fake_srun, SLURM_TRAIN, 'cpu', 'j', 'c.py', 'wd',
                      GPUS='4', GPUS_PER_NODE='0', TASKS_PER_NODE='2',
                      OMP_NUM_THREADS='3')
    assert '--ntasks-per-node=2' in args and 'OMP_NUM_THREADS=3' in args


# ------------------------------------------------------------ real Slurm

@pytest.mark.slow
def test_cluster_runs_and_start_is_idempotent(cluster):
    pids = cluster.pids()
    again = cluster.local('start')
    assert again.returncode == 0 and 'already running' in again.stderr
    assert cluster.pids() == pids
    status = cluster.local('status')
    assert status.returncode == 0, status.stdout
    node = cluster.run('sinfo', '-h', '-N', '-o', '%N %P %T %c')
    assert node.stdout.split() == ['localhost', f'{PARTITION}*', 'idle', '2']
    hosts = cluster.run('srun', '-p', PARTITION, '-n', str(TASKS), 'bash',
                        '-c', 'echo $SLURM_PROCID $(scontrol show hostname '
                        '$SLURM_NODELIST)')
    assert hosts.returncode == 0, hosts.stderr
    assert sorted(hosts.stdout.splitlines()) == ['0 localhost', '1 localhost']


@pytest.mark.slow
def test_slurm_train_two_tasks_decide_alike(trained, slurm_ws):
    result, _ = trained
    output = _output(result)
    assert '--ntasks=2' in output and '--gres' not in output
    assert 'Distributed launcher: slurm' in output
    records = _probes(slurm_ws, 'train')
    assert [(r['rank'], r['world_size']) for r in records] == [(0, 2), (1, 2)]
    # train ends the process group itself, not interpreter exit
    assert _exit_states(slurm_ws, 'train') == ['destroyed'] * TASKS
    assert [r['iters'] for r in records] == [[0, 1]] * TASKS
    # one set of checkpoints, written by rank 0 only
    assert [r['saved'] for r in records] == [[2], []]
    work_dir = slurm_ws / 'work dir'
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_2.pth']
    assert (work_dir / 'last_checkpoint').read_text().strip() == \
        str(work_dir / 'iter_2.pth')
    checkpoint = _checkpoint(work_dir / 'iter_2.pth')
    assert checkpoint['meta']['iter'] == 2
    assert checkpoint['psbn']['steps'] == 2
    # psBN decided something, and both ranks decided the same
    assert [w['step'] for w in records[0]['windows']] == [2]
    assert any(d.any() for d in records[0]['windows'][0]['dead'].values())
    assert any(c.any() for c in records[0]['shift_counts'].values())
    _assert_same_decisions(records)
    assert checkpoint['psbn']['shift_counts'] == {
        name: counts.tolist()
        for name, counts in records[0]['shift_counts'].items()}


@pytest.mark.slow
def test_slurm_resume_continues_the_iteration_counter(resumed, slurm_ws):
    result, _ = resumed
    assert 'resumed epoch: 0, iter: 2' in _output(result)
    assert 'Iter(train) [3/4]' in _output(result)
    assert 'Iter(train) [1/4]' not in _output(result)
    records = _probes(slurm_ws, 'resume')
    for record in records:  # every rank resumed, not only rank 0
        assert record['start_iter'] == 2 and record['start_steps'] == 2
        assert record['iters'] == [2, 3]
    assert [w['step'] for w in records[0]['windows']] == [4]
    assert [r['saved'] for r in records] == [[4], []]
    _assert_same_decisions(records)
    work_dir = slurm_ws / 'work dir'
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [
        'iter_2.pth', 'iter_4.pth']
    checkpoint = _checkpoint(work_dir / 'iter_4.pth')
    assert checkpoint['meta']['iter'] == 4
    assert checkpoint['psbn']['steps'] == 4


@pytest.mark.slow
def test_slurm_test_evaluates(cluster, slurm_ws, resumed):
    result, _ = _job(cluster, slurm_ws, SLURM_TEST, slurm_ws / 'psbn probe.py',
                     slurm_ws / 'work dir' / 'iter_4.pth', '--work-dir',
                     slurm_ws / 'test dir', tag='test')
    assert result.returncode == 0, _tail(result)
    output = _output(result)
    assert '--ntasks=2' in output and 'Distributed launcher: slurm' in output
    assert re.search(r'coco/bbox_mAP: -?\d+\.\d+', output), _tail(result)
    # test ends the process group itself: left to interpreter exit, a task
    # once aborted there ("terminate called without an active exception")
    # and srun terminated the other (rc 143)
    assert _exit_states(slurm_ws, 'test') == ['destroyed'] * TASKS


@pytest.mark.slow
def test_a_failing_task_ends_the_job(cluster, slurm_ws):
    # task 1 raises; task 0 sleeps 600 s as a task waiting for its peer would
    result, wall = _job(cluster, slurm_ws, SLURM_TRAIN,
                        slurm_ws / 'psbn probe.py', slurm_ws / 'failed run',
                        tag='fail', timeout=300, PSBN_PROBE_FAIL='1')
    output = _output(result)
    assert result.returncode != 0
    assert 'task 1 fails on purpose' in output
    # task 1's exception ends it (exit code 1, or SIGABRT from torch's
    # threads at exit); srun then terminates task 0 in its sleep
    assert re.search(r'task 1: (Exited with exit code [1-9]|Aborted)',
                     output), _tail(result)
    assert 'task 0: Terminated' in output, _tail(result)
    assert wall < 200, f'the job ran {wall:.0f} s'
    deadline = time.monotonic() + 30
    while cluster.run('squeue', '-h', '-n', 'psbn-fail').stdout.strip():
        assert time.monotonic() < deadline, 'the failed job is still queued'
        time.sleep(0.5)


def test_start_leaves_the_mode_of_a_state_dir_it_did_not_create(cluster,
                                                                 tmp_path):
    """PSBN_SLURM_DIR=/tmp as root must keep /tmp's sticky bit: a second
    cluster in a world-writable sticky directory (issue 21); its own files
    stay private where munge requires it."""
    # munged wants every directory above its socket searchable by all: not
    # pytest's private tmp_path, a directory of /tmp's own
    state = Path(tempfile.mkdtemp(prefix='psbn-sticky-'))
    state.chmod(0o1777)
    second = Cluster(state, dict(
        cluster.env, PSBN_SLURM_DIR=str(state),
        PSBN_SLURM_PORT=str(_free_port(pair=True)),
        SLURM_CONF=str(state / 'slurm.conf')), 0.0)
    try:
        started = second.local('start')
        assert started.returncode == 0, started.stderr
        assert stat.S_IMODE(state.stat().st_mode) == 0o1777
        assert stat.S_IMODE((state / 'munge').stat().st_mode) == 0o755
        key = state / 'munge' / 'munge.key'
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        stopped = second.local('stop')
    assert stopped.returncode == 0, stopped.stderr
    assert _cluster_processes(state) == []
    shutil.rmtree(state, ignore_errors=True)
