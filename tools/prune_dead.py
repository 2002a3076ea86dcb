#!/usr/bin/env python
"""Remove a detector's dead backbone channels, exactly:
`python tools/prune_dead.py CONFIG CHECKPOINT OUT_DIR [--data-config C --num-images N]`.

A shim with an mmdet-style tool name over :mod:`psbn_mmdet.cli` (installed as
the console script ``psbn-prune-dead``).
"""
from psbn_mmdet.cli.prune import main as prune_dead

if __name__ == '__main__':
    prune_dead()
