#!/usr/bin/env python
"""Train a detector: ``python tools/train.py CONFIG [--work-dir DIR] ...`` (mmdet's flags)."""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from psbn_mmdet.cli import train_main  # noqa: E402

if __name__ == '__main__':
    train_main()
