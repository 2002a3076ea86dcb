#!/usr/bin/env python
"""Train a detector with mmdet's flags: `python tools/train.py CONFIG [--work-dir DIR] ...`

A shim with mmdet's tool name over :mod:`psbn_mmdet.cli` (installed as the
console script ``psbn-train``).
"""
from psbn_mmdet.cli.runner import train

if __name__ == '__main__':
    train()
