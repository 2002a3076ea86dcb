#!/usr/bin/env python
"""Demo-scale finetune, BN vs psBN per lr and seed: ``python tools/finetune_study.py``.

Writes the ``finetune`` section of docs/demo_finetune.md and
docs/figures/demo_finetune_dead_lr*.png (about 2.5 min per run on 2 idle CPU
cores, 2 runs per lr and seed; run tools/make_demo_data.py first).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from psbn_mmdet.finetune_study import run  # noqa: E402

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/demo_finetune.md')
    parser.add_argument('--figures', default='docs/figures')
    parser.add_argument('--lrs', type=float, nargs='+', default=[0.02, 0.06])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='randomness.seed of each BN/psBN pair')
    parser.add_argument('--reuse', action='store_true',
                        help='keep finished runs (work_dirs/demo_finetune_*), only redo the report')
    args = parser.parse_args()
    run(args.out, args.figures, tuple(args.lrs), tuple(args.seeds),
        reuse=args.reuse)
