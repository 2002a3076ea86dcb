"""The demo's command lines: ``make_demo_data`` and ``python -m psbn_mmdet.demo``.

::

    python tools/make_demo_data.py [--out-dir data/demo] [--num-train N] ...
    python -m psbn_mmdet.demo check-pretrained CONFIG [--work-dir DIR]
    python -m psbn_mmdet.demo compare BN=WORK_DIR psBN=WORK_DIR \\
        [--pretrained WORK_DIR [--pretrained-label LABEL]] [--num-images N]
        [--evidence SUMMARY.json] --out-dir DIR

``check-pretrained`` prints the path of a finished training run's checkpoint
(exit 0), or says on stderr why there is none to reuse (exit 1).
``compare`` prints the comparison table and writes its files
(:func:`psbn_mmdet.demo.compare.compare`).  Bad input is one line, exit 2
(:func:`psbn_mmdet.cli.run_tool`).
"""
from __future__ import annotations

import argparse
import sys

from ..cli import tool
from ..cli.common import check_at_least_one
from ..utils.errors import UserError
from .compare import (DEFAULT_NUM_IMAGES, check_pretrained, compare,
                      load_run, read_evidence)
from .data import TASKS
from .data import make_demo_data as make_data
from .shapes import DOMAINS


def demo_data_main(argv: list[str] | None = None) -> None:
    """Write the synthetic COCO-format demo data set the demo configs use."""
    parser = argparse.ArgumentParser(
        prog='make_demo_data',
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
    parser.add_argument('--image-size', type=int, nargs=2, default=(256, 192),
                        metavar=('WIDTH', 'HEIGHT'),
                        help='default: 256 192')
    parser.add_argument('--task', choices=list(TASKS), default='shapes',
                        help="'shapes': the demo's 5 coloured shapes "
                        "(default); 'textured': 20 classes of shape x "
                        'texture, clutter, small and touching objects')
    parser.add_argument('--domain', choices=DOMAINS,
                        help="--task textured: the appearance (default: "
                        "source)")
    parser.add_argument('--clutter', type=int,
                        help='--task textured: the most unannotated '
                        "distractors per image (default: the domain's)")
    parser.add_argument('--no-touching', dest='touching',
                        action='store_false', default=None,
                        help='--task textured: keep objects apart')
    args = parser.parse_args(argv)
    try:
        paths = make_data(args.out_dir, num_train=args.num_train,
                          num_val=args.num_val,
                          image_size=tuple(args.image_size), seed=args.seed,
                          force=args.force, task=args.task,
                          domain=args.domain, clutter=args.clutter,
                          touching=args.touching)
    except ValueError as error:
        raise UserError(str(error)) from None
    classes = TASKS[args.task]
    names = (', '.join(classes) if len(classes) <= 5 else
             f'{len(classes)} classes ({classes[0]}, ..., {classes[-1]})')
    print(f'demo data in {paths["root"]}: {args.num_train} train and '
          f'{args.num_val} val images of {names}')


make_demo_data = tool('make_demo_data', demo_data_main)


def _labelled(text: str) -> tuple[str, str]:
    label, sep, work_dir = text.partition('=')
    if not sep or not label or not work_dir:
        raise argparse.ArgumentTypeError(f'expected LABEL=WORK_DIR, got '
                                          f'{text!r}')
    return label, work_dir


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog='python -m psbn_mmdet.demo',
        description='The end of `make demo`: reuse a pretrained checkpoint, '
        'compare BN and psBN finetunes.')
    commands = main.add_subparsers(dest='command', required=True)
    check = commands.add_parser(
        'check-pretrained', help='print the checkpoint of a finished run of '
        'CONFIG (exit 0), or why there is none (exit 1)')
    check.add_argument('config')
    check.add_argument('--work-dir', help='default: work_dirs/<config name>')
    comp = commands.add_parser(
        'compare', help='the comparison table and plots of finished runs')
    comp.add_argument('runs', nargs='+', type=_labelled,
                      metavar='LABEL=WORK_DIR')
    comp.add_argument('--pretrained', metavar='WORK_DIR',
                      help='the run the others started from (a column too)')
    comp.add_argument('--pretrained-label', default='pretrained',
                      metavar='LABEL',
                      help='its column\'s label (default: %(default)s)')
    comp.add_argument('--num-images', type=int, default=DEFAULT_NUM_IMAGES,
                      help='val images for the dead-channel criterion '
                      '(default: %(default)s)')
    comp.add_argument('--evidence', metavar='SUMMARY.json', nargs='+',
                      help='committed benchmark summaries: the first of the '
                      "runs' setting, any others of cells the demo does not "
                      'run (each says so); their paired differences are '
                      'printed under the table')
    comp.add_argument('--out-dir', required=True)
    return main


def main(argv=None) -> int:
    """Bad input raises :class:`UserError` (:func:`psbn_mmdet.cli.run_tool`
    prints it as one line, exit 2); no checkpoint to reuse is exit 1."""
    args = parser().parse_args(argv)
    if args.command == 'check-pretrained':
        try:
            print(check_pretrained(args.config, args.work_dir))
        except UserError as error:
            print(f'no pretrained checkpoint to reuse: {error}',
                  file=sys.stderr)
            return 1
        return 0
    check_at_least_one('--num-images', args.num_images)
    evidence = [read_evidence(path) for path in args.evidence or []]
    runs = [load_run(label, work_dir) for label, work_dir in args.runs]
    pretrained = (load_run(args.pretrained_label, args.pretrained)
                  if args.pretrained else None)
    print(f'measuring dead channels of {", ".join(r.label for r in runs)}',
          file=sys.stderr)
    comparison = compare(runs, args.out_dir, pretrained, args.num_images,
                         evidence)
    print(comparison.text, end='')
    print(f'wrote {args.out_dir}/: {", ".join(comparison.files)}')
    return 0

