"""tools/*.py and tools/dist_train.sh as a user runs them."""
import os
import shutil
import subprocess

import pytest

from conftest import CONFIGS, PYTHON, REPO, run_tool

pytestmark = pytest.mark.slow


def test_missing_config_fails_with_one_line(tmp_path):
    result = run_tool(REPO / 'tools/train.py', tmp_path / 'nope.py')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: config file not found: {tmp_path / "nope.py"}'
    ]


@pytest.mark.parametrize('option, message', [
    ('windw=5', "unknown option 'windw'"),
    ('active_fraction=2', 'active_fraction must be in'),
])
def test_bad_norm_option_fails_with_one_line_naming_it(tmp_path, option,
                                                        message):
    result = run_tool(REPO / 'tools/train.py',
                      CONFIGS / 'demo/faster_rcnn_r50_psbn_demo.py',
                      '--work-dir', tmp_path, '--cfg-options',
                      f'model.backbone.norm_cfg.{option}')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_dist_train_two_cpu_processes_with_gloo(workspace, tmp_path):
    work_dir = tmp_path / 'dist'
    env = dict(os.environ, PYTHON=PYTHON, PORT='29517', OMP_NUM_THREADS='1')
    result = subprocess.run(
        ['bash', str(REPO / 'tools/dist_train.sh'),
         str(CONFIGS / 'demo/faster_rcnn_r50_psbn_demo.py'), '2',
         '--work-dir', str(work_dir), '--cfg-options',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=2',
         'default_hooks.logger.interval=1'],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (result.stdout + result.stderr)
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert "model_wrapper_cfg = dict(type='CPUAwareDistributedDataParallel')" \
        in log
    assert 'Iter(train) [2/2]' in log
    assert (work_dir / 'iter_2.pth').is_file()


def test_test_tool_evaluates_a_checkpoint(workspace, tmp_path):
    work_dir = tmp_path / 'run'
    config = CONFIGS / 'demo/faster_rcnn_r50_psbn_demo.py'
    train = run_tool(REPO / 'tools/train.py', config, '--work-dir', work_dir,
                     '--cfg-options', 'train_cfg.max_iters=1',
                     'train_cfg.val_interval=100',
                     'default_hooks.checkpoint.interval=1', cwd=workspace)
    assert train.returncode == 0, train.stderr[-3000:]
    out = tmp_path / 'results.pkl'
    test = run_tool(REPO / 'tools/test.py', config, work_dir / 'iter_1.pth',
                    '--work-dir', work_dir, '--out', out, cwd=workspace)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'coco/bbox_mAP' in test.stdout + test.stderr
    assert out.stat().st_size > 0


def test_collapse_study_filter_matching_nothing_fails_with_one_line():
    # the rule before the study does not run under AdamW (nothing dies there)
    result = run_tool(REPO / 'tools/collapse_study.py', '--regime', 'adamw',
                      '--only', 'psbn')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'collapse_study: no run of the grid matches --only/--network/--regime'
    ]


def test_collapse_study_rejects_a_run_without_epochs():
    result = run_tool(REPO / 'tools/collapse_study.py', '--epochs', '0')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'collapse_study: error: argument --epochs: must be at least 1, got 0')
