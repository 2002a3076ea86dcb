"""``export_bn``: a psBN config and checkpoint as plain BN for stock mmdet."""
from __future__ import annotations

import argparse
import sys

from ..export import export_bn
from .common import tool


def export_main(argv: list[str] | None = None) -> None:
    """Export a psBN model for stock mmdet: ``export_bn CONFIG CHECKPOINT OUT_DIR``.

    Writes OUT_DIR/<config name>_bn.py and OUT_DIR/<config name>_bn.pth;
    stock mmdet (no psbn_mmdet import) loads them strictly and computes the
    same outputs.
    """
    parser = argparse.ArgumentParser(
        prog='export_bn', description='Export a psBN config and checkpoint '
        'as plain BN for stock mmdet')
    parser.add_argument('config', help='the psBN training config')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('out_dir', help='where the BN config and checkpoint go')
    args = parser.parse_args(argv)
    exported = export_bn(args.config, args.checkpoint, args.out_dir)
    for warning in exported.warnings:
        print(f'export_bn: warning: {warning}', file=sys.stderr)
    print(f'wrote {exported.config}\nwrote {exported.checkpoint}')


main = tool('export_bn', export_main)
