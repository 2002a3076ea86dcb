#!/usr/bin/env python
"""Export a psBN model for stock mmdet: ``python tools/export_bn.py CONFIG CHECKPOINT OUT_DIR``.

Writes OUT_DIR/<config name>_bn.py and OUT_DIR/<config name>_bn.pth; stock mmdet
(no psbn_mmdet import) loads them strictly and computes the same outputs.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the psBN training config')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('out_dir', help='where the BN config and checkpoint go')
    args = parser.parse_args()
    import psbn_mmdet  # noqa: F401  registers psBN to read the config
    from psbn_mmdet.surgery import export_bn
    try:
        config, checkpoint = export_bn(args.config, args.checkpoint,
                                       args.out_dir)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f'error: {error}\n')
    print(f'wrote {config}\nwrote {checkpoint}')


if __name__ == '__main__':
    main()
