"""Demo-scale detection finetune: BN vs psBN at the default and an aggressive lr.

Runs, each in its own ``tools/train.py`` process (mmdet's real path):

1. pre-train a BN Faster R-CNN on the demo data (skipped when its checkpoint
   exists): the checkpoint every finetune starts from;
2. finetune it with BN (monitor hook) and with psBN (recovery hook) at each
   learning rate, with mmdet's finetuning setup (frozen stem and layer1,
   ``norm_eval=True``);
3. per run: ``coco/bbox_mAP`` (CocoMetric), the collapse report of the final
   checkpoint (parameter and activation criteria) and the hooks' logged
   per-stage dead counts over iterations.

Results go to a markdown file with tables and plots, between its
``finetune`` markers (the prose around them is kept).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from psbn_mmdet.cli import run_tool

from .markdown import write_generated
from .runlogs import find_scalars, markdown_table, plot_runs

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the checkout
PRETRAIN = 'configs/demo/faster_rcnn_r50_bn_demo_pretrain.py'
FINETUNE = {'BN': 'configs/demo/faster_rcnn_r50_bn_demo_finetune.py',
            'psBN': 'configs/demo/faster_rcnn_r50_psbn_demo_finetune.py'}
PRETRAINED = 'work_dirs/demo_pretrain/iter_80.pth'


def _train(config: str, work_dir: str, *options: str,
           reuse: bool = False) -> float:
    """Train (or, with ``reuse``, keep a finished run); returns wall seconds."""
    seconds_file = osp.join(REPO, work_dir, 'train_seconds.txt')
    if reuse and osp.isfile(seconds_file):
        with open(seconds_file) as f:
            return float(f.read())
    start = time.perf_counter()
    command = [sys.executable, 'tools/train.py', config, '--work-dir',
               work_dir]
    if options:
        command += ['--cfg-options', *options]
    with open(osp.join(work_dir + '.log'), 'w') as log:
        subprocess.run(command, cwd=REPO, check=True, stdout=log,
                       stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    with open(seconds_file, 'w') as f:
        f.write(f'{seconds:.1f}\n')
    return seconds


def _last_metrics(work_dir: str) -> tuple[dict, float | None]:
    """The last CocoMetric record and the last logged training loss (mean
    over the log interval)."""
    metrics, loss = {}, None
    with open(find_scalars(osp.join(REPO, work_dir))) as f:
        for line in f:
            record = json.loads(line)
            if 'coco/bbox_mAP' in record:
                metrics = record
            elif 'loss' in record:
                loss = record['loss']
    return metrics, loss


def _collapse_report(config: str, work_dir: str, num_images: int) -> dict:
    with open(osp.join(REPO, work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    out = osp.join(REPO, work_dir, 'collapse_report.json')
    subprocess.run([sys.executable, 'tools/collapse_report.py', checkpoint,
                    '--config', config, '--data-config', config,
                    '--num-images', str(num_images), '--json', out],
                   cwd=REPO, check=True, capture_output=True)
    with open(out) as f:
        return json.load(f)


def run(out_md: str, figure_dir: str, lrs=(0.02, 0.06), seeds=(0, ),
        num_images: int = 16, reuse: bool = False) -> None:
    """BN and psBN finetunes per lr and seed; a seed is shared by the pair
    (same data order, flips and proposal sampling)."""
    os.makedirs(osp.join(REPO, 'work_dirs'), exist_ok=True)
    timings = {}
    if not osp.isfile(osp.join(REPO, PRETRAINED)):
        timings['pretrain'] = _train(PRETRAIN, 'work_dirs/demo_pretrain')
    results = []
    for lr in lrs:
        for seed in seeds:
            for norm, config in FINETUNE.items():
                work_dir = (f'work_dirs/demo_finetune_{norm.lower()}'
                            f'_lr{lr:g}_seed{seed}')
                timings[work_dir] = _train(
                    config, work_dir, f'optim_wrapper.optimizer.lr={lr}',
                    f'randomness.seed={seed}', reuse=reuse)
                metrics, loss = _last_metrics(work_dir)
                results.append(dict(
                    norm=norm, lr=lr, seed=seed, work_dir=work_dir,
                    metrics=metrics, loss=loss,
                    report=_collapse_report(config, work_dir, num_images)))
    _write(out_md, figure_dir, results, lrs, seeds, timings)


def _write(out_md, figure_dir, results, lrs, seeds, timings) -> None:
    os.makedirs(figure_dir, exist_ok=True)
    lines = [
        'Command: `python -m research.finetune_study --lrs '
        f'{" ".join(f"{lr:g}" for lr in lrs)} --seeds '
        f'{" ".join(str(seed) for seed in seeds)}` (this section is its '
        'output; wall times depend on what else ran on the 2 cores).',
        'Faster R-CNN R50-FPN pre-trained for 80 iterations on the demo data '
        f'(`{PRETRAIN}`), then finetuned 40 iterations with mmdet\'s '
        'finetuning setup (frozen stem + layer1, `norm_eval=True`), batch 2, '
        'SGD momentum 0.9, weight decay 1e-4; psBN window 10 iterations.', '',
        '| norm | lr | seed | bbox mAP | mAP@50 | final train loss '
        '| \\|γ\\| < 1e-3 (all BN ch.) '
        '| dead by activation (pre-ReLU ch., 16 val images) |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for r in results:
        total, m = r['report']['total'], r['metrics']
        # CocoMetric logs nothing when a run has no detection at all
        mAP, mAP50 = (('no detections', '-') if not m else
                      (f"{m['coco/bbox_mAP']:.3f}",
                       f"{m['coco/bbox_mAP_50']:.3f}"))
        loss = '-' if r['loss'] is None else f"{r['loss']:.4g}"
        lines.append(
            f"| {r['norm']} | {r['lr']:g} | {r['seed']} | {mAP} | {mAP50} "
            f"| {loss} "
            f"| {total['collapsed_gamma']} ({total['collapsed_gamma_pct']:.2f}%) "
            f"| {total['dead_activation']} ({total['dead_activation_pct']:.2f}%) |")
    lines += ['', '## Per-stage collapse report (final checkpoints)', '']
    for r in results:
        stages = ', '.join(
            f"{s['name']} {s['collapsed_gamma']}/{s['dead_activation']}"
            for s in r['report']['stages'])
        lines.append(f"- {r['norm']} lr {r['lr']:g} seed {r['seed']} "
                     f"(|γ|<1e-3 / dead by activation): {stages}")
    for lr in lrs:  # the curves of the first seed
        runs = {r['norm']: find_scalars(osp.join(REPO, r['work_dir']))
                for r in results if r['lr'] == lr and r['seed'] == seeds[0]}
        png = osp.join(figure_dir, f'demo_finetune_dead_lr{lr:g}.png')
        plot_runs(runs, png, 'dead')
        rel = osp.relpath(png, osp.dirname(osp.abspath(out_md)))
        lines += ['', f'## Dead pre-ReLU channels per stage over training, '
                  f'lr {lr:g}, seed {seeds[0]} (the hooks\' own scalars)', '',
                  markdown_table(runs, 'dead', every=10), '',
                  f'![dead channels, lr {lr:g}]({rel})']
    lines += ['', '## Wall time (2 CPU cores)', '']
    lines += [f'- {name}: {seconds / 60:.1f} min'
              for name, seconds in timings.items()]
    write_generated(out_md, 'finetune', '\n'.join(lines),
                    title='Demo-scale detection finetune: BN vs psBN')


# -------------------------------------------------------------------- CLI
PROG = 'finetune_study'


def main(argv=None) -> None:
    """Demo-scale finetune, BN vs psBN per lr and seed.

    Writes the ``finetune`` section of docs/demo_finetune.md and
    docs/figures/demo_finetune_dead_lr*.png (run tools/make_demo_data.py
    first).
    """
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=main.__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/demo_finetune.md')
    parser.add_argument('--figures', default='docs/figures')
    parser.add_argument('--lrs', type=float, nargs='+', default=[0.02, 0.06])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='randomness.seed of each BN/psBN pair')
    parser.add_argument('--reuse', action='store_true',
                        help='keep finished runs (work_dirs/demo_finetune_*), '
                        'only redo the report')
    args = parser.parse_args(argv)
    run(args.out, args.figures, tuple(args.lrs), tuple(args.seeds),
        reuse=args.reuse)


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
