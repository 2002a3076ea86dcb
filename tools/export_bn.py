#!/usr/bin/env python
"""Plain-BN config and checkpoint for stock mmdet:
`python tools/export_bn.py CONFIG CHECKPOINT OUT_DIR`.

A shim with mmdet's tool name over :mod:`psbn_mmdet.cli` (installed as the
console script ``psbn-export-bn``).
"""
from psbn_mmdet.cli.export import main as export_bn

if __name__ == '__main__':
    export_bn()
