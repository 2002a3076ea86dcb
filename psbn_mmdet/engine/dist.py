"""Distributed training on CPU-only machines, without patching mmengine.

mmengine 0.10's ``pytorch`` launcher calls ``torch.cuda.set_device`` (absent from
a CPU build of torch) and its Runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.  The Runner
skips ``init_dist`` when a process group already exists, and builds the wrapper
named by ``model_wrapper_cfg``: :func:`setup_cpu_distributed` uses both.  With
CUDA present nothing changes: nccl and mmengine's own path.  Importing this
module registers :class:`CPUAwareDistributedDataParallel` in mmengine's
``MODEL_WRAPPERS`` (``import psbn_mmdet`` does so once mmengine's model stack
is imported).
"""
from __future__ import annotations

import datetime
import os
import subprocess

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from ..utils.errors import UserError


@MODEL_WRAPPERS.register_module()
class CPUAwareDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that passes no ``device_ids`` for CPU modules."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        if next(module.parameters()).device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def _slurm_environment() -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from Slurm's
    variables, as mmengine's own slurm setup derives them (on CPU we need
    them before the Runner exists).  The rank variables are always Slurm's
    (a stray RANK in the environment must not win); the master port is
    derived from the job id unless set, so two jobs on a node do not
    collide; the master address is the first node of the job."""
    os.environ['RANK'] = os.environ.get('SLURM_PROCID', '0')
    os.environ['WORLD_SIZE'] = os.environ.get('SLURM_NTASKS', '1')
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if 'MASTER_PORT' not in os.environ:
        job = int(os.environ.get('SLURM_JOB_ID', '0') or 0)
        os.environ['MASTER_PORT'] = str(29500 + job % 10000)
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_NODELIST')
        if not nodes:
            raise UserError('the slurm launcher outside a Slurm job step '
                            '(SLURM_NODELIST is not set)')
        try:
            first = subprocess.run(['scontrol', 'show', 'hostname', nodes],
                                   capture_output=True, text=True,
                                   check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError) as error:
            raise UserError(f'the slurm launcher: scontrol cannot resolve '
                            f'{nodes} ({error})') from None
        if not first:
            raise UserError(f'the slurm launcher: no host in {nodes}')
        os.environ['MASTER_ADDR'] = first[0]


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Create a gloo process group and a CPU-capable DDP wrapper if no CUDA.

    Call before building the Runner.  Returns True when it took over.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return False
    if launcher == 'slurm':
        _slurm_environment()
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(
            wrapper, type='CPUAwareDistributedDataParallel')
    return True


def finish_distributed() -> None:
    """End a successful distributed run in step: every rank waits at a
    barrier, then the process group is destroyed (its threads joined).

    Left to interpreter exit, a rank's gloo group can be torn down with a
    thread still joinable: ``terminate called without an active exception``,
    SIGABRT, and srun's ``--kill-on-bad-exit`` then terminates the other
    ranks, so a run that succeeded exits 143 (seen once in tests/cli/
    test_slurm.py::test_slurm_test_evaluates, after the metrics had printed).
    Only on the success path: after a failure a barrier would wait for a rank
    that is gone.  Nothing happens without a process group.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
