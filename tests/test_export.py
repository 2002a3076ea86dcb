"""tools/export_bn.py: stock mmdet loads the export strictly, same outputs."""
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer

import psbn_mmdet  # noqa: F401
from conftest import CONFIGS, REPO, run_tool
from psbn_mmdet.norm import psBN
from psbn_mmdet.surgery import to_bn, to_psbn

CONFIG = CONFIGS / 'demo/faster_rcnn_r50_psbn_demo.py'

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
    config = out_dir / 'faster_rcnn_r50_psbn_demo_bn.py'
    weights = out_dir / 'faster_rcnn_r50_psbn_demo_bn.pth'
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
         tmp_path / 'y.pt'], capture_output=True, text=True, cwd=tmp_path,
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
    bn_net = to_bn(net)
    assert not any(isinstance(m, psBN) for m in bn_net.modules())
    again = to_psbn(bn_net, window=7)
    assert sum(isinstance(m, psBN) for m in again.modules()) == 20
    for key, value in again.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_export_rejects_missing_files(tmp_path):
    result = run_tool(REPO / 'tools/export_bn.py', CONFIG,
                      tmp_path / 'missing.pth', tmp_path / 'out')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        'error: checkpoint not found')
    assert not (tmp_path / 'out').exists()
