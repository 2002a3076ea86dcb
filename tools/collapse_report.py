"""Collapsed BN channels per ResNet stage: by |γ| and by activations.

    python tools/collapse_report.py CHECKPOINT [--config CONFIG]
        [--gamma-thr 1e-3] [--act-thr 1e-12]
        [--data-config CONFIG --num-images N] [--compare CHECKPOINT2]
        [--json OUT.json] [--csv OUT.csv] [--plot-dir DIR]

Without data the checkpoint is only read (fast, no mmdet needed); with
``--data-config`` the backbone runs on N images of the config's test set.
Bad input: one line on stderr and exit code 2.  See psbn_mmdet/report.py.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec('psbn_mmdet') is None:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psbn_mmdet.collapse import (  # noqa: E402
    ACTIVATION_THRESHOLD, GAMMA_THRESHOLD)
from psbn_mmdet.report import (  # noqa: E402
    DEFAULT_BATCH_SIZE, ReportError, run)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='collapse_report',
        description='Collapsed BN channels per stage of a ResNet checkpoint: '
        'by parameters (|γ| < threshold) and, given data, by activations '
        '(pre-ReLU channels never active on N images).')
    parser.add_argument('checkpoint', help='mmengine/mmdet checkpoint, '
                        'torchvision ResNet state dict or bare state dict')
    parser.add_argument('--config', help='mmdet config whose model.backbone '
                        'the checkpoint must match (default: --data-config)')
    parser.add_argument('--gamma-thr', type=float, default=GAMMA_THRESHOLD,
                        help='collapsed when |γ| < this '
                        '(default: %(default)g)')
    parser.add_argument('--act-thr', type=float, default=ACTIVATION_THRESHOLD,
                        help='dead when the max post-ReLU activation < this '
                        '(default: %(default)g)')
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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args.checkpoint, compare=args.compare, config=args.config,
            data_config=args.data_config, num_images=args.num_images,
            gamma_threshold=args.gamma_thr,
            activation_threshold=args.act_thr, batch_size=args.batch_size,
            json_path=args.json, csv_path=args.csv, plot_dir=args.plot_dir)
    except ReportError as error:
        print(f'collapse_report: error: {" ".join(str(error).split())}',
              file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
