"""Train and test entry points with mmdet 3.3's command-line conventions.

``tools/train.py`` and ``tools/test.py`` call :func:`train_main` and
:func:`test_main`.  They behave like mmdet's own tools, plus:

* ``psbn_mmdet`` is imported first: psBN registered, safe-loading allow-list
  for resume in place;
* ``--launcher pytorch|slurm`` works on CPU-only machines (gloo, see ``dist``);
* a bad config path or a bad option fails with one line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

import psbn_mmdet  # noqa: F401  registers psBN, hooks, safe globals
from .dist import setup_cpu_distributed

#: errors that mean "the config or an option in it is wrong": one line, exit 2
CONFIG_ERRORS = (FileNotFoundError, KeyError, TypeError, ValueError,
                 ImportError, SyntaxError)


def _fail(message: str) -> None:
    print(f'error: {message}', file=sys.stderr)
    raise SystemExit(2)


def _one_line(error: BaseException) -> str:
    # mmengine's registry nests the cause in the message, one class per line
    text = ' '.join(str(error).split())
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _common_args(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs '
        '(e.g. train_cfg.max_iters=10)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch >= 2.0's launcher passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _load_config(path: str, args):
    from mmengine.config import Config
    if not osp.isfile(path):
        _fail(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except CONFIG_ERRORS as error:
        _fail(f'cannot read config {path}: {_one_line(error)}')
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    setup_cpu_distributed(cfg, args.launcher)
    return cfg


def _build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    try:
        if 'runner_type' not in cfg:
            return Runner.from_cfg(cfg)
        return RUNNERS.build(cfg)
    except CONFIG_ERRORS as error:
        _fail(_one_line(error))


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Train a detector')
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
    args = train_parser().parse_args(argv)
    cfg = _load_config(args.config, args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            _fail('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                  'in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            _fail(f'checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    _build_runner(cfg).train()


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
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
    args = test_parser().parse_args(argv)
    if not osp.isfile(args.checkpoint):
        _fail(f'checkpoint not found: {args.checkpoint}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        _fail(f'--out must be a .pkl file, got {args.out}')
    cfg = _load_config(args.config, args)
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
