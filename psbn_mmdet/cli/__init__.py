"""The command-line tools, each an argument parser and one call into the package.

Installed as console scripts (``psbn-train``, ``psbn-test``,
``psbn-collapse-report``, ``psbn-export-bn``, ``psbn-make-demo-data``) and
called by the checkout's ``tools/*.py`` shims, which keep mmdet's names.
``train`` and ``test`` behave like mmdet 3.3's own tools, plus:

* ``psbn_mmdet`` is imported first: psBN registered, safe-loading allow-list
  for resume in place;
* ``--launcher pytorch|slurm`` works on CPU-only machines (gloo, see ``dist``).

One error convention for every tool (:func:`run_tool`): bad input is one
line, ``<prog>: error: <message>``, on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

from ..utils.errors import EXIT_USAGE, UserError, one_line

#: errors that mean "the config or an option in it is wrong" when the
#: Runner is built from it
CONFIG_ERRORS = (FileNotFoundError, KeyError, TypeError, ValueError,
                 ImportError, SyntaxError, NameError, AttributeError)


def run_tool(prog: str, main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`UserError` becomes one line and exit 2."""
    try:
        return main(argv) or 0
    except UserError as error:
        print(f'{prog}: error: {one_line(error)}', file=sys.stderr)
        return EXIT_USAGE


def _exit(prog: str, main):
    """A console-script entry point for ``main``."""

    def entry(argv: list[str] | None = None) -> None:
        sys.exit(run_tool(prog, main, argv))

    entry.__name__ = f'{prog}_entry'
    entry.__doc__ = main.__doc__
    return entry


# ------------------------------------------------------------ train and test
def _dict_action():
    """mmengine's ``DictAction``, with a value it cannot parse reported as
    an argument error (it recursed until RecursionError on some)."""
    from mmengine.config import DictAction

    class CfgOptions(DictAction):

        def __call__(self, parser, namespace, values, option_string=None):
            try:
                super().__call__(parser, namespace, values, option_string)
            except (AssertionError, RecursionError, ValueError) as error:
                raise argparse.ArgumentError(
                    self, f'cannot parse {" ".join(values)!r} '
                    f'({type(error).__name__})') from None

    return CfgOptions


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=_dict_action(),
        help='override settings in the config, key=value pairs '
        '(e.g. train_cfg.max_iters=10)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch >= 2.0's launcher passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _runner_config(path: str, args):
    from ..utils.config import load_config
    from ..engine.dist import setup_cpu_distributed
    cfg = load_config(path, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    setup_cpu_distributed(cfg, args.launcher)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return cfg


def _build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    try:
        if 'runner_type' not in cfg:
            return Runner.from_cfg(cfg)
        return RUNNERS.build(cfg)
    except CONFIG_ERRORS as error:
        raise UserError(one_line(error)) from None


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='train',
                                     description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work directory')
    _common_args(parser)
    return parser


def train_main(argv: list[str] | None = None) -> None:
    """Train a detector: ``train CONFIG [--work-dir DIR] ...`` (mmdet's flags)."""
    import psbn_mmdet  # noqa: F401  registers psBN, hooks, safe globals
    args = train_parser().parse_args(argv)
    cfg = _runner_config(args.config, args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserError('--auto-scale-lr needs '
                            'auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
        _check_checkpoint(_latest_checkpoint(cfg.work_dir))
    elif args.resume is not None:
        _check_checkpoint(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if _is_rank_zero():
        from ..utils.workdir import WorkDirLock
        with WorkDirLock(cfg.work_dir):
            _build_runner(cfg).train()
    else:
        _build_runner(cfg).train()


def _is_rank_zero() -> bool:
    """The process that owns the work dir (ranks share it)."""
    rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))
    return rank == '0'


def _latest_checkpoint(work_dir: str) -> str | None:
    """What ``--resume`` without a path resumes from (mmengine's rule:
    ``last_checkpoint`` names it); None when there is none yet."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    if not osp.isfile(path):
        raise UserError(f'{record} names {path}, which does not exist; '
                        'resume from a checkpoint with --resume PATH')
    return path


def _check_checkpoint(path: str | None) -> None:
    """A checkpoint to load must exist and load safely (one line if not)."""
    if path is None:
        return
    from ..io.checkpoint import safe_load
    safe_load(path, mmap=True)


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='test', description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir',
                        help='the dir to save evaluation metrics')
    parser.add_argument('--out',
                        help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show', action='store_true',
                        help='show prediction results')
    parser.add_argument('--show-dir',
                        help='save painted images to work_dir/timestamp/DIR')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of show (s)')
    _common_args(parser)
    return parser


def test_main(argv: list[str] | None = None) -> None:
    """Test a detector: ``test CONFIG CHECKPOINT [--out X.pkl] ...``."""
    import psbn_mmdet  # noqa: F401
    args = test_parser().parse_args(argv)
    _check_checkpoint(args.checkpoint)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise UserError(f'--out must be a .pkl file, got {args.out}')
    cfg = _runner_config(args.config, args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        cfg = trigger_visualization_hook(cfg, args)
    runner = _build_runner(cfg)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    runner.test()


# ------------------------------------------------------------------ report
def report_parser() -> argparse.ArgumentParser:
    from ..core.criteria import ACTIVATION_THRESHOLD, GAMMA_THRESHOLD
    from ..analysis.report import DEFAULT_BATCH_SIZE
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
    return parser


def report_main(argv: list[str] | None = None) -> None:
    """Collapsed BN channels per stage: ``collapse_report CHECKPOINT ...``."""
    args = report_parser().parse_args(argv)
    from ..analysis.report import run
    run(args.checkpoint, compare=args.compare, config=args.config,
        data_config=args.data_config, num_images=args.num_images,
        gamma_threshold=args.gamma_thr, activation_threshold=args.act_thr,
        batch_size=args.batch_size, json_path=args.json, csv_path=args.csv,
        plot_dir=args.plot_dir)


# ------------------------------------------------------------------ export
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
    import psbn_mmdet  # noqa: F401  registers psBN to read the config
    from ..export import export_bn
    config, checkpoint = export_bn(args.config, args.checkpoint, args.out_dir)
    print(f'wrote {config}\nwrote {checkpoint}')


# --------------------------------------------------------------- demo data
def demo_data_main(argv: list[str] | None = None) -> None:
    """Write the synthetic COCO-format demo data set the demo configs use."""
    from ..demo.data import DEMO_CLASSES, make_demo_data
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
    args = parser.parse_args(argv)
    try:
        paths = make_demo_data(args.out_dir, num_train=args.num_train,
                               num_val=args.num_val, seed=args.seed,
                               force=args.force)
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f'demo data in {paths["root"]}: {args.num_train} train and '
          f'{args.num_val} val images of {", ".join(DEMO_CLASSES)}')


train = _exit('train', train_main)
test = _exit('test', test_main)
collapse_report = _exit('collapse_report', report_main)
export_bn = _exit('export_bn', export_main)
make_demo_data = _exit('make_demo_data', demo_data_main)


# ------------------------------------------------------------------- prune
def prune_parser() -> argparse.ArgumentParser:
    from ..core.criteria import ACTIVATION_THRESHOLD, GAMMA_THRESHOLD
    from ..pruning.prune_dead import DEFAULT_NUM_IMAGES, SUPPORTED
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
    parser.add_argument('--batch-size', type=int, default=4,
                        help='images per pass (default: %(default)s)')
    parser.add_argument('--gamma-thr', type=float, default=GAMMA_THRESHOLD,
                        help='constant when |γ| < this '
                        '(default: %(default)g)')
    parser.add_argument('--act-thr', type=float, default=ACTIVATION_THRESHOLD,
                        help='dead when the max post-ReLU activation < this '
                        '(default: %(default)g)')
    parser.add_argument('--channels-last', action='store_true',
                        help='the pruned backbone computes in the '
                        'channels-last memory format (on CPU the format in '
                        'which the removed FLOPs save time; the self-check '
                        'covers it)')
    return parser


def prune_main(argv: list[str] | None = None) -> int:
    """Remove dead channels: ``prune_dead CONFIG CHECKPOINT OUT_DIR ...``.

    Exit 1 (nothing written) when the pruned detector fails its self-check.
    """
    args = prune_parser().parse_args(argv)
    import psbn_mmdet  # noqa: F401  registers psBN to read the config
    from ..pruning.prune_dead import CHECK_TOLERANCE, prune_dead as run
    result = run(args.config, args.checkpoint, args.out_dir,
                 data_config=args.data_config, num_images=args.num_images,
                 batch_size=args.batch_size, gamma_threshold=args.gamma_thr,
                 activation_threshold=args.act_thr,
                 channels_last=args.channels_last)
    if not result.check.passed:
        print('prune_dead: error: the pruned detector differs from the '
              f'original on the calibration images by more than '
              f'{CHECK_TOLERANCE:g} (relative); nothing written',
              file=sys.stderr)
        return 1
    return 0


prune_dead = _exit('prune_dead', prune_main)
