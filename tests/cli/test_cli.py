"""tools/*.py and tools/dist_train.sh as a user runs them."""
import os
import subprocess
import time

import pytest
import torch

from conftest import CONFIGS, PYTHON, REPO, one_line_error, run_tool, tool


DEMO_CONFIG = CONFIGS / 'demo/faster_rcnn_r50_demo_psbn.py'


def train(*args) -> int:
    from psbn_mmdet.cli.runner import train_main
    return tool('train', train_main, *args)


@pytest.mark.slow
def test_missing_config_fails_with_one_line(tmp_path):
    result = run_tool(REPO / 'tools/train.py', tmp_path / 'nope.py')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'train: error: config file not found: {tmp_path / "nope.py"}'
    ]


@pytest.mark.parametrize('option, message', [
    ('windw=5', "unknown option 'windw'"),
    ('active_fraction=2', 'active_fraction must be in'),
])
def test_bad_norm_option_fails_with_one_line_naming_it(tmp_path, capsys,
                                                        option, message):
    code = train(CONFIGS / 'demo/faster_rcnn_r50_demo_psbn.py', '--work-dir',
                 tmp_path, '--cfg-options', f'model.backbone.norm_cfg.{option}')
    one_line_error(code, capsys.readouterr().err, message)


@pytest.mark.slow
def test_dist_train_two_cpu_processes_with_gloo(workspace, tmp_path):
    """Two processes (gloo), a config and a work dir with spaces in their
    paths, and no PYTHONPATH: the installed package alone."""
    spaced = tmp_path / 'my configs'
    spaced.mkdir()
    config = spaced / 'demo config.py'
    config.write_text(f"_base_ = '{DEMO_CONFIG}'\n")
    work_dir = tmp_path / 'w d'
    env = dict(os.environ, PYTHON=PYTHON, PORT='29517', OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    result = subprocess.run(
        ['bash', str(REPO / 'tools/dist_train.sh'), str(config), '2',
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


@pytest.mark.slow
def test_test_tool_evaluates_a_checkpoint(workspace, tmp_path):
    """train (taking over a stale work-dir lock), then test evaluates."""
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    gone = subprocess.Popen(['true'])
    gone.wait()
    (work_dir / '.psbn.lock').write_text(f'{gone.pid}\n')
    config = DEMO_CONFIG
    train = run_tool(REPO / 'tools/train.py', config, '--work-dir', work_dir,
                     '--cfg-options', 'train_cfg.max_iters=1',
                     'train_cfg.val_interval=100',
                     'default_hooks.checkpoint.interval=1', cwd=workspace)
    assert train.returncode == 0, train.stderr[-3000:]
    assert not (work_dir / '.psbn.lock').exists()  # taken over, released
    out = tmp_path / 'results.pkl'
    test = run_tool(REPO / 'tools/test.py', config, work_dir / 'iter_1.pth',
                    '--work-dir', work_dir, '--out', out, cwd=workspace)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'coco/bbox_mAP' in test.stdout + test.stderr
    assert out.stat().st_size > 0


# ------------------------------------------------------------ hostile input
def _one_line_exit_2(result, *fragments):
    one_line_error(result.returncode, result.stderr, *fragments)


@pytest.mark.parametrize('option, fragment', [
    ('custom_hooks.0.optimizer_reset=bogus', 'optimizer_reset must be one of'),
    ('custom_hooks.0.window=0', 'window must be an integer >= 1'),
])
def test_bad_hook_option_is_one_line_before_training(in_workspace, tmp_path,
                                                     capsys, option, fragment):
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w', '--cfg-options',
                 option)
    one_line_error(code, capsys.readouterr().err, 'train: error:', fragment)


def test_an_empty_training_set_is_one_line(in_workspace, tmp_path, capsys):
    """Issue 39, item 9: before, mmengine's traceback ('need at least one
    array to concatenate')."""
    import json
    coco = json.loads((in_workspace / 'data/demo/annotations/'
                       'instances_train.json').read_text())
    coco.update(images=[], annotations=[])
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(coco))
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w', '--cfg-options',
                 f'train_dataloader.dataset.ann_file={empty}')
    one_line_error(code, capsys.readouterr().err, 'train: error:',
                   'train_dataloader.dataset has no image', str(empty))


def test_config_raising_name_error_is_one_line(tmp_path, capsys):
    config = tmp_path / 'broken.py'
    config.write_text('model = dict(type=undefined_name)\n')
    one_line_error(train(config), capsys.readouterr().err,
                   'cannot read config', 'undefined_name')


def test_resume_of_corrupt_or_dangling_checkpoint_is_one_line(tmp_path,
                                                              capsys):
    corrupt = tmp_path / 'corrupt.pth'
    torch.save({'state_dict': {}}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w', '--resume',
                 corrupt)
    one_line_error(code, capsys.readouterr().err,
                   'corrupt.pth: truncated or corrupt')
    work_dir = tmp_path / 'dangling'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_8.pth'))
    code = train(DEMO_CONFIG, '--work-dir', work_dir, '--resume')
    one_line_error(code, capsys.readouterr().err,
                   'iter_8.pth, which does not exist')


def test_test_tool_with_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    from psbn_mmdet.cli.runner import test_main
    bad = tmp_path / 'bad.pth'
    bad.write_text('hello\n')
    one_line_error(tool('test', test_main, DEMO_CONFIG, bad),
                   capsys.readouterr().err, 'test: error:',
                   'not a PyTorch checkpoint')


def test_make_demo_data_into_a_file_is_one_line(tmp_path, capsys):
    from psbn_mmdet.demo.cli import demo_data_main
    afile = tmp_path / 'afile'
    afile.write_text('x')
    one_line_error(tool('make_demo_data', demo_data_main, '--out-dir', afile),
                   capsys.readouterr().err, 'make_demo_data: error:',
                   'is a file')


@pytest.mark.slow
def test_dist_train_without_arguments_is_one_line():
    result = subprocess.run(['bash', str(REPO / 'tools/dist_train.sh')],
                            capture_output=True, text=True)
    _one_line_exit_2(result, 'usage:')


@pytest.mark.slow
def test_a_work_dir_held_by_a_live_run_is_refused(workspace, tmp_path):
    work_dir = tmp_path / 'shared'
    first = subprocess.Popen(
        [PYTHON, str(REPO / 'tools/train.py'), str(DEMO_CONFIG),
         '--work-dir', str(work_dir), '--cfg-options',
         'train_cfg.max_iters=3', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=3'],
        cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    lock = work_dir / '.psbn.lock'
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    second = run_tool(REPO / 'tools/train.py', DEMO_CONFIG, '--work-dir',
                      work_dir, cwd=workspace)
    assert first.poll() is None, 'the first run ended before the check'
    _one_line_exit_2(second, 'in use by a live training run',
                     f'pid {first.pid} on ', str(lock))
    assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
    assert not lock.exists()  # released at exit
    assert (work_dir / 'iter_3.pth').is_file()


@pytest.mark.slow
def test_unparsable_cfg_option_is_an_argument_error(tmp_path):
    result = run_tool(REPO / 'tools/train.py', DEMO_CONFIG, '--cfg-options',
                      'custom_hooks=[dict(type=1,a=2)]')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        'train: error: argument --cfg-options: cannot parse')


# -------------------------------- what a second hostile pass found (issue 21)
def test_resume_from_a_weights_only_checkpoint_is_one_line(tmp_path, capsys):
    """Exports and pruned models hold weights only: not resumable."""
    weights = tmp_path / 'weights.pth'
    torch.save({'meta': {}, 'state_dict': {'a': torch.zeros(1)}}, weights)
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w', '--resume',
                 weights)
    one_line_error(code, capsys.readouterr().err, 'not a resumable '
                   'checkpoint', f'--cfg-options load_from={weights}')


@pytest.mark.skipif(torch.cuda.is_available(), reason='a machine with a GPU')
def test_amp_without_a_gpu_is_one_line(tmp_path, capsys):
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w', '--amp')
    one_line_error(code, capsys.readouterr().err, '--amp needs a GPU')


def test_a_work_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    code = train(DEMO_CONFIG, '--work-dir', afile)
    one_line_error(code, capsys.readouterr().err, f'{afile}: not a directory')


def test_a_lock_file_that_is_a_directory_is_one_line(tmp_path, capsys):
    (tmp_path / 'w' / '.psbn.lock').mkdir(parents=True)
    code = train(DEMO_CONFIG, '--work-dir', tmp_path / 'w')
    one_line_error(code, capsys.readouterr().err, 'is a directory, not a '
                   'lock file; remove it')
