"""A hook for tests/cli/test_slurm.py, imported by the Slurm tasks (custom_imports).

``SlurmProbeHook`` records what each rank of a distributed run saw and decided,
into ``$PSBN_PROBE_DIR/<$PSBN_PROBE_TAG>-rank<R>.pt``:

* the rank and world size the task ran with;
* the controller's step counter when training began (resume restores it);
* the iterations of the checkpoints this rank wrote;
* per iteration: the iteration index and, at each window end, every layer's
  dead-channel mask (the psBN decision);
* at the end: the shift counts, every BN's γ and β, and every parameter
  (a revival's fresh filters are drawn alike on every rank, also under
  ``randomness.diff_rank_seed=True``, issue 39 item 2).

Ranks train on different images, so each rank's own statistics would
decide differently; only the controller's all-reduce makes the decisions (and
so the post-shifted β) equal.  To make sure there are decisions to compare,
``before_train`` sets ``backbone.layer1.0.bn1``'s β to a ramp from -1.5 to -9:
the channels near the edge of "never positive in a window" are dead on one
rank's images and alive on the other's.

At exit each task also writes ``<tag>-rank<R>.exit``: whether its process
group was still initialized then (the tools destroy it after a successful
run, :func:`psbn_mmdet.engine.dist.finish_distributed`).

``PSBN_PROBE_FAIL=1``: rank 1 raises in ``before_train``, every other rank
sleeps there (as a rank stuck waiting for a peer would); only srun's
``--kill-on-bad-exit`` ends such a job early.
"""
from __future__ import annotations

import atexit
import os
import time

import torch
import torch.distributed as dist
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from psbn_mmdet.engine.hooks import find_controller, runner_model

RAMP_LAYER = 'backbone.layer1.0.bn1'


def _record_exit() -> None:
    """``<tag>-rank<R>.exit``: 'initialized' or 'destroyed', at exit."""
    out_dir = os.environ.get('PSBN_PROBE_DIR')
    if out_dir is None:
        return
    rank = os.environ.get('SLURM_PROCID', '0')
    tag = os.environ.get('PSBN_PROBE_TAG', 'run')
    state = 'initialized' if dist.is_initialized() else 'destroyed'
    with open(os.path.join(out_dir, f'{tag}-rank{rank}.exit'), 'w') as f:
        f.write(state)


atexit.register(_record_exit)  # the tasks import this module (custom_imports)


@HOOKS.register_module()
class SlurmProbeHook(Hook):
    priority = 'LOW'  # after PostShiftHook (NORMAL) in every stage

    def before_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        if os.environ.get('PSBN_PROBE_FAIL') == '1':
            if rank == 1:
                raise RuntimeError('slurm_probe: task 1 fails on purpose')
            time.sleep(600)
        bn = dict(runner_model(runner).named_modules())[RAMP_LAYER]
        if runner.iter == 0:  # not when resuming: β is in the checkpoint
            with torch.no_grad():
                ramp = torch.linspace(-1.5, -9.0, bn.num_features)
                bn.bias.copy_(ramp.to(bn.bias))
        self.record = dict(rank=rank, world_size=world_size,
                           start_iter=runner.iter,
                           start_steps=find_controller(runner).steps,
                           iters=[], windows=[], saved=[])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # mmengine calls this on the rank that writes the checkpoint only
        self.record['saved'].append(checkpoint['meta']['iter'])

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        controller = find_controller(runner)
        self.record['iters'].append(runner.iter)
        if any(controller.steps % controller.window_of(name) == 0
               for name in controller.pre_relu):
            self.record['windows'].append(
                dict(step=controller.steps,
                     dead={name: mask.clone()
                           for name, mask in controller.last_dead.items()}))

    def after_train(self, runner) -> None:
        from torch.nn.modules.batchnorm import _BatchNorm
        controller = find_controller(runner)
        self.record['shift_counts'] = {
            name: counts.clone()
            for name, counts in controller.shift_counts.items()}
        self.record['bn'] = {
            name: (module.weight.detach().clone(),
                   module.bias.detach().clone())
            for name, module in runner_model(runner).named_modules()
            if isinstance(module, _BatchNorm) and module.affine}
        self.record['params'] = {
            name: param.detach().clone()
            for name, param in runner_model(runner).named_parameters()}
        out_dir = os.environ['PSBN_PROBE_DIR']
        tag = os.environ.get('PSBN_PROBE_TAG', 'run')
        torch.save(self.record,
                   os.path.join(out_dir, f'{tag}-rank{self.record["rank"]}.pt'))
