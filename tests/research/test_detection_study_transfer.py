"""The detection study's transfer cells (issues 23, 38): its configs agree with the data and the
width options, its regimes build, its tables come from records alone, and
(slow) its quick cell runs end to end."""
import json
from pathlib import Path

import pytest
from mmengine.config import Config

from conftest import REPO
from psbn_mmdet.demo.shapes import TEXTURED_CLASSES
from research.detection_study import transfer as study
from research.detection_study.harness import step_options

STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')
CONFIGS = REPO / study.CONFIGS


def _config(name: str, options=()) -> Config:
    import argparse

    from mmengine.config import DictAction
    cfg = Config.fromfile(str(CONFIGS / name))
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    return cfg


def test_configs_use_the_textured_classes_and_data():
    for name in ('textured_source_pretrain.py', 'textured_target_finetune.py'):
        cfg = _config(name)
        assert tuple(cfg.classes) == TEXTURED_CLASSES
        assert cfg.model.roi_head.bbox_head.num_classes == 20
        assert cfg.train_dataloader.dataset.metainfo['classes'] == \
            TEXTURED_CLASSES
        domain = 'source' if 'source' in name else 'target'
        assert cfg.train_dataloader.dataset.data_root == \
            study.DATA[domain]['out_dir'] + '/'
        assert cfg.val_evaluator.ann_file.startswith(
            study.DATA[domain]['out_dir'])
    finetune = _config('textured_target_finetune.py')
    assert finetune.model.backbone.frozen_stages == 1
    assert finetune.model.backbone.norm_eval is True


@pytest.mark.parametrize('width', [0.5, 2.0])
def test_width_configs_are_the_1x_ones_with_the_width_options(width):
    suffix, base = study.WIDTHS[width]
    for stem in ('textured_target_finetune',):
        wide = _config(f'{stem}{suffix}.py')
        one = _config(f'{stem}.py', study.width_options(width))
        wide, one = wide.to_dict(), one.to_dict()
        assert wide.pop('base_channels') == base  # the variable only
        one.pop('base_channels')
        assert wide == one
    pretrain = _config(f'textured_source_pretrain{suffix}.py')
    assert pretrain.model.backbone.base_channels == base
    assert pretrain.model.neck.in_channels == [base, 2 * base, 4 * base,
                                               8 * base]


def test_norm_configs_differ_from_bn_only_in_norm_and_hooks():
    bn = _config('textured_target_finetune.py')
    psbn = _config('textured_target_finetune_psbn.py')
    assert psbn.model.backbone.norm_cfg.type == 'psBN'
    assert [h['type'] for h in psbn.custom_hooks] == ['PostShiftHook']
    redo = _config('textured_target_finetune_redo.py')
    assert [h['type'] for h in redo.custom_hooks] == [
        'CollapseMonitorHook', 'ReDoHook']
    rule = _config('textured_target_finetune_psbn_b.py')
    assert [h['type'] for h in rule.custom_hooks] == [
        'PostShiftHook', 'RevivalHook']
    assert rule.custom_hooks[1]['filter'] == 'rescale'
    for other in (psbn, redo, rule):
        other.model.backbone.norm_cfg.type = 'BN'
        other.custom_hooks = bn.custom_hooks
        other.custom_imports = bn.custom_imports
        assert other.to_dict() == bn.to_dict()


@pytest.mark.parametrize('regime', list(study.REGIMES))
def test_regimes_build_their_optimizer(regime):
    import torch
    from mmengine.optim import build_optim_wrapper
    cfg = _config('textured_target_finetune.py',
                  study.REGIMES[regime].options)
    model = torch.nn.Linear(2, 2)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    kind = type(wrapper.optimizer).__name__
    assert kind == ('Adam' if regime == 'adam_l2' else 'SGD')
    group = wrapper.optimizer.param_groups[0]
    assert group['lr'] == ({'control': 0.01, 'sgd_high': 0.1,
                            'adam_l2': 2e-3, 'recipe': 0.02}.get(regime)
                           or float(regime.rsplit('_lr', 1)[1]))
    if 'warmup' in regime:  # mmdet's linear warm-up, then constant
        assert cfg.param_scheduler == dict(
            type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
            end=50)
    elif regime == 'recipe':  # issue 38: mmdet's step at 75%
        assert cfg.param_scheduler == dict(
            type='MultiStepLR', by_epoch=False, begin=0, end=200,
            milestones=[150], gamma=0.1)
    else:
        assert cfg.param_scheduler == []


def test_grid_pairs_norms_within_a_seed():
    jobs = study.grid([1], ['control', 'adam_l2'], ['BN', 'psBN'], [0, 1])
    assert len(jobs) == 8 and len({j.name for j in jobs}) == 8
    assert jobs[0].name == 'w1_control_bn_seed0'
    assert [j.norm for j in jobs[:2]] == ['BN', 'psBN']


def _run(norm, seed, mAP, dead4, regime='adam_l2', width=1.0):
    stages = {s: dict(pre_relu_channels=100, dead=0,
                      frozen=s in ('stem', 'layer1')) for s in STAGES}
    stages['layer4']['dead'] = dead4
    return dict(job=dict(width=width, regime=regime, norm=norm, seed=seed,
                         iterations=None), seconds=90.0, bbox_mAP=mAP,
                bbox_mAP_50=mAP + 0.2, stages=stages)


RUNS = [_run('BN', 0, 0.30, 60), _run('psBN', 0, 0.32, 3),
        _run('BN', 1, 0.28, 50), _run('psBN', 1, 0.31, 0),
        _run('BN', 2, 0.29, 55), _run('psBN', 2, 0.31, 6),
        _run('BN', 0, 0.40, 0, 'control')]


def test_interval_is_the_t_interval():
    # mean 0.02, sd 0.01, n 3: t(0.975, 2) = 4.303 -> ± 0.0248
    assert study.interval([0.01, 0.02, 0.03]) == '+0.020 [-0.005, +0.045]'
    assert study.interval([0.5]) == '+0.500'


def test_tables_from_records():
    cells = study.cell_table(RUNS).splitlines()
    assert len(cells) == 2 + 3
    bn = next(line for line in cells if 'Adam' in line and '| BN |' in line)
    assert '| 0.290 ± 0.010 |' in bn and '| 18.3 ± 1.7 |' in bn
    paired = study.paired_table(RUNS).splitlines()
    assert len(paired) == 2 + 1  # no ReDo runs, control has BN only
    assert 'psBN − BN | 3 | +0.023' in paired[2]


def test_a_run_recorded_twice_counts_once():
    """A screening run reused by its cell (--reuse) is in two records: the
    cell has one run of that seed, the later record's."""
    again = dict(RUNS[0], reused=True, seconds=1.0)
    runs = study.unique_runs([dict(runs=RUNS), dict(runs=[again])])
    assert len(runs) == len(RUNS) and again in runs and RUNS[0] not in runs
    cells = study.cell_table(runs)
    assert '| 1x | Adam lr 2e-3 + coupled L2 5e-3 | BN | config | 3 |' in cells


def test_render_and_from_json(tmp_path):
    record = dict(machine='test', argv=['--seeds', '0'], wall_seconds=60.0,
                  runs=RUNS, pretrained_eval=[dict(
                      width=1.0, label='pretrained', val_images=500,
                      **{'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.4})])
    path = tmp_path / 'r.json'
    path.write_text(json.dumps(record))
    out = tmp_path / 'page.md'
    assert study.main(['--from-json', str(path), '--out', str(out)]) == 0
    page = out.read_text()
    assert '<!-- transfer:begin -->' in page
    assert '| 1x | 0.200 | 0.400 | 500 |' in page
    assert 'psBN − BN' in page


def test_val_subset_keeps_the_images_asked_for(tmp_path, monkeypatch):
    root = tmp_path / study.DATA['target']['out_dir'] / 'annotations'
    root.mkdir(parents=True)
    (root / 'instances_val.json').write_text(json.dumps(dict(
        images=[dict(id=i) for i in range(1, 5)],
        annotations=[dict(id=i, image_id=i) for i in range(1, 5)],
        categories=[])))
    monkeypatch.chdir(tmp_path)
    subset = json.loads(open(study.val_subset(2, 3, tmp_path / 'sub')).read())
    assert [i['id'] for i in subset['images']] == [2, 3]
    assert [a['image_id'] for a in subset['annotations']] == [2, 3]
    with pytest.raises(study.UserError):
        study.val_subset(3, 9, tmp_path / 'sub')


def test_bad_val_images_or_processes_is_a_user_error():
    with pytest.raises(study.UserError, match='--val-images'):
        study.parse_args(['--val-images', '0'])
    with pytest.raises(study.UserError, match='--processes'):
        study.parse_args(['--processes', '0'])


@pytest.mark.slow
@pytest.mark.long
def test_quick_runs_end_to_end(tmp_path):
    """Tiny data, a 20-iteration 0.5x pretrain, BN and psBN finetuned 10
    iterations under Adam + L2, two at a time: records in job order with an
    mAP and dead counts, each run's output in its own log."""
    import torch
    threads = torch.get_num_threads()
    records = tmp_path / 'quick.json'
    assert study.main(['--quick', '--workspace', str(tmp_path),
                       '--processes', '2', '--json', str(records)]) == 0
    assert torch.get_num_threads() == threads  # restored for what follows
    listed = json.loads(records.read_text())['runs']
    assert [r['job']['norm'] for r in listed] == ['BN', 'psBN']
    runs = {r['job']['norm']: r for r in listed}
    quick = tmp_path / 'work_dirs' / 'transfer' / 'quick'
    for norm in ('bn', 'psbn'):  # 'w0.5_...': the dot stays in the name
        log = quick / f'w0.5_adam_l2_{norm}_seed0.log'
        assert 'Iter(train)' in log.read_text()
    for run in runs.values():
        assert run['bbox_mAP'] is not None and run['seconds'] > 0
        assert run['stages']['layer4']['pre_relu_channels'] > 0
    # --reuse records the finished runs again without training them
    again = tmp_path / 'again.json'
    assert study.main(['--quick', '--workspace', str(tmp_path), '--reuse',
                       '--json', str(again)]) == 0
    record = json.loads(again.read_text())
    assert record['complete'] is True
    reused = {r['job']['norm']: r for r in record['runs']}
    assert all(r['reused'] for r in reused.values())
    assert {n: r['bbox_mAP'] for n, r in reused.items()} == \
        {n: r['bbox_mAP'] for n, r in runs.items()}


def test_evidence_is_what_the_demo_reads(tmp_path):
    from psbn_mmdet.demo.compare import format_evidence, read_evidence
    record = dict(machine='test', argv=[], wall_seconds=1.0, runs=RUNS)
    path, out = tmp_path / 'r.json', tmp_path / 'evidence.json'
    path.write_text(json.dumps(record))
    assert study.main(['--from-json', str(path), '--evidence',
                       str(out)]) == 0
    summary = read_evidence(out)
    assert summary['seeds'] == 3
    [difference] = summary['differences']  # no ReDo runs
    assert difference['name'] == 'psBN − BN'
    assert difference['mean'] == pytest.approx(0.07 / 3)
    assert difference['low'] < difference['mean'] < difference['high']
    assert 'psBN − BN: +0.023 [' in format_evidence(summary)
    with pytest.raises(study.UserError, match='no paired seeds'):
        study.evidence(RUNS, 'control', 'x')  # BN only there
    with pytest.raises(study.UserError, match='give --from-json'):
        study.parse_args(['--evidence', str(out)])


def test_a_finished_run_is_found_with_its_seconds(tmp_path):
    work_dir = tmp_path / 'w1_adam_l2_bn_seed0'
    assert study.finished_seconds(work_dir) is None  # no such run
    (work_dir / '20261203_120000').mkdir(parents=True)
    assert study.finished_seconds(work_dir) is None  # started, no checkpoint
    checkpoint = work_dir / 'iter_200.pth'
    checkpoint.write_bytes(b'x')
    (work_dir / 'last_checkpoint').write_text(str(checkpoint))
    import os
    import time
    started = time.mktime(time.strptime('20261203_120000', '%Y%m%d_%H%M%S'))
    os.utime(checkpoint, (started + 95, started + 95))
    assert study.finished_seconds(work_dir) == pytest.approx(95)


def test_the_committed_evidence_is_the_benchmarks_summary():
    """docs/transfer_runs/evidence.json (the demo's evidence before issue
    29) is the summary of the committed records, recomputed here."""
    from psbn_mmdet.demo.compare import read_evidence
    from research.records import read_records
    committed = read_evidence(REPO / 'docs' / 'transfer_runs' /
                              'evidence.json')
    records = read_records(sorted(str(p) for p in (
        REPO / 'docs' / 'transfer_runs').glob('bench_*.json')))
    runs = study.unique_runs(records)
    again = study.evidence(runs, 'adam_l2', committed['source'])
    assert committed['seeds'] == again['seeds'] >= 8
    assert [d['name'] for d in committed['differences']] == \
        [d['name'] for d in again['differences']]
    for a, b in zip(committed['differences'], again['differences']):
        for key in ('mean', 'low', 'high'):
            assert a[key] == pytest.approx(b[key])


# ---------------------------------------------------------------- issue 38
@pytest.mark.parametrize('page, kinds', [
    ('transfer_study.md', ('bench', 'check_capacity', 'screen')),
    ('detection_screening.md', ('screen38',)),
    ('revival_default.md', ('d38',))])
def test_the_committed_page_renders_unchanged(page, kinds):
    """A page's transfer section is what its records render to (issue
    23's: the task variants and starts add nothing to its records; issue
    38's screening and its cells D0-D2)."""
    from research.records import read_records
    runs = REPO / 'docs' / 'transfer_runs'
    paths = [sorted(str(p) for p in runs.glob(f'{kind}_*.json'))
             for kind in kinds]
    text = study.render(read_records([p for group in paths for p in group]))
    page = (REPO / 'docs' / page).read_text()
    assert f'<!-- transfer:begin -->\n{text}\n<!-- transfer:end -->' in page


@pytest.mark.parametrize('name', [t for t in study.TASKS if t != 'textured'])
def test_task_configs_agree_with_the_task_data(name):
    task = study.TASKS[name]
    for kind, domain in (('source_pretrain', 'source'),
                         ('target_finetune', 'target'),
                         ('source_start', 'source')):
        cfg = _config(f'{name}_{kind}.py')
        spec = task.data[domain]
        assert tuple(cfg.classes) == tuple(spec['classes'])
        assert set(spec['classes']) <= set(TEXTURED_CLASSES)
        assert cfg.model.roi_head.bbox_head.num_classes == \
            len(spec['classes'])
        assert cfg.train_dataloader.dataset.data_root == \
            spec['out_dir'] + '/'
        assert cfg.val_evaluator.ann_file.startswith(spec['out_dir'])
        assert spec['small'] is False
    pretrain = _config(f'{name}_source_pretrain.py')
    assert pretrain.train_cfg.max_iters == task.pretrain_iters
    assert pretrain.param_scheduler[1]['milestones'] == [
        int(0.75 * task.pretrain_iters)]
    assert _config(f'{name}_source_start.py').load_from == \
        study.width_options(1.0, 'work_dirs/screen38', name)[2][
            len('load_from='):]
    assert task.val_images >= 200


@pytest.mark.parametrize('name', [t for t in study.TASKS if t != 'textured'])
def test_the_finetune_is_mmdets_recipe_for_several_epochs(name):
    cfg = _config(f'{name}_target_finetune.py')
    assert cfg.model.backbone.frozen_stages == 1
    assert cfg.model.backbone.norm_eval is True
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4)
    [step] = cfg.param_scheduler
    assert step['type'] == 'MultiStepLR' and step['gamma'] == 0.1
    assert step['milestones'] == [int(0.75 * cfg.train_cfg.max_iters)]
    images = study.TASKS[name].data['target']['num_train']
    epochs = (cfg.train_cfg.max_iters *
              cfg.train_dataloader.batch_size / images)
    assert epochs >= 4
    # the 'recipe' regime sets the same optimizer and step
    again = _config(f'{name}_target_finetune.py',
                    study.REGIMES['recipe'].options)
    assert again.optim_wrapper.optimizer == cfg.optim_wrapper.optimizer
    assert again.param_scheduler == dict(step, end=cfg.train_cfg.max_iters)
    # --iterations moves the step with them
    longer = _config(f'{name}_target_finetune.py', (
        *study.REGIMES['recipe'].options, *step_options(400)))
    assert longer.param_scheduler['milestones'] == [300]


@pytest.mark.parametrize('start', list(study.STARTS))
@pytest.mark.parametrize('name', [t for t in study.TASKS if t != 'textured'])
def test_starts_train_on_the_source_frozen_at_a_constant_lr(name, start):
    import torch
    from mmengine.optim import build_optim_wrapper
    cfg = _config(f'{name}_source_start.py', study.STARTS[start].options)
    assert cfg.model.backbone.frozen_stages == 1
    assert cfg.model.backbone.norm_eval is True
    assert cfg.param_scheduler == []
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    group = wrapper.optimizer.param_groups[0]
    if start == 'collapsed':  # torch Adam: coupled L2
        assert type(wrapper.optimizer).__name__ == 'Adam'
        assert (group['lr'], group['weight_decay']) == (2e-3, 5e-3)
    else:
        assert type(wrapper.optimizer).__name__ == 'SGD'
        assert (group['lr'], group['momentum'], group['weight_decay']) == \
            (0.02, 0.9, 1e-4)


@pytest.mark.parametrize('name', [t for t in study.TASKS if t != 'textured'])
def test_task_half_width_is_the_1x_with_the_width_options(name):
    half = _config(f'{name}_source_pretrain_w05.py').to_dict()
    one = _config(f'{name}_source_pretrain.py',
                  study.width_options(0.5, task=name)[:2]).to_dict()
    assert half.pop('base_channels') == 16
    one.pop('base_channels')
    assert half == one


@pytest.mark.parametrize('name', [t for t in study.TASKS if t != 'textured'])
def test_task_norm_configs_differ_from_bn_only_in_norm_and_hooks(name):
    bn = _config(Path(study.config(name, 'target_finetune')).name)
    for norm in ('psBN', 'ReDo', 'psBN_b'):
        path = study.config(name, 'target_finetune', norm=norm)
        assert path.startswith(f'{study.CONFIGS}/{name}_target_finetune')
        other = _config(Path(path).name)
        other.model.backbone.norm_cfg.type = 'BN'
        other.custom_hooks = bn.custom_hooks
        other.custom_imports = bn.custom_imports
        assert other.to_dict() == bn.to_dict()
    assert study.config('textured', 'target_finetune', norm='psBN') == \
        study.NORMS['psBN']
    with pytest.raises(study.UserError, match='no source_pretrain config'):
        study.config(name, 'source_pretrain', 2.0)


def test_jobs_of_a_task_and_start_are_named_and_read_back():
    jobs = study.grid([1, 0.5], ['recipe'], ['BN'], [0, 1], task='big10',
                      starts=('healthy', 'collapsed'))
    assert len(jobs) == 8 and len({j.name for j in jobs}) == 8
    assert jobs[0].name == 'big10_healthy_w1_recipe_bn_seed0'
    # issue 23's records (no task, no start) read back as before
    old = study.Job(**_run('BN', 0, 0.3, 0)['job'])
    assert old.name == 'w1_adam_l2_bn_seed0'
    assert (old.task, old.start) == ('textured', '')


def _start_run(start, seed, mAP, dead4, width=1.0):
    run = _run('BN', seed, mAP, dead4, 'recipe', width)
    run['job'].update(task='big10', start=start)
    return run


START_RUNS = [_start_run('healthy', 0, 0.50, 0),
              _start_run('collapsed', 0, 0.44, 40),
              _start_run('healthy', 1, 0.52, 0),
              _start_run('collapsed', 1, 0.47, 45),
              _start_run('healthy', 0, 0.40, 0, 0.5)]


def test_start_tables_from_records(tmp_path):
    table = study.start_table(START_RUNS).splitlines()
    assert len(table) == 3  # 1x only: 0.5x has no collapsed start
    assert '| big10 1x | recipe | BN | config | healthy − collapsed | 2 | '\
        '+0.060, +0.050 | +0.055 [' in table[2]
    cells = study.cell_table(START_RUNS)
    assert '| big10 1x | SGD+m, lr 0.02, ×0.1 at 75% (mmdet recipe), from '\
        'the healthy checkpoint | BN | config | 2 | 0.510 ± 0.014 |' in cells
    stages = {s: dict(pre_relu_channels=100, dead=40 if s == 'layer4' else 0,
                      frozen=s in ('stem', 'layer1')) for s in STAGES}
    record = dict(machine='test', argv=['--task', 'big10'],
                  wall_seconds=60.0, task='big10', runs=START_RUNS,
                  starts=[dict(task='big10', start='collapsed', width=1.0,
                               stages=stages, seconds=60.0,
                               source_bbox_mAP=0.5)])
    path = tmp_path / 'r.json'
    path.write_text(json.dumps(record))
    out = tmp_path / 'page.md'
    assert study.main(['--from-json', str(path), '--out', str(out)]) == 0
    page = out.read_text()
    assert '| big10 1x | collapsed checkpoint (Adam + coupled L2) | 13.3 | '\
        '0/100, 0/100, 40/100 | 0.500 | 1.0 |' in page
    assert 'healthy − collapsed' in page
    assert 'psBN − BN' not in page  # no norm pairs: no empty table


def test_task_options_are_checked():
    args = study.parse_args(['--task', 'big10'])
    assert args.val_images == study.TASKS['big10'].val_images
    with pytest.raises(study.UserError, match='--val-images'):
        study.parse_args(['--task', 'big10', '--val-images', '301'])
    with pytest.raises(study.UserError, match='--starts'):
        study.parse_args(['--starts', 'healthy'])  # textured has none
    assert study.parse_args([]).val_images == 500


def test_revival_norms_run_the_psbn_config_with_their_rule(monkeypatch,
                                                           tmp_path):
    """Issue 38's norms psBN_shift / psBN_reinit_init / psBN_auto: the psBN
    finetune config with ``norm_cfg.revival`` set, nothing else changed."""
    calls = []
    monkeypatch.setattr(study, 'train_process', lambda config, work_dir,
                        options: calls.append((config, options)) or 1.0)
    base = None
    for norm, rule in study.REVIVALS.items():
        job = study.Job(1.0, 'recipe', norm, 3, task='solid5',
                        start='collapsed')
        study.finetune(job, 'start.pth', 'val.json', tmp_path)
        config, options = calls[-1]
        assert config == study.config('solid5', 'target_finetune',
                                      norm='psBN')
        cfg = _config(Path(config).name, options)
        assert cfg.model.backbone.norm_cfg.revival == rule
        assert cfg.load_from == 'start.pth' and cfg.randomness.seed == 3
        cfg.model.backbone.norm_cfg.pop('revival')
        base = base or cfg.to_dict()
        assert cfg.to_dict() == base
        assert job.name == f'solid5_collapsed_w1_recipe_{norm.lower()}_seed3'


def test_the_study_without_a_cell_family_is_one_line():
    from conftest import run_tool
    for argv in ((), ('transfers', '--quick')):
        result = run_tool('-m', 'research.detection_study', *argv, cwd=REPO)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            'usage: python -m research.detection_study {demo,transfer} '
            'ARGS... (--help after the cell family for its options)']


def test_the_demo_prints_the_committed_cell_where_collapse_costs():
    """tools/run_demo.sh's second summary ($COSTLY) is issue 38's D1,
    recomputed here from the committed D0/D1 records: what collapse costs
    (the healthy start's BN runs, paired by seed), the default against BN
    and ReDo, and a note that the demo does not run it."""
    import re

    from psbn_mmdet.demo.compare import read_evidence
    from research.records import read_records
    script = (REPO / 'tools' / 'run_demo.sh').read_text()
    [path] = re.findall(r'^COSTLY=(\S+)$', script, re.M)
    committed = read_evidence(REPO / path)
    runs = study.unique_runs(read_records([
        REPO / 'docs' / 'transfer_runs' / f'd38_{cell}.json'
        for cell in ('d0', 'd1')]))
    again = study.evidence(runs, 'recipe', committed['source'], 'solid5',
                           'collapsed')
    assert committed == json.loads(json.dumps(again))
    assert committed['seeds'] == 8
    names = [d['name'] for d in committed['differences']]
    assert names[:3] == ['healthy checkpoint, BN − BN',
                         'psBN revival=reinit_init − BN',
                         'psBN revival=reinit_init − ReDo']
    assert 'not run by this demo' in committed['note']
