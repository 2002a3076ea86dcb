"""``train`` and ``test``: mmdet 3.3's tools, with psbn_mmdet's additions.

They behave like mmdet's ``tools/train.py`` and ``tools/test.py`` (the same
flags), plus:

* ``psbn_mmdet`` is imported first: psBN registered, the safe-loading
  allow-list for resume in place, the hooks registered with the Runner;
* ``--launcher pytorch|slurm`` works on CPU-only machines (gloo, see
  :mod:`psbn_mmdet.engine.dist`);
* checkpoints to load or resume are read safely first, and a work dir is held
  by one run at a time (:class:`~psbn_mmdet.utils.workdir.WorkDirLock`);
* a successful distributed run ends with its process group destroyed, all
  ranks together (:func:`~psbn_mmdet.engine.dist.finish_distributed`).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import traceback

from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS

from ..engine.dist import finish_distributed, setup_cpu_distributed
from ..io.checkpoint import latest_checkpoint, read_checkpoint, safe_load
from ..utils.config import load_config
from ..utils.errors import UserError, one_line
from ..utils.workdir import WorkDirLock
from .common import tool

#: the devices mmengine's AmpOptimWrapper trains on
AMP_DEVICES = ('cuda', 'npu', 'mlu', 'musa')
#: errors that mean "the config or an option in it is wrong" when the
#: Runner is built from it
CONFIG_ERRORS = (FileNotFoundError, KeyError, TypeError, ValueError,
                 ImportError, SyntaxError, NameError, AttributeError)


# ------------------------------------------------------------ train and test
def _dict_action():
    """mmengine's ``DictAction``, with a value it cannot parse reported as
    an argument error (it recursed until RecursionError on some)."""

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
    from mmengine.runner import Runner  # the training stack
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
    args = train_parser().parse_args(argv)
    cfg = _runner_config(args.config, args)
    if args.amp:
        if get_device() not in AMP_DEVICES:
            raise UserError(
                f'--amp needs a GPU: mmengine\'s AmpOptimWrapper trains in '
                f'mixed precision on {"/".join(AMP_DEVICES)} devices, and '
                f'this machine has {get_device()} only')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserError('--auto-scale-lr needs '
                            'auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        try:
            latest = latest_checkpoint(cfg.work_dir)
        except UserError as error:
            raise UserError(f'{error}; resume from a checkpoint with '
                            '--resume PATH') from None
        _check_resumable(latest)
        cfg.resume, cfg.load_from = True, latest
    elif args.resume is not None:
        _check_resumable(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if _is_rank_zero():
        with WorkDirLock(cfg.work_dir):
            _run(_build_runner(cfg).train, cfg, 'train_dataloader')
    else:
        _run(_build_runner(cfg).train, cfg, 'train_dataloader')
    finish_distributed()


def _run(loop, cfg, dataloader: str) -> None:
    """Run the Runner's ``loop``; a data set that ends up empty (mmengine
    cannot serialize an empty list) is one line naming it."""
    try:
        loop()
    except ValueError as error:
        frames = traceback.extract_tb(error.__traceback__)
        if not frames or frames[-1].name != '_serialize_data':
            raise
        dataset = cfg.get(dataloader, {}).get('dataset', {})
        where = osp.join(str(dataset.get('data_root') or ''),
                         str(dataset.get('ann_file') or '')) or '?'
        raise UserError(
            f'{dataloader}.dataset has no image ({where}; after its '
            'filter_cfg): check ann_file, data_prefix and filter_cfg') \
            from None


def _is_rank_zero() -> bool:
    """The process that owns the work dir (ranks share it)."""
    rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))
    return rank == '0'


def _check_checkpoint(path: str | None) -> None:
    """A checkpoint to load must exist and load safely (one line if not)."""
    if path is not None:
        safe_load(path, mmap=True)


def _check_resumable(path: str | None) -> None:
    """A checkpoint to resume from must also carry the optimizer and the
    MessageHub (the tools' exports and pruned models hold weights only)."""
    if path is not None and not read_checkpoint(path, mmap=True).resumable:
        raise UserError(f'{path} is not a resumable checkpoint: it holds '
                        'weights only (no optimizer or MessageHub state); '
                        f'start from it with --cfg-options load_from={path}')


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
    _run(runner.test, cfg, 'test_dataloader')
    finish_distributed()


train = tool('train', train_main)
test = tool('test', test_main)
