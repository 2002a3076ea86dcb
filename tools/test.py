#!/usr/bin/env python
"""Test a detector: `python tools/test.py CONFIG CHECKPOINT [--out X.pkl] ...`

A shim with mmdet's tool name over :mod:`psbn_mmdet.cli` (installed as the
console script ``psbn-test``).
"""
from psbn_mmdet.cli.runner import test

if __name__ == '__main__':
    test()
