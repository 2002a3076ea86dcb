#!/usr/bin/env python
"""Collapsed BN channels per stage: `python tools/collapse_report.py CHECKPOINT ...`

A shim with mmdet's tool name over :mod:`psbn_mmdet.cli` (installed as the
console script ``psbn-collapse-report``).
"""
from psbn_mmdet.cli.report import main as collapse_report

if __name__ == '__main__':
    collapse_report()
