#!/usr/bin/env python
"""psBN vs BN speed, side by side in one process: ``python tools/benchmark_overhead.py``.

Writes its tables between the ``benchmark`` markers of docs/benchmarks.md (the
prose around them is kept; run tools/make_demo_data.py first: the detector
and report benchmarks read the demo data).
"""
import argparse
import logging
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import psbn_mmdet  # noqa: E402,F401
from psbn_mmdet import benchmark  # noqa: E402
from psbn_mmdet.markdown import write_generated  # noqa: E402

DEMO = 'configs/demo/faster_rcnn_r50_psbn_demo.py'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=10)
    parser.add_argument('--out', default='docs/benchmarks.md')
    args = parser.parse_args()
    if args.pairs < 1:
        parser.exit(2, 'error: --pairs must be >= 1\n')
    from mmengine.logging import MMLogger
    # init_weights logs every parameter of every model built here
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    start = time.time()
    load = os.getloadavg()[0]
    rows = [
        benchmark.backbone_train_step(args.pairs, finetune=False),
        benchmark.backbone_train_step(args.pairs, finetune=True),
        *benchmark.detector_train_iteration(args.pairs, DEMO),
        *benchmark.inference(args.pairs),
    ]
    activation = benchmark.report_activation_mode(args.pairs, DEMO)
    rows.append(activation)
    median, worst = benchmark.report_parameter_mode()
    lines = [
        f'Machine: {benchmark.machine()}; load average '
        f'{load:.2f} at the start.', '',
        f'Command: `python tools/benchmark_overhead.py --pairs {args.pairs}`'
        f' ({(time.time() - start) / 60:.1f} min). Each row alternates the '
        f'two variants in one process ({args.pairs} pairs after 2 warm-up '
        'runs each; a sample times the given number of consecutive calls) '
        'on the same weights and inputs; the ratio is psBN (or the probe) '
        'over BN, median and min-max over the pairs. Training rows use '
        'lr 0, so every step does the same work on the same weights.', '',
        '| what | BN time per call (median) | pairs x calls | ratio '
        '| spread | target |',
        '|---|---|---|---|---|---|',
        *[row.row() for row in rows], '',
        f'Report tool, activation mode: '
        f'{activation.images / (activation.base_seconds * activation.median):.1f}'
        f' images/s against {activation.images / activation.base_seconds:.1f}'
        ' images/s of plain backbone inference on the same batches '
        f'({1 / activation.median:.2f}x).', '',
        f'Report tool, parameter mode, whole command on an R50 checkpoint '
        f'(start-up included): median {median:.2f} s, worst {worst:.2f} s '
        'of 5 runs (target < 3 s).',
    ]
    write_generated(args.out, 'benchmark', '\n'.join(lines),
                    title='Benchmarks: psBN against BN')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
