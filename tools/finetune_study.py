#!/usr/bin/env python
"""Demo-scale finetune, BN vs psBN at the default and 3x lr: ``python tools/finetune_study.py``.

Writes docs/demo_finetune.md and docs/figures/demo_finetune_dead_lr*.png
(about 30 min on 2 CPU cores; run tools/make_demo_data.py first).
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
    parser.add_argument('--reuse', action='store_true',
                        help='keep finished runs (work_dirs/demo_finetune_*), only redo the report')
    args = parser.parse_args()
    run(args.out, args.figures, tuple(args.lrs), reuse=args.reuse)
