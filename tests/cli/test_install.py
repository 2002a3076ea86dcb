"""The product works from a plain (non-editable) install, away from the
checkout: the wheel holds the package only, and its tools run from any
directory."""
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import CONFIGS, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``pip install .`` (no dependencies: they are this environment's) into
    a folder of its own; the editable install is shadowed by it."""
    root = tmp_path_factory.mktemp('install')
    wheels, target = root / 'wheels', root / 'site'
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation',
                    '-w', str(wheels), str(REPO)], check=True,
                   capture_output=True)
    wheel = next(wheels.glob('psbn_mmdet-*.whl'))
    subprocess.run([*pip, 'install', '--no-deps', '--target', str(target),
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONPATH'] = str(target)
    return wheel, root, env


def _run(env, cwd, *args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_wheel_ships_the_package_only(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split('/')[0] for name in archive.namelist()}
    assert 'psbn_mmdet' in tops
    assert not tops & {'research', 'tools', 'tests', 'configs', 'docs'}
    entry_points = next(n for n in zipfile.ZipFile(wheel).namelist()
                        if n.endswith('entry_points.txt'))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script, target in (('psbn-train', 'psbn_mmdet.cli.runner:train'),
                           ('psbn-test', 'psbn_mmdet.cli.runner:test'),
                           ('psbn-collapse-report', 'psbn_mmdet.cli.report:'),
                           ('psbn-export-bn', 'psbn_mmdet.cli.export:'),
                           ('psbn-prune-dead', 'psbn_mmdet.cli.prune:'),
                           ('psbn-make-demo-data', 'psbn_mmdet.demo.cli:')):
        assert f'{script} = {target}' in text


def test_installed_tools_run_outside_the_checkout(installed):
    _, root, env = installed
    where = _run(env, root, '-c', 'import psbn_mmdet; '
                 'print(psbn_mmdet.__file__)')
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(root / 'site'))

    def tool(where, name, *args):  # in root: the configs' data/demo/ is
        return _run(env, root, '-c', f'from psbn_mmdet.{where} import '
                    f'{name}; {name}()', *args)

    data = tool('demo.cli', 'make_demo_data', '--num-train', '4',
                '--num-val', '2')
    assert data.returncode == 0, data.stderr
    config = CONFIGS / 'demo/faster_rcnn_r50_demo_psbn.py'
    train = tool('cli.runner', 'train', config, '--work-dir', root / 'run',
                 '--cfg-options', 'train_cfg.max_iters=1',
                 'train_cfg.val_interval=100',
                 'default_hooks.checkpoint.interval=1')
    assert train.returncode == 0, train.stderr[-3000:]
    report = tool('cli.report', 'main', root / 'run' / 'iter_1.pth')
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[-1].startswith('total')
