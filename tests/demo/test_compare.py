"""psbn_mmdet.demo.compare: the comparison that ends `make demo`, on crafted runs.

Work directories are written here as mmengine writes them (a timestamped
``vis_data/`` with ``scalars.json`` and ``config.py``, ``last_checkpoint``),
with known scalars, metrics and shift counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS
from psbn_mmdet.analysis import BNLayer, Report
from psbn_mmdet.core import PRE_ADD, PRE_RELU, STAGES
from psbn_mmdet.demo.cli import main
from psbn_mmdet.demo.compare import (Run, check_pretrained, find_scalars,
                                     format_comparison, last_metrics,
                                     read_scalars, stage_series, summary)
from psbn_mmdet.utils import UserError

PRETRAIN = CONFIGS / 'demo' / 'faster_rcnn_r18_demo_bn_pretrain.py'
FINETUNE = {'BN': CONFIGS / 'demo' / 'faster_rcnn_r18_demo_bn_finetune.py',
            'psBN': CONFIGS / 'demo' / 'faster_rcnn_r18_demo_psbn_finetune.py'}


def scalars(dead: dict[int, dict[str, int]], metrics=None) -> list[dict]:
    """Records as mmengine's LoggerHook writes them: train iterations with
    the hooks' scalars, then the evaluation's at the last step."""
    records = [dict(lr=0.002, loss=1.0, step=step,
                    **{f'psbn/dead_{s}': counts.get(s, 0) for s in STAGES},
                    **{f'psbn/recovered_{s}': 0 for s in STAGES})
               for step, counts in sorted(dead.items())]
    if metrics is not None:
        records.append(dict(**{f'coco/{k}': v for k, v in metrics.items()},
                            step=max(dead)))
    return records


def write_run(work_dir: Path, config: Path, records: list[dict],
              checkpoint: dict, stamp: str = '20260102_030405') -> Path:
    from mmengine.config import Config
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    Config.fromfile(str(config)).dump(str(vis / 'config.py'))
    (vis / 'scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in records))
    path = work_dir / f'iter_{checkpoint["meta"]["iter"]}.pth'
    torch.save(checkpoint, path)
    (work_dir / 'last_checkpoint').write_text(str(path))
    return path


# ---------------------------------------------------------------- the logs
def test_scalars_are_read_per_stage_and_the_last_evaluation_wins(tmp_path):
    records = scalars({10: {'layer4': 5}, 20: {'layer4': 7, 'layer2': 1}},
                      dict(bbox_mAP=0.5, bbox_mAP_50=0.9))
    records.insert(1, dict(**{'coco/bbox_mAP': 0.1}, step=10))
    records.append(dict(loss=0.5, step=30))  # a later train record
    path = tmp_path / 'scalars.json'
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    read = read_scalars(path)
    assert stage_series(read)['layer4'] == [(10, 5.0), (20, 7.0)]
    assert stage_series(read)['layer2'] == [(10, 0.0), (20, 1.0)]
    assert stage_series(read, 'collapsed_gamma') == {s: [] for s in STAGES}
    assert last_metrics(read) == {'coco/bbox_mAP': 0.5,
                                  'coco/bbox_mAP_50': 0.9}
    with open(path, 'a') as f:
        f.write('{"loss": 0.4, "st')  # a run killed while writing
    with pytest.raises(UserError, match='scalars.json:6: not a JSON record'):
        read_scalars(path)


def test_the_newest_run_of_a_work_dir_is_read(tmp_path):
    with pytest.raises(UserError, match='no \\*/vis_data/scalars.json'):
        find_scalars(tmp_path)
    for stamp in ('20260101_000000', '20260102_000000'):
        (tmp_path / stamp / 'vis_data').mkdir(parents=True)
        (tmp_path / stamp / 'vis_data' / 'scalars.json').write_text('')
    assert find_scalars(tmp_path).parts[-3] == '20260102_000000'


# ------------------------------------------------------------ the numbers
def layer(name, stage, role, gamma, dead=None) -> BNLayer:
    gamma = torch.tensor(gamma)
    return BNLayer(name, stage, role, gamma, torch.zeros_like(gamma),
                   gamma.abs() < 1e-3,
                   None if dead is None else torch.tensor(dead))


def crafted(label, norm, layers, shift_counts=None) -> tuple[Run, Report]:
    run = Run(label=label, work_dir=f'work_dirs/{label}',
              config='config.py', checkpoint=f'{label}.pth', iterations=200,
              norm=norm, frozen_stages=['stem', 'layer1'],
              metrics={'coco/bbox_mAP': 0.7, 'coco/bbox_mAP_50': 0.95},
              series={'dead': {s: [] for s in STAGES}},
              shift_counts={k: torch.tensor(v)
                            for k, v in (shift_counts or {}).items()})
    return run, Report(f'{label}.pth', 'mmengine', 1e-3, 1e-12, 64, layers)


def test_summary_counts_dead_collapsed_shifted_and_alive_per_stage():
    from psbn_mmdet.demo.compare import Column
    layers = [
        layer('backbone.bn1', 'stem', PRE_RELU, [1.0, 1.0], [True, False]),
        layer('backbone.layer4.0.bn1', 'layer4', PRE_RELU,
              [1.0, 0.0, 1.0, 1.0], [True, True, False, False]),
        layer('backbone.layer4.0.bn2', 'layer4', PRE_ADD, [0.0, 1e-4, 1.0],
              [False, False, False]),
    ]
    # channel 0 shifted twice and dead again, 2 once and alive, 1 never
    shifts = {'backbone.layer4.0.bn1': [2, 0, 1, 0]}
    numbers = summary([Column(*crafted('BN', 'BN', layers)),
                       Column(*crafted('psBN', 'psBN', layers, shifts))])
    bn, ps = numbers['BN']['stages'], numbers['psBN']['stages']
    assert bn['layer4'] == ps['layer4'] | dict(
        shifts=0, shifted_channels=0, shifted_alive=0)
    assert ps['layer4'] == dict(pre_relu_channels=4, dead=2, bn_channels=7,
                                collapsed_gamma=3, frozen=False, shifts=3,
                                shifted_channels=2, shifted_alive=1)
    assert ps['stem']['dead'] == 1 and ps['stem']['frozen']
    assert numbers['psBN']['bbox_mAP'] == 0.7
    table = format_comparison(numbers).splitlines()
    assert table[0].split() == ['of', 'BN', 'psBN']
    assert table[2].split() == ['bbox', 'mAP', '0.700', '0.700']
    assert 'revivals (revived channels alive at the end / channels revived)' \
        in table
    rows = [line.split() for line in table if line.startswith('  layer4')]
    assert rows == [['layer4', '4', '2', '2'], ['layer4', '7', '3', '3'],
                    ['layer4', '4', '-', '3', '(1/2)']]
    assert [line.split()[:2] for line in table
            if line.startswith('  stem')] == [['stem', '*']] * 3
    assert '* frozen in BN, psBN: not trained' in table[-1]


def test_shift_counts_of_layers_the_report_lacks_are_an_error():
    from psbn_mmdet.demo.compare import Column
    layers = [layer('backbone.layer4.0.bn1', 'layer4', PRE_RELU, [1.0],
                    [False])]
    column = Column(*crafted('psBN', 'psBN', layers,
                             {'neck.some.bn': [1]}))
    with pytest.raises(UserError, match='neck.some.bn'):
        summary([column])


def test_dead_channels_figure_says_why_a_panel_is_empty():
    from psbn_mmdet.demo.compare import dead_channels_figure
    runs = []
    for label, layer4 in (('BN', [3, 9]), ('psBN', [3, 4])):
        run, _ = crafted(label, label, [])
        run.series['dead'] = {s: [(10, 0.0), (20, 0.0)] for s in STAGES}
        run.series['dead']['layer4'] = [(10, 3.0), (20, float(layer4[1]))]
        run.series['dead']['layer3'] = []  # never logged
        runs.append(run)
    axes = dict(zip(STAGES, dead_channels_figure(runs).axes))
    texts = {s: [t.get_text() for t in ax.texts] for s, ax in axes.items()}
    assert 'frozen in every run' in texts['stem'][0]
    assert 'frozen in every run' in texts['layer1'][0]
    assert texts['layer2'] == ['no dead channel in any run']
    assert texts['layer3'] == ['no run logged this stage']
    assert texts['layer4'] == []
    assert [line.get_ydata().tolist() for line in axes['layer4'].lines] == [
        [3.0, 9.0], [3.0, 4.0]]
    assert not axes['stem'].lines and len(axes['layer2'].lines) == 2


# ------------------------------------------------------- real checkpoints
def detector_state(config) -> dict[str, torch.Tensor]:
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(str(config)).model).state_dict()


def test_check_pretrained_accepts_only_the_finished_run(tmp_path, capsys):
    from mmengine.config import Config
    work_dir = tmp_path / 'pretrain'
    with pytest.raises(UserError, match='no last_checkpoint'):
        check_pretrained(PRETRAIN, work_dir)
    assert main(['check-pretrained', str(PRETRAIN), '--work-dir',
                 str(work_dir)]) == 1
    assert 'no pretrained checkpoint to reuse' in capsys.readouterr().err
    state = detector_state(PRETRAIN)
    last = Config.fromfile(str(PRETRAIN)).train_cfg.max_iters
    path = write_run(work_dir, PRETRAIN, [], dict(
        meta=dict(iter=last), state_dict=state))
    assert check_pretrained(PRETRAIN, work_dir) == path
    moved = tmp_path / 'moved'
    work_dir.rename(moved)  # last_checkpoint still names the old path
    assert main(['check-pretrained', str(PRETRAIN), '--work-dir',
                 str(moved)]) == 0
    assert capsys.readouterr().out == f'{moved / path.name}\n'

    path = moved / path.name
    torch.save(dict(meta=dict(iter=last - 1), state_dict=state), path)
    with pytest.raises(UserError, match=f'iteration {last - 1}, the config '
                                        f'trains {last}'):
        check_pretrained(PRETRAIN, moved)
    state.pop('roi_head.bbox_head.fc_cls.bias')
    torch.save(dict(meta=dict(iter=last), state_dict=state), path)
    with pytest.raises(UserError, match='do not match the model'):
        check_pretrained(PRETRAIN, moved)


def test_compare_writes_the_table_json_and_plots(in_workspace, tmp_path,
                                                  capsys, monkeypatch):
    """Three runs of one random-init checkpoint whose layer4.0.bn1 channels
    0-9 can never be active; the psBN run has shift counts keyed as the
    training hook's controller keys them."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from psbn_mmdet import PostShiftController
    import psbn_mmdet.demo.compare
    plotted = []  # the report's figures have tests of their own (seconds)
    monkeypatch.setattr(
        psbn_mmdet.demo.compare, 'plot_reports', lambda reports, labels: (
            plotted.append((reports, labels))
            or {'summary.png': b'\x89PNG summary'}))
    state = detector_state(FINETUNE['BN'])
    state['backbone.layer4.0.bn1.bias'][:10] = -1e4
    model = MODELS.build(Config.fromfile(str(FINETUNE['psBN'])).model)
    controller = PostShiftController(model)
    first, second = [n for n in controller.pre_relu
                     if controller.roles[n].stage == 'layer4'][:2]
    assert first == 'backbone.layer4.0.bn1'
    # two dead channels shifted 1 and 2 times, one healthy one 5 times
    shift_counts = {first: [1, 2] + [0] * 254, second: [0] * 255 + [5]}
    work_dirs = {}
    for label, config in (('pretrained', PRETRAIN), *FINETUNE.items()):
        work_dirs[label] = tmp_path / label
        checkpoint = dict(meta=dict(iter=20), state_dict=state)
        if label == 'psBN':
            checkpoint['psbn'] = dict(steps=20, shift_counts=shift_counts)
        write_run(work_dirs[label], config, scalars(
            {10: {'layer4': 30}, 20: {'layer4': 50 if label == 'BN' else 20}},
            dict(bbox_mAP=0.25, bbox_mAP_50=0.5)), checkpoint)
    out_dir = tmp_path / 'demo'
    assert main(['compare', f'BN={work_dirs["BN"]}',
                 f'psBN={work_dirs["psBN"]}', '--pretrained',
                 str(work_dirs['pretrained']), '--num-images', '2',
                 '--out-dir', str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith((out_dir / 'comparison.txt').read_text())
    numbers = json.loads((out_dir / 'comparison.json').read_text())
    assert list(numbers) == ['pretrained', 'BN', 'psBN']
    for label, run in numbers.items():
        stages = run['stages']
        # the narrow ResNet-18's pre-ReLU channels: stem, then 2 blocks each
        assert [stages[s]['pre_relu_channels'] for s in STAGES] == [
            32, 64, 128, 256, 512], label
        assert stages['layer4']['dead'] >= 10, label
        assert run['bbox_mAP'] == 0.25 and run['bbox_mAP_50'] == 0.5
    # the same weights: the same counts, whichever config built the backbone
    assert numbers['pretrained']['stages'] == {
        s: row | {'frozen': False}
        for s, row in numbers['BN']['stages'].items()}
    layer4 = numbers['psBN']['stages']['layer4']
    assert (layer4['shifts'], layer4['shifted_channels'],
            layer4['shifted_alive']) == (8, 3, 1)
    assert numbers['BN']['stages']['layer4']['shifts'] == 0
    assert numbers['BN']['frozen_stages'] == ['stem', 'layer1']
    assert numbers['pretrained']['frozen_stages'] == []
    assert numbers['BN']['last_window_dead']['layer4'] == 50
    assert '8 (1/3)' in printed
    # the report's plots compare the finetunes, named by their labels
    [((a, b), labels)] = plotted
    assert labels == ['BN', 'psBN']
    assert (a.checkpoint, b.checkpoint) == (numbers['BN']['checkpoint'],
                                            numbers['psBN']['checkpoint'])
    assert (out_dir / 'report/summary.png').read_bytes() == b'\x89PNG summary'
    assert (out_dir / 'dead_channels.png').read_bytes().startswith(b'\x89PNG')


def test_the_benchmark_summary_is_read_and_printed_under_the_table(tmp_path):
    from psbn_mmdet.demo.compare import format_evidence, read_evidence
    path = tmp_path / 'evidence.json'
    path.write_text(json.dumps(dict(
        setting='the demo finetune', source='docs/demo_finetune.md',
        metric='bbox mAP', seeds=8, differences=[
            dict(name='psBN − BN', mean=0.0123, low=-0.02, high=0.045)])))
    text = format_evidence(read_evidence(path))
    assert '8 paired seeds; docs/demo_finetune.md' in text
    assert 'psBN − BN: +0.012 [-0.020, +0.045]' in text
    assert text.rstrip().endswith('One demo run is one seed: read its '
                                  'difference against these intervals.')
    path.write_text('{"setting": "x"}')
    with pytest.raises(UserError, match='not a benchmark summary'):
        read_evidence(path)


def test_a_summary_of_a_cell_the_demo_does_not_run_says_so(tmp_path):
    from psbn_mmdet.demo.compare import format_evidence
    text = format_evidence(dict(
        setting='the solid5 transfer task', source='docs/x.md', seeds=8,
        differences=[dict(name='healthy checkpoint, BN − BN', mean=0.4,
                          low=0.35, high=0.45)],
        note='A cell where collapse costs mAP, not run by this demo.'))
    assert 'healthy checkpoint, BN − BN: +0.400 [+0.350, +0.450]' in text
    assert text.rstrip().endswith('not run by this demo.')
    assert 'One demo run is one seed' not in text
