"""Distributed training on CPU-only machines, without patching mmengine.

mmengine 0.10's ``pytorch`` launcher calls ``torch.cuda.set_device`` (absent from
a CPU build of torch) and its Runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.  The Runner
skips ``init_dist`` when a process group already exists, and builds the wrapper
named by ``model_wrapper_cfg``: :func:`setup_cpu_distributed` uses both.  With
CUDA present nothing changes: nccl and mmengine's own path.  The tools import
this module (not ``import psbn_mmdet``): it pulls in mmengine's model stack.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUAwareDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that passes no ``device_ids`` for CPU modules."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        if next(module.parameters()).device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Create a gloo process group and a CPU-capable DDP wrapper if no CUDA.

    Call before building the Runner.  Returns True when it took over.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return False
    if launcher == 'slurm':
        # mmengine's slurm path derives these from SLURM_* itself; on CPU we
        # need them before the Runner exists.
        os.environ.setdefault('RANK', os.environ.get('SLURM_PROCID', '0'))
        os.environ.setdefault('WORLD_SIZE', os.environ.get('SLURM_NTASKS', '1'))
        os.environ.setdefault('LOCAL_RANK',
                              os.environ.get('SLURM_LOCALID', '0'))
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            import subprocess
            nodes = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1')
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    kwargs = {}
    if timeout is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(
            wrapper, type='CPUAwareDistributedDataParallel')
    return True
