#!/usr/bin/env python
"""Test a detector: ``python tools/test.py CONFIG CHECKPOINT [--out X.pkl] ...``."""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from psbn_mmdet.cli import test_main  # noqa: E402

if __name__ == '__main__':
    test_main()
