"""``collapse_report``: collapsed BN channels per stage of a checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmengine.utils import ProgressBar

from ..analysis.probe import DEFAULT_BATCH_SIZE, ActivationProbe
from ..analysis.report import collapse_report as count
from ..analysis.report import format_table, notes, report_files
from ..io.builders import load_backbone
from ..io.checkpoint import read_checkpoint
from ..pruning import removable_column
from ..utils.errors import UserError
from ..utils.files import write_atomically
from .common import (add_thresholds, check_at_least_one, check_output_paths,
                     check_thresholds, tool)


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='collapse_report',
        description='Collapsed BN channels per stage of a ResNet checkpoint: '
        'by parameters (|γ| < threshold) and, given data, by activations '
        '(pre-ReLU channels never active on N images).')
    parser.add_argument('checkpoint', help='mmengine/mmdet checkpoint, '
                        'torchvision ResNet state dict or bare state dict')
    parser.add_argument('--config', help='mmdet config whose model.backbone '
                        'the checkpoint must match (default: --data-config)')
    add_thresholds(parser, 'collapsed')
    parser.add_argument('--data-config',
                        help='mmdet config whose test (or val) data set and '
                        'data preprocessor feed the backbone')
    parser.add_argument('--num-images', type=int,
                        help='images of that data set (default: all)')
    parser.add_argument('--batch-size', type=int, default=DEFAULT_BATCH_SIZE,
                        help='images per backbone pass (default: %(default)s)')
    parser.add_argument('--compare', metavar='CHECKPOINT2',
                        help='a second checkpoint to put side by side')
    parser.add_argument('--json', metavar='OUT.json', help='write the report')
    parser.add_argument('--csv', metavar='OUT.csv',
                        help='write the per-stage rows')
    parser.add_argument('--plot-dir', metavar='DIR',
                        help='write PNG plots per stage and a summary')
    return parser


def _check_arguments(args) -> None:
    check_at_least_one('--num-images', args.num_images)
    if args.num_images is not None and args.data_config is None:
        raise UserError('--num-images needs --data-config')
    check_thresholds(args)
    check_at_least_one('--batch-size', args.batch_size)
    check_output_paths(files=(args.json, args.csv), dirs=(args.plot_dir, ))


def plot_labels(paths: list[str]) -> list[str]:
    """Names of the compared checkpoints in the plots: their file names, or
    their folders' where the file names are the same (``iter_100.pth`` of
    two work dirs)."""
    for name in (lambda p: Path(p).name, lambda p: Path(p).parent.name,
                 lambda p: str(Path(p).parent)):
        labels = [name(path) for path in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [f'{i + 1}: {Path(p).name}' for i, p in enumerate(paths)]


def _progress(total: int):
    """mmengine's progress bar on stderr, one per measured checkpoint."""
    return ProgressBar(total, file=sys.stderr).update


def report_main(argv: list[str] | None = None) -> None:
    """Collapsed BN channels per stage: ``collapse_report CHECKPOINT ...``.

    Every check runs and every output is rendered before anything is
    written.
    """
    args = report_parser().parse_args(argv)
    _check_arguments(args)
    paths = [path for path in (args.checkpoint, args.compare) if path]
    ckpts = [read_checkpoint(path, mmap=True) for path in paths]
    probe = None
    if args.data_config is not None:
        probe = ActivationProbe(args.config or args.data_config,
                                args.data_config, args.num_images,
                                args.batch_size)
        if args.num_images and args.num_images > probe.available:
            print(f'note: {args.data_config} has {probe.available} images; '
                  'using all', file=sys.stderr)
    elif args.config is not None:
        for ckpt in ckpts:
            load_backbone(args.config, ckpt)
    reports = []
    for ckpt in ckpts:
        progress = None if probe is None else _progress(probe.num_images)
        reports.append(count(ckpt, args.gamma_thr, args.act_thr, probe,
                             args.config, progress))
        if probe is not None:
            print(file=sys.stderr)  # after the progress bar
            # what prune_dead would remove
            reports[-1].removable = removable_column(reports[-1], ckpt, probe,
                                                     args.config)
    files = report_files(reports, args.json, args.csv, args.plot_dir,
                         plot_labels(paths) if len(paths) > 1 else None)
    print(format_table(*reports), end='')
    for report in reports:
        for line in notes(report):
            print(line, file=sys.stderr)
    write_atomically(files)
    for path in files:
        print(f'wrote {path}')


main = tool('collapse_report', report_main)
