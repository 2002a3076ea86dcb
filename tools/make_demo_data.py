"""Write the synthetic COCO-format demo data set the demo configs train on.

    python tools/make_demo_data.py [--out-dir data/demo] [--num-train N]
        [--num-val N] [--seed S] [--force]

Up-to-date output (same parameters) is left alone unless ``--force``.
Bad input: one line on stderr and exit code 2.  See psbn_mmdet/demo_data.py.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec('psbn_mmdet') is None:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psbn_mmdet.demo_data import DEMO_CLASSES, make_demo_data  # noqa: E402

PROG = 'make_demo_data'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Draw coloured shapes on noisy backgrounds and write them '
        'as a COCO detection data set (annotations/, train/, val/).')
    parser.add_argument('--out-dir', default='data/demo',
                        help='data root to write (default: data/demo)')
    parser.add_argument('--num-train', type=int, default=48,
                        help='training images (default: 48)')
    parser.add_argument('--num-val', type=int, default=16,
                        help='validation images (default: 16)')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed (default: 0)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if the output is up to date')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        paths = make_demo_data(args.out_dir, num_train=args.num_train,
                               num_val=args.num_val, seed=args.seed,
                               force=args.force)
    except ValueError as error:
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 2
    print(f'demo data in {paths["root"]}: {args.num_train} train and '
          f'{args.num_val} val images of {", ".join(DEMO_CLASSES)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
