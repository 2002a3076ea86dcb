#!/usr/bin/env python
"""Write the demo data set: `python tools/make_demo_data.py [--out-dir data/demo]`

A shim with mmdet's tool name over :mod:`psbn_mmdet.cli` (installed as the
console script ``psbn-make-demo-data``).
"""
from psbn_mmdet.demo.cli import make_demo_data

if __name__ == '__main__':
    make_demo_data()
