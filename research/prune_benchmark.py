"""What removing dead channels buys: ``python -m research.prune_benchmark``.

For each finetuned demo detector given (by default the BN finetune of the
collapse regime and its psBN twin, from ``make demo``'s work dirs), this

1. prunes it with the package's tool (:func:`psbn_mmdet.pruning.prune_dead.prune_dead`:
   calibration on the first training images, self-check, bbox mAP before and
   after on the val images, wake-ups) into a temporary directory;
2. loads the original and the written pruned config + checkpoint, and times
   inference of both on the same preprocessed val batch, backbone alone and
   the whole detector (``predict``), alternating A/B in one process
   (:func:`research.benchmark.compare`), with an A/A row (the original
   against a copy of itself) as the noise floor.

The goal of issue 15: the backbone's wall time saved is at least 0.8x the
fraction of its conv FLOPs removed.  Other agents share this machine: the
load average is recorded at the start and the end of each detector's rows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

from psbn_mmdet.cli import run_tool
from psbn_mmdet.io import (build_model, latest_checkpoint, load_weights,
                           read_checkpoint)
from psbn_mmdet.pruning import (block_widths, prune_dead, pruned_config,
                                relative_difference)
from psbn_mmdet.utils import (UserError, check_writable, load_config,
                              write_atomically)

from .benchmark import Comparison, compare, machine
from .markdown import write_generated

PROG = 'prune_benchmark'
WORK_DIRS = 'work_dirs'
DETECTORS = {
    'BN finetune (Adam + L2, collapse regime)': (
        'configs/demo/faster_rcnn_r18_demo_bn_finetune.py',
        'faster_rcnn_r18_demo_bn_finetune'),
    'psBN finetune (same regime)': (
        'configs/demo/faster_rcnn_r18_demo_psbn_finetune.py',
        'faster_rcnn_r18_demo_psbn_finetune'),
}
#: wall time saved / backbone FLOPs removed, at least
GOAL = 0.8
#: how the backbones are timed: name -> (PrunedResNet(channels_last), each
#: conv's BN folded into it for inference by mmcv.cnn.fuse_conv_bn)
LAYOUTS = {'NCHW': (False, False), 'NHWC': (True, False),
           'NHWC+fused': (True, True)}


@dataclass
class Measured:
    label: str
    config: str
    checkpoint: str
    result: object = None  # psbn_mmdet.pruning.prune_dead.PruneResult
    error: str | None = None  # why nothing was pruned
    rows: list[Comparison] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average: start, end
    border: object = None  # PruneResult with constants folded through padding
    layout_check: dict = field(default_factory=dict)  # layout -> difference

    @property
    def channels_removed(self) -> tuple[int, int]:
        """Block-internal channels removed, and how many there are."""
        plans = self.result.plans
        return (sum(int(p.removed.sum()) for p in plans),
                sum(p.channels for p in plans))

    @property
    def flops_removed(self) -> float:
        """Fraction of the backbone's conv FLOPs removed."""
        before = self.result.before['total'].flops
        return (before - self.result.after['total'].flops) / before


def trained_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's ``last_checkpoint`` names in a work dir."""
    path = latest_checkpoint(work_dir)
    if path is None:
        raise UserError(f'{work_dir}: no last_checkpoint (train it first: '
                        '`make demo`, or pass --detector LABEL CONFIG CKPT)')
    return path


def _load(config: str, checkpoint: str, channels_last: bool = False,
          fused: bool = False):
    """The detector of ``config`` with the checkpoint's
    weights, in eval mode; with ``channels_last`` its backbone a
    ``PrunedResNet`` of the same widths computing in NHWC; ``fused``: the
    backbone's BNs folded into their convs (mmcv's ``fuse_conv_bn``, what
    deployment does; inference only)."""
    cfg = load_config(config)
    model_cfg = cfg.model
    if channels_last:  # the widths are read off the configured backbone
        widths = block_widths(build_model(cfg.model.backbone))
        model_cfg = pruned_config(cfg, widths, channels_last=True).model
    model = load_weights(build_model(model_cfg),
                         read_checkpoint(checkpoint).state, checkpoint)
    if fused:
        from mmcv.cnn import fuse_conv_bn
        fuse_conv_bn(model.backbone)
    return cfg, model


def _val_batch(cfg, model, images: int):
    """The first ``images`` val images, preprocessed as at inference."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.batch_size = images
    with contextlib.redirect_stdout(io.StringIO()):
        loader = Runner.build_dataloader(loader_cfg)
    with torch.inference_mode():
        data = model.data_preprocessor(next(iter(loader)), False)
    return data['inputs'], data['data_samples']


class Timed:
    """A callable that records the wall and CPU seconds of each call."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu = fn, [], []

    def __call__(self):
        wall, cpu = time.perf_counter(), time.process_time()
        self.fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)


def _compare(name: str, target: str, baseline, candidate, pairs: int,
             repeat: int) -> Comparison:
    """:func:`research.benchmark.compare`, plus two load-robust views: the
    ratio of the fastest calls and the ratio of median CPU times."""
    base, cand = Timed(baseline), Timed(candidate)
    result = compare(name, target, base, cand, pairs, repeat=repeat)
    result.best = min(cand.wall) / min(base.wall)
    result.cpu = statistics.median(cand.cpu) / statistics.median(base.cpu)
    return result


def time_inference(original, pruned, inputs, samples, pairs: int,
                   threads: int, layout: str = 'NCHW') -> list[Comparison]:
    """Backbone and detector, pruned against original, and their A/A, with
    ``threads`` torch threads (``layout`` names the backbones' memory
    format in the rows)."""
    twin = copy.deepcopy(original)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)

    def backbone(model):
        def run():
            with torch.inference_mode():
                model.backbone(inputs)
        return run

    def detector(model):
        def run():
            with torch.inference_mode():
                model.predict(inputs, copy.deepcopy(samples))
        return run

    what = (f'{inputs.shape[0]} images '
            f'{"x".join(map(str, inputs.shape[-2:]))}, {layout}, {threads} '
            f'thread{"s" if threads > 1 else ""}')
    try:
        return [
            _compare(f'backbone, {what}', 'pruned', backbone(original),
                     backbone(pruned), pairs, repeat=10),
            _compare(f'backbone, {what}: A/A', 'noise floor',
                     backbone(original), backbone(twin), pairs, repeat=10),
            _compare(f'detector (predict), {what}', 'pruned',
                     detector(original), detector(pruned), pairs, repeat=3),
            _compare(f'detector (predict), {what}: A/A', 'noise floor',
                     detector(original), detector(twin), pairs, repeat=3),
        ]
    finally:
        torch.set_num_threads(before)


def border_effect(config: str, checkpoint: str, directory: str, plans,
                  num_images: int, every: int = 8):
    """What folding a constant through a zero-padded 3x3 conv changes.

    Every ``every``-th live channel with β > 0 of each BasicBlock ``bn1``
    gets γ = 0, so its output is exactly the constant ReLU(β); the tool then
    folds these through the padded ``conv2`` (``fold_padded=True``) and its
    self-check against the γ = 0 model measures the border error alone;
    mAP is of that model and of the folded one.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    weights = state['state_dict']
    chosen = 0
    for plan in plans:
        if plan.bn.exact_fold:
            continue
        beta = weights[f'backbone.{plan.bn.name}.bias']
        alive = ((~plan.removed) & (beta > 0)).nonzero().flatten()[::every]
        weights[f'backbone.{plan.bn.name}.weight'][alive] = 0.0
        chosen += len(alive)
    path = os.path.join(directory, 'constant_channels.pth')
    torch.save(state, path)
    result = prune_dead(config, path, directory, num_images=num_images,
                        fold_padded=True, write=False)
    result.constant_channels = chosen
    return result


def layout_check(models, inputs) -> dict[str, float]:
    """Each timed layout's backbone features (original and pruned) against
    the first layout's original: the largest relative difference."""
    with torch.inference_mode():
        reference = next(iter(models.values()))[0].backbone(inputs)
        return {layout: max(relative_difference(a, b)
                            for model in pair
                            for a, b in zip(reference, model.backbone(inputs)))
                for layout, pair in models.items()}


def measure(label: str, config: str, checkpoint: str, pairs: int,
            num_images: int, batch: int, threads=(1, 2),
            layouts=LAYOUTS) -> Measured:
    measured = Measured(label, config, checkpoint)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            measured.result = prune_dead(config, checkpoint, out_dir,
                                         num_images=num_images)
        except UserError as error:
            measured.error = str(error)
            measured.load = (load_start, os.getloadavg()[0])
            return measured
        measured.border = border_effect(config, checkpoint, out_dir,
                                        measured.result.plans, num_images)
        if not measured.result.written:
            measured.error = 'self-check failed: nothing written'
            return measured
        models = {}
        for layout in layouts:
            cfg, original = _load(config, checkpoint, *LAYOUTS[layout])
            models[layout] = (original, _load(
                measured.result.config, measured.result.checkpoint,
                *LAYOUTS[layout])[1])
    inputs, samples = _val_batch(cfg, original, batch)
    measured.layout_check = layout_check(models, inputs)
    measured.rows = [row for layout, (original, pruned) in models.items()
                     for n in threads for row in time_inference(
                         original, pruned, inputs, samples, pairs, n, layout)]
    measured.load = (load_start, os.getloadavg()[0])
    return measured


# ------------------------------------------------------------------ render
def _pct(value: float) -> str:
    return f'{100 * value:.1f}%'


def render(results: list[Measured], pairs: int, num_images: int,
           batch: int, command: str, minutes: float) -> str:
    lines = [
        f'Machine: {machine()}. The 1-min load average at the start and '
        'end of each detector is given below.', '',
        f'Command: `{command}` ({minutes:.1f} min). Calibration: the first '
        f'{num_images} training images; self-check and wake-ups as '
        '`tools/prune_dead.py` prints them; mAP on the 64 val images. '
        f'Timing: a batch of {batch} val images, preprocessed once, with '
        'the backbones\' memory format and the torch thread count each row '
        'names (NCHW: the backbones as configured; NHWC: the same weights '
        'in `PrunedResNet(channels_last=True)`, original and pruned alike, '
        'features returned as NCHW to the neck; NHWC+fused: besides, each '
        'BN folded into its conv by `mmcv.cnn.fuse_conv_bn`, as deployment '
        'does); each row '
        f'alternates the two models in one process ({pairs} pairs after 2 '
        'warm-up runs each; a sample times the given number of consecutive '
        'calls); the ratio is pruned (or the copy) over the original, '
        'median and min-max over the pairs; "fastest calls" is the ratio of '
        'the two fastest single calls and "CPU time" that of the median '
        'process CPU time per call (both less sensitive to other processes '
        'than wall time). Time saved and the goal are read from the median '
        'ratio.', '']
    for m in results:
        lines.append(f'**{m.label}** (`{m.checkpoint}`; load '
                     f'{m.load[0]:.2f} -> {m.load[1]:.2f})')
        lines.append('')
        if m.result is None:
            lines += [f'Not pruned: {m.error}.', '']
            continue
        r = m.result
        ev = r.evaluation
        removed, channels = m.channels_removed
        per_stage = ', '.join(
            f'{stage} {sum(int(p.removed.sum()) for p in r.plans if p.bn.stage == stage)}'
            f'/{sum(p.channels for p in r.plans if p.bn.stage == stage)}'
            for stage in ('layer1', 'layer2', 'layer3', 'layer4'))
        lines += [
            f'- removed {removed} of {channels} block-internal channels '
            f'({per_stage}); backbone conv FLOPs '
            f'{r.before["total"].flops / 1e6:.1f}M -> '
            f'{r.after["total"].flops / 1e6:.1f}M per '
            f'{r.input_shape[1]}x{r.input_shape[2]} image '
            f'(-{_pct(m.flops_removed)}), parameters '
            f'{r.before["total"].params / 1e6:.2f}M -> '
            f'{r.after["total"].params / 1e6:.2f}M',
            f'- self-check on {r.calibration_images} calibration images '
            f'({r.check.images} passes: alone, batched, padded): features '
            f'{r.check.features:.1e}, detections {r.check.detections:.1e} '
            f'(relative): {"ok" if r.check.passed else "FAILED"}',
        ]
        if ev is not None:
            woken = sum(ev.woken.values())
            lines.append(
                f'- val: bbox mAP {ev.map_before:.3f} -> {ev.map_after:.3f}; '
                f'{woken} of {sum(ev.removed_dead.values())} channels removed '
                f'as dead are active on some val image, on '
                f'{ev.images_waking} of {ev.images} images')
        if m.border is not None:
            b = m.border
            detections = (
                f'{b.check.differing_images} of {b.check.images} image passes '
                'get other boxes or labels' if b.check.differing_images else
                f'detections by {b.check.detections:.1e} (relative)')
            lines.append(
                f'- border effect: {b.constant_channels} live channels set to '
                'γ = 0 (constant ReLU(β)) and folded through the padded 3x3 '
                f'conv after them: features differ by {b.check.features:.1e} '
                f'(relative), {detections}; mAP {b.evaluation.map_before:.3f} '
                f'-> {b.evaluation.map_after:.3f}')
        if m.layout_check:
            lines.append('- backbone features of every timed layout '
                         '(original and pruned) against the first '
                         'original: ' + ', '.join(
                             f'{layout} {diff:.1e}'
                             for layout, diff in m.layout_check.items())
                         + ' (relative)')
        if m.error:
            lines += [f'- {m.error}', '']
            continue
        lines += ['', '| what | original per call (median) | pairs x calls '
                  '| ratio | spread | fastest calls | CPU time | time saved '
                  '| goal |', '|---|---|---|---|---|---|---|---|---|']
        for row in m.rows:
            saved = 1 - row.median
            if _backbone_pruned(row):
                backbone_ms = row.base_seconds * 1e3
                goal = (f'>= {_pct(GOAL * m.flops_removed)} '
                        f'(0.8 x {_pct(m.flops_removed)} FLOPs): '
                        + ('met' if saved >= GOAL * m.flops_removed
                           else 'not met'))
            elif row.target == 'pruned':
                need = GOAL * m.flops_removed * backbone_ms
                got = saved * row.base_seconds * 1e3
                goal = (f'>= {need:.1f} ms (0.8 x FLOPs share of the '
                        f'backbone\'s {backbone_ms:.1f} ms): '
                        f'{got:.1f} ms, ' + ('met' if got >= need
                                             else 'not met'))
            else:
                goal = 'ratio 1'
            lines.append(
                f'| {row.name} | {row.base_seconds * 1e3:.1f} ms '
                f'| {len(row.ratios)} x {row.repeat} | {row.median:.3f}x '
                f'| {min(row.ratios):.3f}-{max(row.ratios):.3f} '
                f'| {row.best:.3f}x | {row.cpu:.3f}x '
                f'| {_pct(saved)} | {goal} |')
        lines.append('')
    lines += summary(results)
    return '\n'.join(lines)


def _backbone_pruned(row: Comparison) -> bool:
    """A row the goal judges directly: the backbone, pruned vs original."""
    return row.target == 'pruned' and row.name.startswith('backbone')


def summary(results: list[Measured]) -> list[str]:
    """One line per pruned detector: the backbone's time saved in each
    timed setting, against the goal."""
    measured = [m for m in results if m.rows]
    if not measured:
        return []
    settings = [row.name.split(', ', 2)[2] for row in measured[0].rows
                if _backbone_pruned(row)]
    lines = ['Summary: backbone wall time saved (1 - median ratio) and the '
             f'goal (>= {GOAL} x the conv FLOPs removed) per setting.', '',
             '| detector | FLOPs removed | goal | ' + ' | '.join(settings)
             + ' |', '|---|---|---|' + '---|' * len(settings)]
    for m in measured:
        need = GOAL * m.flops_removed
        cells = [f'{_pct(1 - row.median)} '
                 + ('met' if 1 - row.median >= need else 'not met')
                 for row in m.rows if _backbone_pruned(row)]
        lines.append(f'| {m.label} | {_pct(m.flops_removed)} | '
                     f'>= {_pct(need)} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def records(results: list[Measured], command: str) -> dict:
    """The raw measurements, for ``--json``."""
    runs = []
    for m in results:
        run = dict(label=m.label, config=m.config, checkpoint=m.checkpoint,
                   error=m.error, load=list(m.load))
        if m.result is not None:
            r = m.result
            removed, channels = m.channels_removed
            run.update(
                flops_before=r.before['total'].flops,
                flops_after=r.after['total'].flops,
                removed=removed, channels=channels,
                self_check=dict(features=r.check.features,
                                detections=r.check.detections))
            if r.evaluation is not None:
                run['map'] = [r.evaluation.map_before,
                              r.evaluation.map_after]
        run['layout_check'] = m.layout_check
        run['rows'] = [dict(name=row.name, target=row.target,
                            base_seconds=row.base_seconds, repeat=row.repeat,
                            ratios=row.ratios, best=row.best, cpu=row.cpu)
                       for row in m.rows]
        runs.append(run)
    return dict(command=command, machine=machine(), runs=runs)


# -------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=20)
    parser.add_argument('--num-images', type=int, default=100,
                        help='calibration images (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=2,
                        help='val images per timed call (default: '
                        '%(default)s)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='torch threads of the timed rows (default: '
                        '1 2)')
    parser.add_argument('--layouts', nargs='+', choices=list(LAYOUTS),
                        default=list(LAYOUTS),
                        help='how the backbones are timed, both models '
                        'alike (NHWC: PrunedResNet with channels_last=True, '
                        'features returned as NCHW; +fused: each BN folded '
                        'into its conv by mmcv.cnn.fuse_conv_bn; default: '
                        '%(default)s)')
    parser.add_argument('--work-dirs', default=WORK_DIRS,
                        help='where the demo finetunes are (default: '
                        '%(default)s)')
    parser.add_argument('--detector', nargs=3, action='append',
                        metavar=('LABEL', 'CONFIG', 'CHECKPOINT'),
                        help='a detector to measure instead of the demo '
                        'finetunes (repeatable)')
    parser.add_argument('--out', default='docs/benchmarks.md')
    parser.add_argument('--json', help='also write the raw measurements '
                        '(every pair\'s ratio) to this file')
    args = parser.parse_args(argv)
    for name in ('pairs', 'num_images', 'batch'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be at least 1')
    if min(args.threads) < 1:
        raise UserError('--threads must be at least 1')
    if args.json:  # fail before the work, not after
        check_writable(args.json)
    detectors = args.detector or [
        (label, config, trained_checkpoint(os.path.join(args.work_dirs, run)))
        for label, (config, run) in DETECTORS.items()]
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger

    import psbn_mmdet  # noqa: F401
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    start = time.time()
    results = []
    for label, config, checkpoint in detectors:
        print(f'{label}: pruning and timing {checkpoint}', file=sys.stderr)
        results.append(measure(label, config, checkpoint, args.pairs,
                               args.num_images, args.batch, args.threads,
                               args.layouts))
    command = shlex.join(['python', '-m', 'research.prune_benchmark'] + list(
        argv if argv is not None else sys.argv[1:]))
    text = render(results, args.pairs, args.num_images, args.batch, command,
                  (time.time() - start) / 60)
    write_generated(args.out, 'prune', text,
                    title='Benchmarks: psBN against BN')
    if args.json:
        write_atomically({args.json: json.dumps(
            records(results, command), indent=1).encode()})
    print(text)


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
