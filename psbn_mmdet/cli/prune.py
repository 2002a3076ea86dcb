"""``prune_dead``: remove a detector's dead backbone channels, exactly."""
from __future__ import annotations

import argparse

from ..pruning import (CHECK_TOLERANCE, DEFAULT_EVAL_IMAGES,
                       DEFAULT_NUM_IMAGES, SUPPORTED, format_result,
                       prune_dead)
from ..utils.errors import UserError
from .common import add_thresholds, check_at_least_one, check_thresholds, tool


def prune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='prune_dead',
        description='Remove the block-internal backbone channels that are '
        'dead (or constant) on calibration images, check that the pruned '
        'detector computes what the original computes on them, and write '
        'a config and checkpoint for mmdet\'s tools. Backbones: '
        f'{", ".join(SUPPORTED)}.')
    parser.add_argument('config', help='the detector\'s mmdet config')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('out_dir', help='where <config name>_pruned.py and '
                        '.pth go')
    parser.add_argument('--data-config',
                        help='mmdet config whose test (or val) images '
                        'calibrate (default: the training images of CONFIG '
                        'through its test pipeline)')
    parser.add_argument('--num-images', type=int, default=DEFAULT_NUM_IMAGES,
                        help='calibration images (default: %(default)s)')
    parser.add_argument('--eval-images', type=int,
                        default=DEFAULT_EVAL_IMAGES,
                        help='test images on which bbox mAP is measured '
                        'before and after (default: %(default)s; 0: none)')
    parser.add_argument('--batch-size', type=int, default=4,
                        help='images per pass (default: %(default)s)')
    add_thresholds(parser, 'constant')
    parser.add_argument('--channels-last', action='store_true',
                        help='the pruned backbone computes in the '
                        'channels-last memory format (on CPU the format in '
                        'which the removed FLOPs save time; the self-check '
                        'covers it)')
    return parser


def prune_main(argv: list[str] | None = None) -> None:
    """Remove dead channels: ``prune_dead CONFIG CHECKPOINT OUT_DIR ...``.

    Nothing is written, and the exit status is 2, when the pruned detector
    fails its self-check.
    """
    args = prune_parser().parse_args(argv)
    check_at_least_one('--num-images', args.num_images)
    if args.eval_images < 0:
        raise UserError('--eval-images must be 0 (none) or more '
                        f'(got {args.eval_images})')
    check_at_least_one('--batch-size', args.batch_size)
    check_thresholds(args)
    result = prune_dead(args.config, args.checkpoint, args.out_dir,
                        data_config=args.data_config,
                        num_images=args.num_images,
                        batch_size=args.batch_size,
                        gamma_threshold=args.gamma_thr,
                        activation_threshold=args.act_thr,
                        channels_last=args.channels_last,
                        eval_images=args.eval_images)
    print(format_result(result), end='')
    if not result.check.passed:
        folded = sum(int(plan.folded.sum()) for plan in result.plans)
        dead = sum(int(plan.dead.sum()) for plan in result.plans)
        raise UserError(
            'the pruned detector differs from the original on the '
            f'calibration images by more than {CHECK_TOLERANCE:g} '
            f'(relative); nothing written. It removed {dead} channel(s) '
            f'never above --act-thr {args.act_thr:g} and folded {folded} '
            f'with |γ| < --gamma-thr {args.gamma_thr:g}: lower '
            + ('--gamma-thr' if folded else '--act-thr'))
    print(f'wrote {result.config}\nwrote {result.checkpoint}')


main = tool('prune_dead', prune_main)
