"""tools/collapse_report.py and psbn_mmdet.analysis.report on crafted checkpoints.

Parameter mode runs on ResNet-50-shaped state dicts written here in all three
formats, with known collapsed channels per stage.  Activation mode (needs
mmdet) runs a ResNet-18 on a tiny generated COCO set with crafted dead
channels.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tool


ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'collapse_report.py'
HAS_MMDET = importlib.util.find_spec('mmdet') is not None
needs_mmdet = pytest.mark.skipif(not HAS_MMDET, reason='mmdet not installed')

STAGE_KEYS = {'name', 'bn_layers', 'channels', 'collapsed_gamma',
              'collapsed_gamma_pct', 'dead_activation', 'dead_activation_pct',
              'nonfinite', 'nonfinite_pct'}
LAYER_KEYS = {'name', 'stage', 'role', 'channels', 'collapsed_gamma',
              'dead_activation', 'nonfinite', 'revival'}
REPORT_KEYS = {'checkpoint', 'gamma_threshold', 'activation_threshold',
               'num_images', 'stages', 'total', 'layers', 'would_revive'}

# ResNet-50, torchvision/mmdet names: BN layers and channels per stage.
R50_BN_LAYERS = {'stem': 1, 'layer1': 10, 'layer2': 13, 'layer3': 19,
                 'layer4': 10}
R50_CHANNELS = {'stem': 64, 'layer1': 1408, 'layer2': 3584, 'layer3': 10240,
                'layer4': 11264}
# {bn: {channel: γ}}: collapsed (|γ| < 1e-3) and near misses that are not.
CRAFTED_GAMMA = {
    'bn1': {0: 0.0, 5: 5e-4},
    'layer1.0.bn1': {1: -9e-4, 2: 1e-3},
    'layer1.0.downsample.1': {0: 0.0},
    'layer1.2.bn3': {7: 1e-5, 8: -1e-5, 9: -2e-3},
    'layer2.3.bn2': {0: 0.0, 1: 0.0, 2: 0.0},
    'layer3.5.bn1': {100: 9.99e-4},
    'layer3.0.downsample.1': {1023: -5e-4, 0: 0.5},
    'layer4.2.bn3': {c: 0.0 for c in range(20)},
}
COLLAPSED = {'stem': 2, 'layer1': 4, 'layer2': 3, 'layer3': 2, 'layer4': 20}


def resnet50_state() -> dict[str, torch.Tensor]:
    """A ResNet-50 state dict with torchvision's keys (convs only where
    the format detection looks), all γ = 1 except CRAFTED_GAMMA."""
    state = {'conv1.weight': torch.zeros(64, 3, 7, 7)}

    def bn(name, channels):
        gamma = torch.ones(channels)
        for channel, value in CRAFTED_GAMMA.get(name, {}).items():
            gamma[channel] = value
        state.update({
            f'{name}.weight': gamma, f'{name}.bias': torch.zeros(channels),
            f'{name}.running_mean': torch.zeros(channels),
            f'{name}.running_var': torch.ones(channels),
            f'{name}.num_batches_tracked': torch.tensor(0)})

    bn('bn1', 64)
    for stage, (blocks, planes) in enumerate(
            zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
        for block in range(blocks):
            prefix = f'layer{stage}.{block}'
            bn(f'{prefix}.bn1', planes)
            bn(f'{prefix}.bn2', planes)
            bn(f'{prefix}.bn3', 4 * planes)
            if block == 0:
                bn(f'{prefix}.downsample.1', 4 * planes)
    state['fc.weight'] = torch.zeros(1000, 2048)
    state['fc.bias'] = torch.zeros(1000)
    return state


def save_checkpoint(path: Path, state: dict, fmt: str) -> Path:
    """Save ``state`` (backbone keys) as mmengine, torchvision or bare."""
    if fmt == 'torchvision':
        torch.save(state, path)
    elif fmt == 'mmengine':
        import numpy as np
        from mmengine.logging import HistoryBuffer
        torch.save({
            'meta': {'epoch': 12, 'seed': np.int64(0),
                     'hist': np.zeros(3, dtype=np.float32)},
            'state_dict': {**{f'backbone.{k}': v for k, v in state.items()
                              if not k.startswith('fc.')},
                           'neck.bn.running_var': torch.ones(8),
                           'neck.bn.weight': torch.zeros(8)},
            'message_hub': {
                'log_scalars': {'loss': HistoryBuffer([0.5], [1])}},
        }, path)
    else:  # a DDP-wrapped detector's state dict, no wrapper around it
        torch.save({**{f'module.backbone.{k}': v for k, v in state.items()},
                    'module.roi_head.bn1.running_var': torch.ones(8),
                    'module.roi_head.bn1.weight': torch.zeros(8)}, path)
    return path


def cli(*args) -> int:
    """The report tool in this process: exit status, output captured."""
    from psbn_mmdet.cli.report import report_main
    return tool('collapse_report', report_main, *args)


@pytest.fixture(scope='module')
def r50_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp('r50')
    state = resnet50_state()
    return {fmt: save_checkpoint(folder / f'{fmt}.pth', state, fmt)
            for fmt in ('mmengine', 'torchvision', 'bare')}


# -------------------------------------------------------- parameter criterion
@pytest.mark.parametrize('fmt', ['mmengine', 'torchvision', 'bare'])
def test_collapsed_gamma_counts_are_exact_in_every_format(r50_files, fmt,
                                                          tmp_path):
    out = tmp_path / 'report.json'
    assert cli(r50_files[fmt], '--json', out) == 0
    report = json.loads(out.read_text())
    stages = {row['name']: row for row in report['stages']}
    assert list(stages) == ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    for name, row in stages.items():
        assert row['bn_layers'] == R50_BN_LAYERS[name]
        assert row['channels'] == R50_CHANNELS[name]
        assert row['collapsed_gamma'] == COLLAPSED[name]
        assert row['collapsed_gamma_pct'] == pytest.approx(
            100 * COLLAPSED[name] / R50_CHANNELS[name])
        assert row['dead_activation'] is None
    total = report['total']
    assert (total['name'], total['bn_layers'], total['channels'],
            total['collapsed_gamma']) == ('total', 53, 26560, 31)
    prefix = '' if fmt == 'torchvision' else 'backbone.'
    layers = {layer['name']: layer for layer in report['layers']}
    assert len(layers) == 53
    assert layers[f'{prefix}layer4.2.bn3'] == {
        'name': f'{prefix}layer4.2.bn3', 'stage': 'layer4', 'role': 'pre-add',
        'channels': 2048, 'collapsed_gamma': 20, 'dead_activation': None,
        'nonfinite': 0, 'revival': None}
    assert report['would_revive'] is None  # nothing measured
    assert layers[f'{prefix}bn1']['role'] == 'pre-relu'
    assert layers[f'{prefix}layer1.0.bn1']['collapsed_gamma'] == 1


def test_json_schema_keys_are_exact(r50_files, tmp_path):
    out = tmp_path / 'report.json'
    cli(r50_files['mmengine'], '--json', out)
    report = json.loads(out.read_text())
    assert set(report) == REPORT_KEYS
    assert report['num_images'] is None
    assert report['gamma_threshold'] == 1e-3
    assert report['activation_threshold'] == 1e-12
    assert all(set(row) == STAGE_KEYS for row in report['stages'])
    assert set(report['total']) == STAGE_KEYS
    assert all(set(layer) == LAYER_KEYS for layer in report['layers'])


def test_gamma_threshold_is_an_option(r50_files, tmp_path):
    out = tmp_path / 'report.json'
    assert cli(r50_files['torchvision'], '--gamma-thr', 1e-2, '--json',
               out) == 0
    report = json.loads(out.read_text())
    # the near misses 1e-3 and -2e-3 now count too
    assert report['total']['collapsed_gamma'] == 31 + 2
    assert report['gamma_threshold'] == 1e-2


def test_table_has_a_row_per_stage_and_a_total(r50_files, capsys):
    assert cli(r50_files['torchvision']) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines[2:]]
    assert rows == ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'total']
    assert '20 (0.18%)' in lines[-2]


def test_csv_has_stage_and_total_rows(r50_files, tmp_path):
    out = tmp_path / 'report.csv'
    cli(r50_files['bare'], '--csv', out)
    lines = out.read_text().splitlines()
    assert lines[0].split(',') == ['checkpoint', 'name', 'bn_layers',
                                   'channels', 'collapsed_gamma',
                                   'collapsed_gamma_pct', 'dead_activation',
                                   'dead_activation_pct', 'nonfinite',
                                   'nonfinite_pct']
    assert [line.split(',')[1] for line in lines[1:]] == [
        'stem', 'layer1', 'layer2', 'layer3', 'layer4', 'total']


def test_compare_reports_both_checkpoints(r50_files, tmp_path, capsys):
    state = resnet50_state()
    state['layer2.0.bn1.weight'][:10] = 0
    other = save_checkpoint(tmp_path / 'b.pth', state, 'torchvision')
    out, csv_out = tmp_path / 'compare.json', tmp_path / 'compare.csv'
    assert cli(r50_files['mmengine'], '--compare', other, '--json', out,
               '--csv', csv_out) == 0
    report = json.loads(out.read_text())
    assert set(report) == {'a', 'b'}
    assert set(report['a']) == set(report['b']) == REPORT_KEYS
    a, b = (report[k]['stages'][2] for k in 'ab')
    assert (a['name'], a['collapsed_gamma'], b['collapsed_gamma']) == (
        'layer2', 3, 13)
    assert len(csv_out.read_text().splitlines()) == 1 + 2 * 6
    layer2 = next(line for line in capsys.readouterr().out.splitlines()
                  if line.startswith('layer2'))
    assert '+10' in layer2


def test_plots_are_written_and_not_empty(r50_files, tmp_path):
    single, pair = tmp_path / 'single', tmp_path / 'pair'
    assert cli(r50_files['torchvision'], '--plot-dir', single) == 0
    assert cli(r50_files['torchvision'], '--compare', r50_files['bare'],
               '--plot-dir', pair) == 0
    expected = {f'{s}.png' for s in R50_BN_LAYERS} | {'summary.png'}
    for folder in (single, pair):
        assert {p.name for p in folder.iterdir()} == expected
        for png in folder.iterdir():
            assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
            assert png.stat().st_size > 10_000


def test_compared_plots_name_the_checkpoints(r50_files, tmp_path,
                                             monkeypatch):
    from psbn_mmdet.analysis import plots
    from psbn_mmdet.cli.report import plot_labels
    seen = []
    real = plots.plot_reports
    monkeypatch.setattr(plots, 'plot_reports', lambda reports, labels=None: (
        seen.append(labels), real(reports, labels))[1])
    assert cli(r50_files['torchvision'], '--compare', r50_files['bare'],
               '--plot-dir', tmp_path / 'pair') == 0
    assert seen == [[Path(r50_files['torchvision']).name,
                     Path(r50_files['bare']).name]]
    # the same file name in two work dirs: the work dirs name them
    assert plot_labels(['w/bn/iter_100.pth', 'w/psbn/iter_100.pth']) == \
        ['bn', 'psbn']
    assert plot_labels(['a/x/i.pth', 'b/x/i.pth']) == ['a/x', 'b/x']


# ------------------------------------------------------------------ bad input
def _no_bn_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / 'convs.pth',
                           {'conv1.weight': torch.zeros(8, 3, 3, 3)},
                           'torchvision')


def _text_file(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_text('not a checkpoint\n')
    return path


@pytest.mark.parametrize('make_args, message', [
    (lambda tmp, good: [tmp / 'missing.pth'], 'no such file'),
    (lambda tmp, good: [_text_file(tmp)], 'not a PyTorch checkpoint'),
    (lambda tmp, good: [_no_bn_checkpoint(tmp)], 'no BN layers in it'),
    (lambda tmp, good: [good, '--data-config', tmp / 'c.py', '--num-images',
                        '0'], '--num-images must be at least 1'),
    (lambda tmp, good: [good, '--num-images', '3'], 'needs --data-config'),
    (lambda tmp, good: [good, '--compare', tmp / 'missing.pth'],
     'no such file'),
], ids=['missing', 'not-a-checkpoint', 'no-bn', 'zero-images',
        'images-without-data', 'missing-compare'])
def test_bad_input_is_one_line_and_exit_2(r50_files, tmp_path, capsys,
                                          make_args, message):
    args = make_args(tmp_path, r50_files['torchvision'])
    out = tmp_path / 'out'
    code = cli(*args, '--json', out / 'r.json', '--csv', out / 'r.csv',
               '--plot-dir', out / 'plots')
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count('\n') == 1 and message in captured.err
    assert captured.err.startswith('collapse_report: error: ')
    assert not out.exists()


@pytest.mark.slow
def test_command_line_exit_codes(r50_files, tmp_path):
    ok = subprocess.run([sys.executable, TOOL, r50_files['mmengine']],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert 'total' in ok.stdout
    bad = subprocess.run([sys.executable, TOOL, tmp_path / 'missing.pth'],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count('\n') == 1 and 'Traceback' not in bad.stderr


@pytest.mark.slow
def test_parameter_mode_imports_neither_mmdet_nor_mmcv(r50_files):
    """Nor matplotlib, nor mmengine's training stack (runner, hooks,
    models): reading a checkpoint pays for none of them."""
    code = ('import sys; from psbn_mmdet.cli.report import report_main; '
            f'report_main([{str(r50_files["mmengine"])!r}]); '
            'print(sorted({m.split(".")[0] for m in sys.modules} & '
            '{"mmdet", "mmcv", "matplotlib"}), sorted({"mmengine.runner", '
            '"mmengine.hooks", "mmengine.model"} & set(sys.modules)))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == '[] []'


# ------------------------------------------------------- hostile input
def test_bns_outside_a_resnet_are_counted_under_other(tmp_path, capsys):
    """A tutorial CNN (bn1, bn2, bn3; bn2 and bn3 collapsed): every BN is
    counted, none is taken for a ResNet stem."""
    state = {'conv1.weight': torch.zeros(8, 3, 3, 3)}
    for index, gamma in ((1, 1.0), (2, 0.0), (3, 0.0)):
        state.update({f'bn{index}.weight': torch.full((8, ), gamma),
                      f'bn{index}.bias': torch.zeros(8),
                      f'bn{index}.running_mean': torch.zeros(8),
                      f'bn{index}.running_var': torch.ones(8)})
    path = tmp_path / 'cnn.pth'
    torch.save(state, path)
    out = tmp_path / 'r.json'
    assert cli(path, '--json', out) == 0
    report = json.loads(out.read_text())
    assert [row['name'] for row in report['stages']] == ['other']
    assert report['total']['bn_layers'] == 3
    assert report['total']['collapsed_gamma'] == 16
    captured = capsys.readouterr()
    assert '(bare)' in captured.out and 'torchvision' not in captured.out
    assert captured.err.count('\n') == 1 and "under 'other'" in captured.err


def test_non_finite_gamma_is_counted_in_its_own_column(tmp_path, capsys):
    state = resnet50_state()
    state['layer2.0.bn1.weight'][:] = float('nan')  # all 128 channels
    state['layer4.0.bn2.bias'][3] = float('inf')
    path = save_checkpoint(tmp_path / 'nan.pth', state, 'torchvision')
    out = tmp_path / 'r.json'
    assert cli(path, '--json', out, '--plot-dir', tmp_path / 'plots') == 0
    report = json.loads(out.read_text())
    stages = {row['name']: row for row in report['stages']}
    assert stages['layer2']['nonfinite'] == 128
    assert stages['layer4']['nonfinite'] == 1
    assert report['total']['nonfinite'] == 129
    assert stages['layer2']['collapsed_gamma'] == COLLAPSED['layer2']
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '129 channel(s) with NaN or Inf' in err
    assert (tmp_path / 'plots' / 'layer2.png').stat().st_size > 10_000


def test_outputs_are_all_written_or_none(r50_files, tmp_path, capsys):
    out = tmp_path / 'ok.json'
    code = cli(r50_files['torchvision'], '--json', out, '--csv', '/dev/full')
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert '/dev/full: not a regular file' in err
    assert not out.exists()


def test_a_full_disk_leaves_no_partial_file(r50_files, tmp_path, capsys,
                                            full_disk):
    out = tmp_path / 'out'
    code = cli(r50_files['torchvision'], '--json', out / 'r.json', '--csv',
               out / 'r.csv')
    err = capsys.readouterr().err
    assert code == 2 and 'No space left on device' in err
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize('content, message', [
    (b'', 'not a PyTorch checkpoint: it is an empty file'),
    (b'not a checkpoint\n', "it is a text file ('not a checkpoint'...)"),
    (bytes(range(256)) * 4, 'it is binary data'),
], ids=['empty', 'text', 'random'])
def test_unreadable_file_says_what_it_is(tmp_path, capsys, content, message):
    path = tmp_path / 'x.pth'
    path.write_bytes(content)
    assert cli(path) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err


def test_code_running_pickle_is_refused_and_named(tmp_path, capsys):
    import pickle
    marker = tmp_path / 'ran'

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f'touch {marker}', ))

    for protocol in (2, 4):
        path = tmp_path / f'evil{protocol}.pth'
        path.write_bytes(pickle.dumps({'state_dict': Evil()},
                                      protocol=protocol))
        assert cli(path) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1
        assert 'refused by safe loading: it would import posix.system' in err
        assert 'weights_only' not in err and 'False' not in err
    zipped = tmp_path / 'evil.zip.pth'
    torch.save({'state_dict': {}}, zipped)  # then a zip with a bad global
    import zipfile
    with zipfile.ZipFile(zipped) as archive:
        names = archive.namelist()
        members = {n: archive.read(n) for n in names}
    data_pkl = next(n for n in names if n.endswith('data.pkl'))
    members[data_pkl] = pickle.dumps({'state_dict': Evil()}, protocol=2)
    with zipfile.ZipFile(zipped, 'w') as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert cli(zipped) == 2
    assert 'it would import posix.system' in capsys.readouterr().err
    assert not marker.exists()


# ---------------------------------------------------------- activation mode
DEAD = {'layer1.0.bn1': [5], 'layer3.1.bn1': [2, 3]}  # crafted, pre-ReLU

CONFIG = """
custom_imports = dict(imports=['psbn_mmdet'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='ResNet', depth={depth}, num_stages=4, out_indices=(0, 1, 2, 3),
        frozen_stages=1, norm_cfg=dict(type='{norm}', requires_grad=True),
        norm_eval=True, style='pytorch'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 64), keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
test_dataloader = dict(
    batch_size=1,
    dataset=dict(
        type='CocoDataset', data_root='{root}/',
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), metainfo=dict(classes=('thing', )),
        test_mode=True, pipeline=test_pipeline))
"""


def tiny_coco(root: Path, sizes=((60, 80), (90, 60), (64, 64))) -> Path:
    """A COCO set of noise images of different shapes (so batches pad)."""
    import cv2
    import numpy as np
    (root / 'val').mkdir(parents=True)
    (root / 'annotations').mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate(sizes, 1):
        cv2.imwrite(str(root / 'val' / f'{i}.jpg'),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append(dict(id=i, file_name=f'{i}.jpg', height=h, width=w))
        annotations.append(dict(id=i, image_id=i, category_id=1, iscrowd=0,
                                bbox=[2, 2, 20, 20], area=400))
    (root / 'annotations' / 'instances_val.json').write_text(json.dumps(dict(
        images=images, annotations=annotations,
        categories=[dict(id=1, name='thing')])))
    return root


def resnet18_checkpoint(path: Path) -> Path:
    """mmdet ResNet-18 weights: every pre-ReLU channel (``bn1``) kept alive
    by β = 1 on top of running statistics measured on noise like the test
    images, except the crafted DEAD ones (β very negative)."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    backbone = ResNet(depth=18)
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics: cumulative average
            if name.endswith('bn1'):
                module.bias.data.fill_(1.0)
    with torch.no_grad():
        for _ in range(4):
            backbone(torch.randn(4, 3, 64, 96))
    state = backbone.state_dict()
    for name, channels in DEAD.items():
        state[f'{name}.weight'][channels] = 0.5
        state[f'{name}.bias'][channels] = -1e6
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in state.items()}},
               path)
    return path


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('activations')
    root = tiny_coco(folder / 'coco')
    configs = {}
    for depth, norm in ((18, 'BN'), (18, 'psBN'), (50, 'BN')):
        configs[depth, norm] = folder / f'r{depth}_{norm}.py'
        configs[depth, norm].write_text(
            CONFIG.format(depth=depth, norm=norm, root=root))
    configs['unfrozen'] = folder / 'r18_BN_unfrozen.py'
    configs['unfrozen'].write_text(configs[18, 'BN'].read_text().replace(
        'frozen_stages=1', 'frozen_stages=-1'))
    return configs, resnet18_checkpoint(folder / 'r18.pth')


@needs_mmdet
@pytest.mark.parametrize('norm', ['BN', 'psBN'])
def test_activation_mode_finds_crafted_dead_channels(tiny_data, tmp_path,
                                                     norm):
    configs, checkpoint = tiny_data
    out = tmp_path / 'report.json'
    assert cli(checkpoint, '--data-config', configs[18, norm],
               '--num-images', 3, '--batch-size', 2, '--json', out) == 0
    report = json.loads(out.read_text())
    assert report['num_images'] == 3
    dead = {layer['name'].removeprefix('backbone.'): layer['dead_activation']
            for layer in report['layers'] if layer['dead_activation']}
    assert dead == {name: len(c) for name, c in DEAD.items()}
    stages = {row['name']: row for row in report['stages']}
    assert stages['layer1']['dead_activation'] == 1
    assert stages['layer3']['dead_activation'] == 2
    # ResNet-18 layer3: 2 blocks, pre-ReLU BN is bn1 only (256 channels each)
    assert stages['layer3']['dead_activation_pct'] == pytest.approx(
        100 * 2 / 512)
    assert report['total']['dead_activation'] == 3
    pre_add = [layer for layer in report['layers']
               if layer['role'] == 'pre-add']
    assert pre_add and all(l['dead_activation'] is None for l in pre_add)


@needs_mmdet
@pytest.mark.parametrize('config,revive,said', [
    ('unfrozen', {'reinit_init': 3, 'shift': 1, 'frozen': 0},
     'would revive 4 dead channel(s) at its first window: 3 re-initialized'),
    ((18, 'BN'), {'reinit_init': 2, 'shift': 0, 'frozen': 2},
     'would revive 2 dead channel(s) at its first window: 2 re-initialized '
     "(ResNet blocks' bn1/bn2), 0 shifted"),
])
def test_activation_mode_says_what_psbn_would_revive(tiny_data, tmp_path,
                                                     capsys, config, revive,
                                                     said):
    """The crafted dead channels plus one in the stem: blocks' bn1 are
    re-initialized, the stem (no unit) shifted, frozen layers (stem and
    layer1 with frozen_stages=1) left dead."""
    configs, checkpoint = tiny_data
    state = torch.load(checkpoint)['state_dict']
    state['backbone.bn1.bias'][7] = -1e6
    crafted = tmp_path / 'stem_dead.pth'
    torch.save({'state_dict': state}, crafted)
    out = tmp_path / 'report.json'
    assert cli(crafted, '--data-config', configs[config], '--num-images', 2,
               '--json', out) == 0
    report = json.loads(out.read_text())
    assert report['would_revive'] == {'rule': 'reinit_init', **revive}
    rules = {layer['name'].removeprefix('backbone.'): layer['revival']
             for layer in report['layers']}
    frozen = config != 'unfrozen'
    assert rules['bn1'] == (None if frozen else 'shift')
    assert rules['layer1.0.bn1'] == (None if frozen else 'reinit_init')
    assert rules['layer3.1.bn1'] == 'reinit_init'
    assert rules['layer3.1.bn2'] is None  # pre-add: never revived
    err = capsys.readouterr().err
    assert said in err
    assert ('2 in frozen layers stay dead' in err) == frozen


@needs_mmdet
def test_activation_mode_with_compare_and_plots(tiny_data, tmp_path):
    configs, checkpoint = tiny_data
    out, plots = tmp_path / 'report.json', tmp_path / 'plots'
    assert cli(checkpoint, '--compare', checkpoint, '--config',
               configs[18, 'BN'], '--data-config', configs[18, 'BN'],
               '--num-images', 2, '--json', out, '--plot-dir', plots) == 0
    report = json.loads(out.read_text())
    assert report['a']['num_images'] == report['b']['num_images'] == 2
    assert report['a']['total'] == report['b']['total']
    assert (plots / 'summary.png').stat().st_size > 10_000


@needs_mmdet
def test_backbone_that_does_not_match_is_one_line_and_exit_2(
        tiny_data, tmp_path, capsys):
    configs, checkpoint = tiny_data
    out = tmp_path / 'report.json'
    code = cli(checkpoint, '--data-config', configs[50, 'BN'],
               '--num-images', 1, '--json', out)
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert 'does not match' in err and not out.exists()


@needs_mmdet
def test_demo_config_and_demo_data_work_out_of_the_box(in_workspace,
                                                       tmp_path):
    """The demo config's own pipeline and preprocessor on the demo data."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    config = ROOT / 'configs' / 'demo' / 'faster_rcnn_r50_demo_psbn.py'
    backbone = MODELS.build(Config.fromfile(config).model.backbone)
    checkpoint = tmp_path / 'demo.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               backbone.state_dict().items()}}, checkpoint)
    out = tmp_path / 'report.json'
    assert cli(checkpoint, '--data-config', config, '--num-images', 2,
               '--json', out) == 0
    report = json.loads(out.read_text())
    assert report['num_images'] == 2
    assert [row['name'] for row in report['stages']] == [
        'stem', 'layer1', 'layer2', 'layer3', 'layer4']
    assert isinstance(report['total']['dead_activation'], int)


@needs_mmdet
def test_backbone_producing_nan_reports_non_finite_not_healthy(
        tiny_data, tmp_path, capsys):
    configs, checkpoint = tiny_data
    state = torch.load(checkpoint)['state_dict']
    state['backbone.conv1.weight'][:] = float('nan')
    nan_checkpoint = tmp_path / 'nan.pth'
    torch.save({'state_dict': state}, nan_checkpoint)
    out = tmp_path / 'report.json'
    assert cli(nan_checkpoint, '--data-config', configs[18, 'BN'],
               '--num-images', 2, '--json', out) == 0
    report = json.loads(out.read_text())
    pre_relu = sum(layer['channels'] for layer in report['layers']
                   if layer['role'] == 'pre-relu')
    assert report['total']['nonfinite'] >= pre_relu
    assert report['total']['dead_activation'] == 0
    assert 'NaN or Inf' in capsys.readouterr().err


@needs_mmdet
def test_missing_images_are_one_line_and_exit_2(tiny_data, tmp_path, capsys):
    configs, checkpoint = tiny_data
    config = tmp_path / 'no_images.py'
    root = Path(str(configs[18, 'BN'].read_text()).split(
        "data_root='")[1].split("'")[0])
    (tmp_path / 'coco' / 'annotations').mkdir(parents=True)
    (tmp_path / 'coco' / 'annotations' / 'instances_val.json').write_text(
        (root / 'annotations' / 'instances_val.json').read_text())
    config.write_text(configs[18, 'BN'].read_text().replace(
        str(root), str(tmp_path / 'coco')))
    out = tmp_path / 'report.json'
    code = cli(checkpoint, '--data-config', config, '--num-images', 2,
               '--json', out)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count('\n') == 0, err
    assert 'cannot read the images' in err and not out.exists()
