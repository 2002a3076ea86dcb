"""The detection finetune benchmark: records in, table and figure out, and
(slow) its quick cell shows the phenomenon on the real demo detector."""
import json

import pytest

from conftest import REPO, run_tool
from research.detection_study import demo as study

STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')


def _record(regime, norm, seed, dead4, mAP, shifts=0, alive=0):
    stages = {s: dict(pre_relu_channels=256, dead=0, bn_channels=512,
                      collapsed_gamma=0, frozen=s in ('stem', 'layer1'),
                      shifts=0, shifted_channels=0, shifted_alive=0)
              for s in STAGES}
    stages['layer4'].update(dead=dead4, shifts=shifts,
                            shifted_channels=shifts, shifted_alive=alive)
    return dict(job=dict(regime=regime, norm=norm, seed=seed,
                         iterations=None), seconds=60.0 * (1 + seed),
                checkpoint='x.pth', bbox_mAP=mAP, bbox_mAP_50=mAP + 0.1,
                stages=stages, recollapses=shifts // 2,
                steps_to_recollapse_sum=0, window=20,
                dead_series={s: [[20, 0], [40, dead4 if s == 'layer4' else 0]]
                             for s in STAGES})


RECORDS = [_record('adam_l2', 'BN', 0, 128, 0.70),
           _record('adam_l2', 'psBN', 0, 32, 0.66, shifts=40, alive=30),
           _record('adam_l2', 'BN', 1, 64, 0.72),
           _record('adam_l2', 'psBN', 1, 16, 0.68, shifts=20, alive=10),
           _record('sgd', 'BN', 0, 0, 0.75), _record('sgd', 'psBN', 0, 0, 0.75)]


def test_table_has_a_row_per_cell_with_mean_and_std_over_seeds():
    lines = study.table(RECORDS).splitlines()
    assert len(lines) == 2 + 4
    header = lines[0]
    assert 'dead % stem' not in header and 'dead % layer4' in header
    bn = next(line for line in lines if 'Adam' in line and '| BN |' in line)
    # layer4: 128/256 and 64/256 dead -> 37.5 ± 17.7 %
    assert '| 37.5 ± 17.7 |' in bn and '| 0.710 ± 0.014 |' in bn
    psbn = next(line for line in lines if 'Adam' in line and 'psBN' in line)
    assert '40/60 (67%)' in psbn  # shifted channels alive at the end
    control = [line for line in lines if 'control' in line]
    assert len(control) == 2 and all('| 0.0 ± 0.0 |' in c for c in control)


def test_figure_and_page_are_rendered_from_records_alone(tmp_path):
    runs = tmp_path / 'runs.json'
    runs.write_text(json.dumps(dict(
        machine='test', argv=['--seeds', '0', '1'], processes=2,
        wall_seconds=600.0, pretrain_seconds=0.0, load=[0.1, 0.2],
        runs=RECORDS)))
    out, figures = tmp_path / 'page.md', tmp_path / 'figures'
    assert study.main(['--from-json', str(runs), '--out', str(out),
                       '--figures', str(figures)]) == 0
    page = out.read_text()
    assert '<!-- finetune:begin -->' in page and '| 0.710 ± 0.014 |' in page
    assert 'python -m research.detection_study demo --seeds 0 1' in page
    png = figures / 'demo_finetune_dead.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert png.stat().st_size > 10_000


def test_mask_cell_peer_and_next_window_reshifts_are_rendered(tmp_path):
    mask = [dict(_record('adam_l2', norm, 0, 64, 0.6), segm_mAP=0.5)
            for norm in ('BN', 'psBN')]
    for record in mask:
        record['job']['detector'] = 'mask'
    redo = dict(_record('adam_l2', 'ReDo', 0, 8, 0.69), recycled=300)
    psbn = dict(_record('adam_l2', 'psBN window=20', 0, 4, 0.7, shifts=50,
                        alive=45), recollapses_next_window=3)
    lines = study.table(RECORDS + mask + [redo, psbn]).splitlines()
    assert 'segm mAP' in lines[0]
    [mask_bn] = [l for l in lines if 'Mask R-CNN' in l and '| BN |' in l]
    assert '| 0.500 ± 0.000 |' in mask_bn
    [peer] = [l for l in lines if '| ReDo |' in l]
    assert '300 ± 0 recycled' in peer
    [restore] = [l for l in lines if 'psBN window=20' in l]
    assert '| 25 ± 0 (3 ± 0) |' in restore
    # Faster R-CNN cells first, BN before its recovery rules
    order = [l.split('|')[2].strip() for l in lines[2:]
             if 'Adam' in l and 'Mask' not in l]
    assert order == ['BN', 'psBN', 'psBN window=20', 'ReDo']
    assert 'Mask R-CNN' in lines[-1]
    runs = [dict(machine='m', argv=['--detector', 'mask'], processes=2,
                 wall_seconds=60.0, load=[0, 0], runs=mask),
            dict(machine='m', argv=[], processes=2, wall_seconds=60.0,
                 load=[0, 0], runs=RECORDS)]
    files = []
    for i, record in enumerate(runs):
        files.append(tmp_path / f'{i}.json')
        files[-1].write_text(json.dumps(record))
    out = tmp_path / 'page.md'
    assert study.main(['--from-json', *map(str, files), '--out',
                       str(out)]) == 0
    page = out.read_text()
    assert 'Command 1: `python -m research.detection_study demo --detector mask`' \
        in page and 'Command 2:' in page
    assert 'configs/demo/mask_rcnn_r18_demo_bn.py' in page


def test_unreadable_records_are_one_line(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{')
    result = run_tool('-m', 'research.detection_study', 'demo',
                      '--from-json', bad, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'detection_study demo: error: cannot read {bad}: Expecting '
        'property name enclosed in double quotes: line 1 column 2 (char 1)']


@pytest.mark.slow
@pytest.mark.long
def test_quick_cell_shows_collapse_under_bn_and_fewer_dead_with_psbn(
        tmp_path):
    """Adam + coupled L2 finetune of the demo detector (100-iteration
    pretrain, 60-iteration finetunes, seed 0).  Measured (2026-12-02):
    BN 285 of layer4's 512 pre-ReLU channels dead, 71 of layer3's 256;
    psBN 104 and 27 after 398 shifts."""
    records = tmp_path / 'quick.json'
    assert study.main(['--quick', '--workspace', str(tmp_path),
                       '--json', str(records)]) == 0
    runs = {r['job']['norm']: r for r in json.loads(
        records.read_text())['runs']}
    bn, psbn = runs['BN'], runs['psBN']
    dead = {norm: sum(r['stages'][s]['dead'] for s in STAGES)
            for norm, r in runs.items()}
    layer4 = bn['stages']['layer4']
    assert layer4['dead'] > 0.25 * layer4['pre_relu_channels']  # collapse
    assert sum(bn['stages'][s]['shifts'] for s in STAGES) == 0
    assert sum(psbn['stages'][s]['shifts'] for s in STAGES) > 0
    assert dead['psBN'] < 0.7 * dead['BN']
    assert bn['bbox_mAP'] is not None and psbn['bbox_mAP'] is not None


def _inherited(norm, seed, mAP, dead4, start='collapsed'):
    record = _record('sgd', norm, seed, dead4, mAP)
    record['job']['start'] = start
    return record


INHERITED = [_inherited('BN', s, 0.60 + 0.01 * s, 100) for s in range(3)] + [
    _inherited('psBN', s, 0.62 + 0.01 * s + 0.002 * s, 0) for s in range(3)
] + [_inherited('BN', s, 0.70, 0, start='healthy') for s in range(3)] + [
    _inherited('psBN', s, 0.70, 0, start='healthy') for s in range(3)]


def test_inherited_cell_pairs_rules_with_bn_and_the_healthy_control():
    """From the collapsed checkpoint each rule pairs with BN by seed; the
    healthy checkpoint's BN finetune is the control (what collapse costs)
    and its psBN run pairs with it (the no-collapse check)."""
    table = study.paired_table(INHERITED)
    rows = {line.split(' | ')[1]: line for line in table.splitlines()[2:]}
    # psBN − BN per seed: 0.020, 0.022, 0.024 -> mean +0.022
    assert rows['psBN − BN'].split(' | ')[3].startswith('+0.022 [')
    # 100 of the 768 channels of layer2-4 (stem and layer1 frozen)
    assert rows['psBN − BN'].endswith('| -13.0 [-13.0, -13.0] |')
    # healthy − BN: 0.10, 0.09, 0.08
    assert rows['healthy checkpoint, BN − BN'].split(' | ')[3].startswith(
        '+0.090 [+0.065, +0.115]')
    assert rows['healthy checkpoint, psBN − healthy checkpoint, BN'].split(
        ' | ')[3] == '+0.000 [+0.000, +0.000]'
    assert '| collapsed checkpoint, SGD+m, lr 0.02 |' in table
    evidence = study.evidence(INHERITED, 'collapsed:sgd', 'records.json')
    assert evidence['seeds'] == 3 and [d['name'] for d in evidence[
        'differences']][:2] == ['healthy checkpoint, BN − BN',
                                'healthy checkpoint, psBN − healthy '
                                'checkpoint, BN']


def test_inherited_cell_is_the_demo_configs_finetune():
    """`--starts collapsed --regimes sgd` runs the demo's inherited
    finetune: the research's options over the Adam finetune configs give
    the demo's SGD configs (load_from aside, which each sets)."""
    import argparse

    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser()  # tools/train.py's --cfg-options
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    for norm, demo_config in (
            ('BN', 'configs/demo/faster_rcnn_r18_demo_bn_inherited.py'),
            ('psBN', 'configs/demo/faster_rcnn_r18_demo_psbn_inherited.py')):
        config, options = study.FINETUNE[norm]
        cell = Config.fromfile(str(REPO / config))
        cell.merge_from_dict(parser.parse_args([
            '--cfg-options', *options,
            *study.REGIMES['sgd'].options]).cfg_options)
        demo = Config.fromfile(str(REPO / demo_config))
        assert cell.optim_wrapper == demo.optim_wrapper, norm
        for key in ('model', 'train_cfg', 'param_scheduler',
                    'train_dataloader'):
            assert cell[key] == demo[key], (norm, key)
        hooks = [h['type'] for h in cell.custom_hooks]
        assert [h['type'] for h in demo.custom_hooks] == [
            t for t in hooks if t != 'ReshiftCounterHook'], norm
    assert (study.STARTS['collapsed'].regime == 'adam_l2'
            and study.FINETUNE['BN'][0].endswith('demo_bn_finetune.py'))


def test_evidence_needs_records(tmp_path):
    result = run_tool('-m', 'research.detection_study', 'demo', '--evidence',
                      tmp_path / 'e.json', cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'detection_study demo: error: --evidence summarizes records: give '
        '--from-json']
    assert not (tmp_path / 'e.json').exists()


def test_the_demo_prints_the_committed_inherited_benchmark():
    """tools/run_demo.sh passes --evidence a file that is the summary of the
    committed inherited-cell records, recomputed here from them."""
    import re

    from psbn_mmdet.demo.compare import read_evidence
    from research.records import read_records
    script = (REPO / 'tools' / 'run_demo.sh').read_text()
    [path] = re.findall(r'^EVIDENCE=(\S+)$', script, re.M)
    assert '--evidence "$EVIDENCE" "$COSTLY"' in script
    committed = read_evidence(REPO / path)
    records = read_records(sorted(str(p) for p in (
        REPO / 'docs' / 'demo_finetune_runs').glob('*.json')
        if p.name != 'evidence_inherited.json'))
    runs = [run for record in records for run in record['runs']]
    again = study.evidence(runs, 'collapsed:sgd', committed['source'])
    assert committed == json.loads(json.dumps(again))
    assert committed['seeds'] >= 8
    names = [d['name'] for d in committed['differences']]
    assert names[:1] == ['healthy checkpoint, BN − BN'] and 'psBN − BN' in names
