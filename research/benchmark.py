"""psBN against BN, side by side in one process: ``python -m research.benchmark``.

Every comparison runs both variants in one process on the same weights and
inputs, alternating A/B for ``pairs`` pairs after a warm-up, and reports the
median of the per-pair time ratios with its spread (min-max): ratios of
neighbouring measurements cancel most of the machine's drift and load.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from psbn_mmdet import PostShiftController, psBN
from psbn_mmdet.cli import run_tool
from psbn_mmdet.core import PRE_RELU, ChannelMax, roles_from_model
from psbn_mmdet.demo.data import make_demo_data
from psbn_mmdet.utils import UserError

from .markdown import write_generated

to_bn = psBN.revert


@dataclass
class Comparison:
    name: str
    target: str
    base_seconds: float  # median time of the baseline (BN)
    ratios: list[float]
    repeat: int = 1  # consecutive calls timed as one sample

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def row(self) -> str:
        return (f'| {self.name} | {self.base_seconds * 1e3:.1f} ms '
                f'| {len(self.ratios)} x {self.repeat} | {self.median:.3f}x '
                f'| {min(self.ratios):.3f}-{max(self.ratios):.3f} '
                f'| {self.target} |')


def _time(fn, repeat: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``repeat`` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def compare(name: str, target: str, baseline, candidate, pairs: int = 10,
            warmup: int = 2, repeat: int = 1) -> Comparison:
    """Median ratio ``candidate / baseline`` over alternating pairs.

    Each side of a pair times ``repeat`` consecutive calls, which averages
    out short stalls of a shared machine.
    """
    for _ in range(warmup):
        baseline()
        candidate()
    base, ratios = [], []
    for i in range(pairs):
        if i % 2:  # alternate the order inside a pair too
            c, b = _time(candidate, repeat), _time(baseline, repeat)
        else:
            b, c = _time(baseline, repeat), _time(candidate, repeat)
        base.append(b)
        ratios.append(c / b)
    return Comparison(name, target, statistics.median(base), ratios, repeat)


def _train_step(model, optimizer, inputs, controller=None):

    def step():
        optimizer.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in model(inputs)).backward()
        optimizer.step()
        if controller is not None:
            controller.step()

    return step


def backbone_train_step(pairs: int, finetune: bool, repeat: int = 3,
                        window: int | None = None,
                        noise_floor: bool = False,
                        controller: bool = True) -> Comparison:
    """ResNet-50 forward + backward + SGD step, statistics and controller on
    (``controller=False``: psBN layers with no controller attached, as when
    a config forgets the hook: they should cost what BN costs).

    The learning rate is 0: every step does the same work on the same
    weights (optimizer arithmetic included), so the two variants stay
    comparable however long the benchmark runs.
    """
    from mmdet.models.backbones import ResNet
    kwargs = (dict(frozen_stages=1, norm_eval=True) if finetune else
              dict(frozen_stages=-1, norm_eval=False))
    torch.manual_seed(0)
    norm_cfg = dict(type='psBN') if window is None else dict(type='psBN',
                                                               window=window)
    psbn = ResNet(depth=50, norm_cfg=norm_cfg, **kwargs)
    psbn.init_weights()
    bn = to_bn(copy.deepcopy(psbn))
    bn.train()
    psbn.train()
    inputs = torch.randn(2, 3, 224, 224)
    opt_bn = torch.optim.SGD([p for p in bn.parameters() if p.requires_grad],
                             lr=0.0, momentum=0.9)
    opt_ps = torch.optim.SGD([p for p in psbn.parameters()
                              if p.requires_grad], lr=0.0, momentum=0.9)
    setup = ('finetune: frozen_stages=1, norm_eval=True' if finetune else
             'train mode: batch statistics')
    name = f'ResNet-50 train step, 2x3x224x224 ({setup}'
    if noise_floor:  # BN against a copy of itself
        twin = to_bn(psbn)  # the same weights as ``bn``, BN layers
        opt_twin = torch.optim.SGD([p for p in twin.parameters()
                                    if p.requires_grad], lr=0.0, momentum=0.9)
        return compare(f'{name}): BN against a copy of itself (noise floor)',
                       '1.00x', _train_step(bn, opt_bn, inputs),
                       _train_step(twin, opt_twin, inputs), pairs,
                       repeat=repeat)
    if not controller:
        return compare(f'{name}): psBN without a controller', '1.00x',
                       _train_step(bn, opt_bn, inputs),
                       _train_step(psbn, opt_ps, inputs), pairs,
                       repeat=repeat)
    attached = PostShiftController(psbn, opt_ps)
    window = window or psbn.layer1[0].bn1.window
    return compare(f'{name}, psBN window {window})', '<= 1.02x',
                   _train_step(bn, opt_bn, inputs),
                   _train_step(psbn, opt_ps, inputs, attached), pairs,
                   repeat=repeat)


def window_end_step(pairs: int, revival: str, dead_fraction: float = 0.1,
                    repeat: int = 1) -> Comparison:
    """A ResNet-50 finetune step (``frozen_stages=1``, ``norm_eval=True``,
    SGD + momentum) that ends a window and revives ``dead_fraction`` of
    every trained pre-ReLU layer's channels by ``revival``, against BN's
    plain step on the same weights and inputs.

    psBN's window is 1, so every step is a window end; before each step
    both models get the same channels killed (β = −1e3: dead on every
    element), so each step does the same work.  What is timed is the
    window-end step (decision, revival, optimizer-state reset) plus the next
    forward's recalibration; a run pays it once per window.
    """
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    psbn = ResNet(depth=50, frozen_stages=1, norm_eval=True, norm_cfg=dict(
        type='psBN', window=1, revival=revival))
    psbn.init_weights()
    bn = to_bn(copy.deepcopy(psbn))
    controller = None
    steps = []
    inputs = torch.randn(2, 3, 224, 224)
    for model in (bn, psbn):
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters()
                                     if p.requires_grad], lr=0.0,
                                    momentum=0.9)
        if model is psbn:
            controller = PostShiftController(psbn, optimizer)
        modules = dict(model.named_modules())
        layers = [modules[name] for name, role in
                  roles_from_model(model).items()
                  if role.role == PRE_RELU and modules[name].weight.requires_grad]
        step = _train_step(model, optimizer, inputs, controller)

        def killed_step(layers=layers, step=step):
            with torch.no_grad():
                for layer in layers:
                    layer.bias[:int(dead_fraction * layer.num_features)] = \
                        -1e3
            step()

        steps.append(killed_step)
    revived = sum(int(dead_fraction * psbn_layer.num_features)
                  for psbn_layer in (controller.bns[n]
                                     for n in controller.pre_relu)
                  if psbn_layer.weight.requires_grad)
    return compare(f'ResNet-50 finetune step that ends a window and revives '
                   f'{revived} channels ({dead_fraction:.0%} of each trained '
                   f'pre-ReLU layer), revival={revival!r}, against BN\'s '
                   'plain step', 'no target: paid once per window', *steps,
                   pairs, repeat=repeat)


def detector_train_iteration(pairs: int, config: str,
                             repeat: int = 2) -> list[Comparison]:
    """One full Faster R-CNN ``train_step`` on a demo batch, hook's controller on.

    The learning rate is 0, so every iteration does the same work (a
    training detector's cost changes with its proposals).  A second row
    times BN against an identical copy of itself: the noise floor the psBN
    row should be read against.
    """
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DATASETS, FUNCTIONS, MODELS
    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.optim_wrapper.optimizer.lr = 0.0
    torch.manual_seed(0)
    psbn = MODELS.build(cfg.model)
    psbn.init_weights()
    bn = to_bn(copy.deepcopy(psbn))
    bn_copy = copy.deepcopy(bn)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    collate = FUNCTIONS.get('pseudo_collate')
    batch = collate([dataset[0], dataset[1]])
    wrappers = [build_optim_wrapper(m, cfg.optim_wrapper)
                for m in (bn, psbn, bn_copy)]
    controller = PostShiftController(psbn, wrappers[1])

    def step(model, wrapper, ctrl=None):

        def run():
            torch.manual_seed(0)  # same proposals sampled in both variants
            model.train_step(copy.copy(batch), wrapper)
            if ctrl is not None:
                ctrl.step()

        return run

    name = 'Faster R-CNN R50-FPN train iteration, demo batch of 2'
    return [
        compare(name, '<= 1.01x', step(bn, wrappers[0]),
                step(psbn, wrappers[1], controller), pairs, repeat=repeat),
        compare(f'{name}: BN against a copy of itself (noise floor)', '1.00x',
                step(bn, wrappers[0]), step(bn_copy, wrappers[2]), pairs,
                repeat=repeat)
    ]


def inference(pairs: int, repeat: int = 5) -> list[Comparison]:
    """psBN in inference and the exported (stock BN) model against BN."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    psbn = ResNet(depth=50, norm_cfg=dict(type='psBN'))
    bn = ResNet(depth=50)
    bn.load_state_dict(psbn.state_dict())
    exported = to_bn(copy.deepcopy(psbn))
    for model in (psbn, bn, exported):
        model.eval()  # mmdet's ResNet.train() returns None: no chaining
    inputs = torch.randn(2, 3, 224, 224)

    def infer(model):

        def run():
            with torch.inference_mode():
                model(inputs)

        return run

    return [
        compare('ResNet-50 inference, psBN model', '1.00x', infer(bn),
                infer(psbn), pairs, repeat=repeat),
        compare('ResNet-50 inference, exported model', '1.00x', infer(bn),
                infer(exported), pairs, repeat=repeat)
    ]


def _r50_checkpoint(directory: str) -> str:
    """Save an mmengine-style ResNet-50 checkpoint in ``directory``."""
    from mmdet.models.backbones import ResNet
    path = os.path.join(directory, 'r50.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               ResNet(depth=50).state_dict().items()}}, path)
    return path


def report_parameter_mode(repeats: int = 5) -> tuple[float, float]:
    """Wall time of the installed report command on an R50 checkpoint
    (median, max), start-up included."""
    command = [sys.executable, '-c',
               'from psbn_mmdet.cli.report import main; main()']
    with tempfile.TemporaryDirectory() as tmp:
        path = _r50_checkpoint(tmp)
        times = [_time(lambda: subprocess.run(
            command + [path], check=True, capture_output=True))
            for _ in range(repeats)]
    return statistics.median(times), max(times)


def report_activation_mode(pairs: int, config: str, num_images: int = 8,
                           repeat: int = 2) -> Comparison:
    """The report's activation probe against plain backbone inference.

    Both loop over the same preprocessed batches (test pipeline included);
    the probe adds the per-channel maximum hooks.  The ratio is of times, so
    images/s of the report = plain images/s / ratio.
    """
    from psbn_mmdet.analysis import ActivationProbe, bn_layers, extents
    from psbn_mmdet.io import load_backbone, read_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        path = _r50_checkpoint(tmp)
        ckpt = read_checkpoint(path)
        probe = ActivationProbe(config, config, num_images)
        backbone = load_backbone(config, ckpt)
        names = [n for n, layer in bn_layers(ckpt).items()
                 if layer.role == PRE_RELU]
        batches = list(probe.batches())

    def plain():
        with torch.inference_mode():
            for inputs, _ in batches:
                backbone(inputs)

    def probed():
        with ChannelMax({n: backbone.get_submodule(n)
                         for n in names}) as collector, \
                torch.inference_mode():
            for inputs, samples in batches:
                collector.extents = extents(inputs, samples)
                backbone(inputs)

    result = compare(f'report activation mode, {len(batches)} batches '
                     f'({num_images} demo images)', 'images/s >= 0.9x plain',
                     plain, probed, pairs, repeat=repeat)
    result.images = num_images
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), Python '
            f'{platform.python_version()}')


# -------------------------------------------------------------------- CLI
PROG = 'benchmark'
TABLE_HEADER = ('| what | BN time per call (median) | pairs x calls | ratio '
                '| spread | target |', '|---|---|---|---|---|---|')
DEMO = 'configs/demo/faster_rcnn_r50_demo_psbn.py'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=10)
    parser.add_argument('--out', default='docs/benchmarks.md')
    parser.add_argument('--train-step-only', action='store_true',
                        help='only the ResNet-50 train-step rows and their '
                        'noise floor, into the benchmark_train_step section')
    parser.add_argument('--window-end', action='store_true',
                        help='only the window-end step rows (a revival on '
                        'every step) and the noise floor, into the '
                        'benchmark_window_end section')
    parser.add_argument('--windows', type=int, nargs='+', default=[None],
                        help='psBN windows of the train-step rows (default: '
                        'the layer\'s)')
    args = parser.parse_args(argv)
    if args.pairs < 1:
        raise UserError(f'--pairs must be at least 1, got {args.pairs}')
    if any(w is not None and w < 1 for w in args.windows):
        raise UserError('--windows must be at least 1')
    from mmengine.logging import MMLogger

    # init_weights logs every parameter of every model built here
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    start = time.time()
    load = os.getloadavg()[0]
    command = 'python -m research.benchmark ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    if args.window_end:
        rows = [window_end_step(args.pairs, revival)
                for revival in ('reinit_init', 'shift')]
        rows.append(backbone_train_step(args.pairs, True, noise_floor=True))
        lines = [f'Machine: {machine()}; load average {load:.2f} at the '
                 f'start.', '', f'Command: `{command}` '
                 f'({(time.time() - start) / 60:.1f} min).', '',
                 *TABLE_HEADER, *[row.row() for row in rows]]
        write_generated(args.out, 'benchmark_window_end', '\n'.join(lines),
                        title='Benchmarks: psBN against BN')
        print('\n'.join(lines))
        return
    rows = [backbone_train_step(args.pairs, finetune, window=window)
            for finetune in (False, True) for window in args.windows]
    rows.append(backbone_train_step(args.pairs, True, controller=False))
    rows.append(backbone_train_step(args.pairs, True, noise_floor=True))
    if args.train_step_only:
        lines = [f'Machine: {machine()}; load average {load:.2f} at the '
                 f'start.', '', f'Command: `{command}` '
                 f'({(time.time() - start) / 60:.1f} min), as below.', '',
                 *TABLE_HEADER,
                 *[row.row() for row in rows]]
        write_generated(args.out, 'benchmark_train_step', '\n'.join(lines),
                        title='Benchmarks: psBN against BN')
        print('\n'.join(lines))
        return
    if not os.path.exists('data/demo/annotations/instances_train.json'):
        make_demo_data('data/demo')  # the detector rows' batch (make data)
    rows += [
        *detector_train_iteration(args.pairs, DEMO),
        *inference(args.pairs),
    ]
    activation = report_activation_mode(args.pairs, DEMO)
    rows.append(activation)
    median, worst = report_parameter_mode()
    lines = [
        f'Machine: {machine()}; load average '
        f'{load:.2f} at the start.', '',
        f'Command: `{command}`'
        f' ({(time.time() - start) / 60:.1f} min). Each row alternates the '
        f'two variants in one process ({args.pairs} pairs after 2 warm-up '
        'runs each; a sample times the given number of consecutive calls) '
        'on the same weights and inputs; the ratio is psBN (or the probe) '
        'over BN, median and min-max over the pairs. Training rows use '
        'lr 0, so every step does the same work on the same weights.', '',
        *TABLE_HEADER,
        *[row.row() for row in rows], '',
        f'Report tool, activation mode: '
        f'{activation.images / (activation.base_seconds * activation.median):.1f}'
        f' images/s against {activation.images / activation.base_seconds:.1f}'
        ' images/s of plain backbone inference on the same batches '
        f'({1 / activation.median:.2f}x).', '',
        f'Report tool, parameter mode, whole command on an R50 checkpoint '
        f'(start-up included): median {median:.2f} s, worst {worst:.2f} s '
        'of 5 runs (target < 2 s).',
    ]
    write_generated(args.out, 'benchmark', '\n'.join(lines),
                    title='Benchmarks: psBN against BN')
    print('\n'.join(lines))


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
