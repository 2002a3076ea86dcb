"""The one-command GPU check: psBN on CUDA, measured side by side with BN.

::

    python -m research.gpu_check [--json docs/gpu_check_runs/NAME.json]
    python -m research.gpu_check --device cpu --size tiny      # the test

One table, each row of one process, BN and psBN built from the same weights
and alternated in pairs (``research.benchmark.compare``):

* train-step ratio psBN / BN of the R50 Faster R-CNN, batch 2 at 1333x800
  (mmdet's ``faster-rcnn_r50_fpn_1x_coco`` model), in fp32 and in AMP
  (mmengine's ``AmpOptimWrapper``, GPUs only), each with an A/A row (BN
  against a copy of itself: the noise floor);
* psSyncBN in a one-process process group (nccl on CUDA): the all-reduce
  path of the layer and the controller, against BN;
* the controller's step at a window end (detect, shift, all-reduce), in ms;
* peak memory of a psBN train step over BN's (CUDA only);
* BN-identical outputs before the first shift: backbone features of one
  forward in training mode, bit for bit.

``--size tiny`` (the default with ``--device cpu``) runs the same code on a
narrow ResNet-18 detector at 256x192 in seconds.  Lent a GPU, run it once:
it fits in 8 minutes on one.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from psbn_mmdet import PostShiftController, psBN, psSyncBN
from psbn_mmdet.cli import run_tool
from psbn_mmdet.utils import UserError, check_writable, write_atomically

from .benchmark import compare, machine

PROG = 'gpu_check'
REPO = Path(__file__).resolve().parents[1]  # research runs from the checkout
#: model (mmdet config) and input size per --size
SIZES = {
    'full': ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
             (800, 1333)),
    'tiny': (str(REPO / 'configs/demo/faster_rcnn_r18_demo_psbn_finetune.py'),
             (192, 256)),
}


def _detector(config: str, device: str):
    """The config's detector, random weights, BN and psBN copies."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import MODELS
    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.norm_cfg = dict(type='psBN', requires_grad=True)
    torch.manual_seed(0)
    psbn = MODELS.build(cfg.model)
    psbn.init_weights()
    psbn.to(device)
    bn = psBN.revert(copy.deepcopy(psbn))
    return cfg, bn, psbn


def _batch(model, shape, device: str, images: int = 2) -> dict:
    """A preprocessed batch of random images with one box each."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = shape
    generator = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(images):
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[w * 0.2, h * 0.2, w * 0.6, h * 0.7]]),
            labels=torch.tensor([1]))
        samples.append(sample)
    inputs = torch.rand(images, 3, h, w, generator=generator) * 255
    return dict(inputs=inputs.to(device), data_samples=samples)


def _wrapper(model, amp: bool):
    from mmengine.optim import build_optim_wrapper
    optimizer = dict(type='SGD', lr=0.0, momentum=0.9, weight_decay=1e-4)
    if amp:
        return build_optim_wrapper(model, dict(
            type='AmpOptimWrapper', optimizer=optimizer, loss_scale='dynamic'))
    return build_optim_wrapper(model, dict(type='OptimWrapper',
                                           optimizer=optimizer))


def _step(model, wrapper, batch, device: str, controller=None):
    """One ``train_step`` at lr 0 (the same work every time)."""

    def run():
        torch.manual_seed(0)  # the same proposals sampled each time
        model.train_step(dict(batch), wrapper)
        if controller is not None:
            controller.step()
        if device == 'cuda':
            torch.cuda.synchronize()

    return run


def train_rows(config, shape, device, amp, pairs, repeat):
    """psBN / BN and the A/A row, one precision."""
    _, bn, psbn = _detector(config, device)
    twin = copy.deepcopy(bn)
    batch = _batch(bn, shape, device)
    wrappers = [_wrapper(m, amp) for m in (bn, psbn, twin)]
    controller = PostShiftController(psbn, wrappers[1])
    precision = 'AMP' if amp else 'fp32'
    name = f'train step, {precision}, batch 2 at {shape[1]}x{shape[0]}'
    return [
        compare(f'{name}: psBN / BN', '<= 1.02x',
                _step(bn, wrappers[0], batch, device),
                _step(psbn, wrappers[1], batch, device, controller),
                pairs, repeat=repeat),
        compare(f'{name}: BN / BN copy (noise floor)', '1.00x',
                _step(bn, wrappers[0], batch, device),
                _step(twin, wrappers[2], batch, device), pairs,
                repeat=repeat)]


def sync_row(config, shape, device, pairs, repeat):
    """psSyncBN in a one-process group: the all-reduce path."""
    import torch.distributed as dist
    if device != 'cuda':
        return None, ('psSyncBN, one-process group: skipped (torch\'s '
                      'SyncBatchNorm trains on GPUs only)')
    started = not dist.is_initialized()
    if started:
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        os.environ.setdefault('MASTER_PORT', '29541')
        dist.init_process_group('nccl', rank=0, world_size=1)
    try:
        _, bn, psbn = _detector(config, device)
        sync = psBN.revert(psbn)  # BN with psBN's weights ...
        sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(sync)
        sync = psSyncBN.convert_bn(sync)  # ... now psSyncBN
        batch = _batch(bn, shape, device)
        wrappers = [_wrapper(m, False) for m in (bn, sync)]
        controller = PostShiftController(sync, wrappers[1])
        return compare('train step, fp32: psSyncBN (one-process nccl group) '
                       '/ BN', '<= 1.05x',
                       _step(bn, wrappers[0], batch, device),
                       _step(sync, wrappers[1], batch, device, controller),
                       pairs, repeat=repeat), None
    finally:
        if started:
            dist.destroy_process_group()


def window_end_ms(config, shape, device) -> tuple[float, float]:
    """The controller's step: at a window end, and in between (ms)."""
    _, _, psbn = _detector(config, device)
    batch = _batch(psbn, shape, device)
    wrapper = _wrapper(psbn, False)
    controller = PostShiftController(psbn, wrapper, window=2)
    times = {True: [], False: []}
    for _ in range(6):
        _step(psbn, wrapper, batch, device)()
        if device == 'cuda':
            torch.cuda.synchronize()
        end = (controller.steps + 1) % 2 == 0
        start = time.perf_counter()
        controller.step()
        if device == 'cuda':
            torch.cuda.synchronize()
        times[end].append(1e3 * (time.perf_counter() - start))
    return min(times[True]), min(times[False])


def peak_memory_ratio(config, shape, device) -> float | None:
    if device != 'cuda':
        return None
    peaks = []
    _, bn, psbn = _detector(config, device)
    batch = _batch(bn, shape, device)
    for model in (bn, psbn):
        wrapper = _wrapper(model, False)
        controller = (PostShiftController(model, wrapper)
                      if model is psbn else None)
        _step(model, wrapper, batch, device, controller)()  # warm-up
        torch.cuda.reset_peak_memory_stats()
        _step(model, wrapper, batch, device, controller)()
        peaks.append(torch.cuda.max_memory_allocated())
    return peaks[1] / peaks[0]


def identical_before_shift(config, shape, device) -> bool:
    """Backbone features of one training-mode forward, bit for bit."""
    _, bn, psbn = _detector(config, device)
    batch = _batch(bn, shape, device)
    inputs = bn.data_preprocessor(dict(batch), True)['inputs']
    outputs = []
    for model in (bn, psbn):
        model.train()
        controller = (PostShiftController(model) if model is psbn else None)
        with torch.no_grad():
            outputs.append(model.backbone(inputs))
        if controller is not None:
            controller.close()
    return all(torch.equal(a, b) for a, b in zip(*outputs))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--size', choices=list(SIZES),
                        help='default: full on cuda, tiny on cpu')
    parser.add_argument('--pairs', type=int, default=20)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--json', help='write the records here too')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: no GPU here (use --device cpu for '
                        'the tiny run)')
    if args.pairs < 1 or args.repeat < 1:
        raise UserError('--pairs and --repeat must be at least 1')
    if args.json:
        check_writable(args.json)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    config, shape = SIZES[args.size or ('full' if args.device == 'cuda'
                                         else 'tiny')]
    started = time.time()
    rows = train_rows(config, shape, args.device, False, args.pairs,
                      args.repeat)
    skipped = []
    if args.device == 'cuda':
        rows += train_rows(config, shape, args.device, True, args.pairs,
                           args.repeat)
    else:
        skipped.append('AMP rows: skipped (mmengine\'s AmpOptimWrapper '
                       'trains on GPUs only)')
    sync, why = sync_row(config, shape, args.device, args.pairs, args.repeat)
    rows += [sync] if sync is not None else []
    skipped += [why] if why else []
    at_end, between = window_end_ms(config, shape, args.device)
    memory = peak_memory_ratio(config, shape, args.device)
    identical = identical_before_shift(config, shape, args.device)
    device = (torch.cuda.get_device_name() if args.device == 'cuda'
              else machine())
    command = 'python -m research.gpu_check ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    lines = [f'Device: {device}; torch {torch.__version__}. Command: '
             f'`{command}` ({(time.time() - started) / 60:.1f} min).', '',
             '| what | BN time per call (median) | pairs x calls | ratio '
             '| spread | target |', '|---|---|---|---|---|---|',
             *[row.row() for row in rows], '',
             f'- controller step at a window end: {at_end:.2f} ms (between '
             f'window ends: {between:.3f} ms)',
             '- peak memory of a train step, psBN / BN: '
             + ('-' if memory is None else f'{memory:.3f}x'),
             '- backbone features before the first shift, psBN == BN bit for '
             f'bit: {"yes" if identical else "NO"}']
    lines += [f'- {line}' for line in skipped]
    print('\n'.join(lines))
    if args.json:
        record = dict(command=command, device=device,
                      torch=torch.__version__, rows=[
                          dict(name=r.name, target=r.target,
                               base_seconds=r.base_seconds, ratios=r.ratios,
                               repeat=r.repeat) for r in rows],
                      window_end_ms=at_end, between_ms=between,
                      peak_memory_ratio=memory, identical=identical,
                      skipped=skipped)
        write_atomically({args.json: (json.dumps(record, indent=1)
                                      + '\n').encode()})


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
