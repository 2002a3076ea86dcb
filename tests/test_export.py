"""tools/export_bn.py: stock mmdet loads the export strictly, same outputs."""
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer

import psbn_mmdet  # noqa: F401
from conftest import CONFIGS, REPO, run_tool
from psbn_mmdet import psBN


CONFIG = CONFIGS / 'demo/faster_rcnn_r50_demo_psbn.py'

STOCK_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(sys.argv[1])
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, sys.argv[2], strict=True)
    assert 'psbn_mmdet' not in sys.modules
    x = torch.load(sys.argv[3])
    torch.set_num_threads(int(sys.argv[5]))  # the parent's: same kernels
    with torch.no_grad():
        feats = model.extract_feat(x)
        cls, reg = model.rpn_head(feats)
    torch.save([*feats, *cls, *reg], sys.argv[4])
''')


def _psbn_detector():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(CONFIG)).model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, psBN):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.slow
def test_stock_mmdet_loads_export_strictly_with_identical_outputs(tmp_path):
    model = _psbn_detector()
    history = HistoryBuffer()
    history.update(1.0)
    checkpoint = dict(meta=dict(iter=3), state_dict=model.state_dict(),
                      psbn=dict(steps=3), message_hub=dict(log=history))
    torch.save(checkpoint, tmp_path / 'psbn.pth')
    out_dir = tmp_path / 'export'
    result = run_tool(REPO / 'tools/export_bn.py', CONFIG,
                      tmp_path / 'psbn.pth', out_dir)
    assert result.returncode == 0, result.stderr
    config = out_dir / 'faster_rcnn_r50_demo_psbn_bn.py'
    weights = out_dir / 'faster_rcnn_r50_demo_psbn_bn.pth'
    text = config.read_text()
    assert 'psBN' not in text and 'psbn_mmdet' not in text
    assert 'PostShiftHook' not in text
    assert set(torch.load(weights, weights_only=True)) == {'meta',
                                                          'state_dict'}

    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / 'x.pt')
    script = tmp_path / 'stock.py'
    script.write_text(STOCK_SCRIPT)
    # run without psbn_mmdet on the path: a stock mmdet user
    import subprocess
    import sys
    stock = subprocess.run(
        [sys.executable, script, config, weights, tmp_path / 'x.pt',
         tmp_path / 'y.pt', str(torch.get_num_threads())],
        capture_output=True, text=True, cwd=tmp_path,
        timeout=300)
    assert stock.returncode == 0, stock.stderr[-3000:]
    with torch.no_grad():
        feats = model.extract_feat(x)
        cls, reg = model.rpn_head(feats)
    expected = [*feats, *cls, *reg]
    for a, b in zip(expected, torch.load(tmp_path / 'y.pt')):
        assert torch.equal(a, b)


def test_to_bn_and_back_are_lossless():
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, norm_cfg=dict(type='psBN', window=7))
    net.train()
    net(torch.randn(2, 3, 32, 32))  # move running statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bn_net = psBN.revert(net)
    assert not any(isinstance(m, psBN) for m in bn_net.modules())
    again = psBN.convert_bn(bn_net, window=7)
    assert sum(isinstance(m, psBN) for m in again.modules()) == 20
    for key, value in again.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_export_rejects_missing_files(tmp_path):
    result = run_tool(REPO / 'tools/export_bn.py', CONFIG,
                      tmp_path / 'missing.pth', tmp_path / 'out')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'export_bn: error: {tmp_path / "missing.pth"}: no such file']
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------ hostile input
def export(*args) -> int:
    from psbn_mmdet.cli import run_tool
    from psbn_mmdet.cli.export import export_main
    return run_tool('export_bn', export_main, [str(a) for a in args])


def _good_checkpoint(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': _psbn_detector().state_dict()}, path)
    return path


def _check_refused(capsys, out_dir, *fragments):
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert err.startswith('export_bn: error: ')
    for fragment in fragments:
        assert fragment in err, err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


@pytest.mark.parametrize('make', [
    lambda: __import__('mmdet.models.backbones', fromlist=['ResNet']).ResNet(
        depth=18),
    lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3),
                                torch.nn.BatchNorm2d(8)),
], ids=['resnet18', 'sequential'])
def test_checkpoint_of_another_model_is_refused(tmp_path, capsys, make):
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': make().state_dict()}, path)
    out = tmp_path / 'out'
    assert export(CONFIG, path, out) == 2
    _check_refused(capsys, out, 'does not match the model of', 'missing',
                   'unexpected', 'mismatched keys')


@pytest.mark.parametrize('content, fragment', [
    (b'', 'an empty file'),
    (b'hello\n', 'a text file'),
    (bytes(range(256)) * 8, 'binary data'),
], ids=['empty', 'text', 'random'])
def test_unreadable_checkpoint_is_refused(tmp_path, capsys, content,
                                          fragment):
    path = tmp_path / 'x.pth'
    path.write_bytes(content)
    out = tmp_path / 'out'
    assert export(CONFIG, path, out) == 2
    _check_refused(capsys, out, 'not a PyTorch checkpoint', fragment)


def test_truncated_and_malicious_checkpoints_are_refused(tmp_path, capsys):
    good = _good_checkpoint(tmp_path)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:100_000])
    out = tmp_path / 'out'
    assert export(CONFIG, truncated, out) == 2
    _check_refused(capsys, out, 'truncated or corrupt')
    import pickle

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ('true', ))

    evil = tmp_path / 'evil.pth'
    evil.write_bytes(pickle.dumps({'state_dict': Evil()}, protocol=2))
    assert export(CONFIG, evil, out) == 2
    _check_refused(capsys, out, 'refused by safe loading')


def test_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    assert export(CONFIG, _good_checkpoint(tmp_path), afile) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'not a directory' in err
    assert afile.read_text() == 'x'


def test_full_disk_writes_neither_file(tmp_path, capsys, full_disk):
    good = _good_checkpoint(tmp_path)
    out = tmp_path / 'out'
    assert export(CONFIG, good, out) == 2
    _check_refused(capsys, out, 'No space left on device')


def test_non_finite_weights_are_warned_about(tmp_path, capsys):
    state = _psbn_detector().state_dict()
    state['backbone.layer1.0.bn1.weight'][0] = float('nan')
    path = tmp_path / 'nan.pth'
    torch.save({'state_dict': state}, path)
    assert export(CONFIG, path, tmp_path / 'out') == 0
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert 'warning: 1 tensor(s)' in err and 'layer1.0.bn1.weight' in err
