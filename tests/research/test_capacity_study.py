"""The capacity study's pieces: generated tasks, network widths, the
contribution probe and the summary tables (small and fast; the study's runs
are in docs/capacity_runs/)."""
import pytest
import torch

from psbn_mmdet import PostShiftController
from research.capacity_study import data as tasks
from research.capacity_study import summary
from research.capacity_study.contribution import Contribution
from research.collapse_study import VARIANTS, build_network


@pytest.fixture
def small_tasks(monkeypatch):
    monkeypatch.setattr(tasks, 'TRAIN_SIZE', 64)
    monkeypatch.setattr(tasks, 'TEST_SIZE', 48)
    for loader in tasks.TASKS.values():
        loader.cache_clear()
    yield tasks.TASKS
    for loader in tasks.TASKS.values():
        loader.cache_clear()


@pytest.mark.parametrize('name, classes', [('shapes16', 16),
                                           ('hard_digits', 10)])
def test_tasks_are_deterministic_and_standardized(small_tasks, name,
                                                  classes):
    first = small_tasks[name](16)
    small_tasks[name].cache_clear()
    again = small_tasks[name](16)
    assert first.train_x.shape == (64, 1, 16, 16)
    assert first.test_x.shape == (48, 1, 16, 16)
    assert torch.equal(first.train_x, again.train_x)
    assert torch.equal(first.test_y, again.test_y)
    assert first.num_classes == classes
    assert abs(float(first.train_x.mean())) < 1e-4
    assert abs(float(first.train_x.std()) - 1) < 1e-3
    assert not torch.equal(first.train_x[:48], first.test_x)


def test_width_scales_every_conv_layer():
    model = build_network('basicnet', VARIANTS['bn'], width=0.25,
                          num_classes=16)
    convs = [m.out_channels for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 16, 16, 32, 32, 32]
    assert model[-1].out_features == 16
    resnet = build_network('resnet18', VARIANTS['bn'], width=0.5)
    assert resnet.backbone.base_channels == 8
    assert resnet.head.in_features == 32


def test_contribution_zeroes_revived_channels_and_changes_nothing(
        small_tasks):
    data = small_tasks['shapes16'](16)
    torch.manual_seed(0)
    model = build_network('basicnet', VARIANTS['rho50_w10'], width=0.25,
                          num_classes=16)
    controller = PostShiftController(model)
    first = controller.pre_relu[0]
    channels = controller.bns[first].num_features
    # as if psBN had shifted channels 0-2 of the first layer
    controller.shift_counts[first] = torch.tensor(
        [1, 2, 1] + [0] * (channels - 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = Contribution(model, None, controller, data, draws=3).close()
    controller.close()
    assert result['shifted_ever'] == 3
    assert result['revived_alive'] <= 3
    assert len(result['test_acc_random_zeroed']) == 3
    assert result['median_max_live_never_shifted'] > 0
    assert result['drop_revived'] == pytest.approx(
        result['test_acc'] - result['test_acc_revived_zeroed'])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def _run(regime, variant, width, seed, acc, dead):
    return dict(job=dict(dataset='t', network='n', regime=regime,
                         variant=variant, width=width, epochs=1, seed=seed),
                test_acc=acc, dead_pct=dead, seconds=1.0,
                loss_curve=[[1, 0.5]])


def test_effective_width_interpolates_the_control_in_log_width():
    runs = [_run('sgd', 'bn', 0.5, 0, 40.0, 0.0),
            _run('sgd', 'bn', 1.0, 0, 50.0, 0.0),
            _run('adam_l2', 'bn', 1.0, 0, 42.0, 29.289)]
    table = summary.effective_width_table(runs, control='sgd')
    # (1 - 0.29289) x 1 = 2^-0.5: halfway between widths 0.5 and 1 in log2
    assert '| 0.71 | 45.0 |' in table
    assert '| 42.0 ± 0.0 | 29.3 | 50.0 |' in table


def test_paired_differences_pair_seeds():
    runs = [_run('adam_l2', 'bn', 1.0, s, 40.0 + s, 30.0) for s in range(3)]
    runs += [_run('adam_l2', 'rho50_w10', 1.0, s, 41.0 + s, 1.0)
             for s in range(3)]
    table = summary.paired_table(runs)
    assert '| rho50_w10 − bn | 3 | +1.00 [+1.00, +1.00] | ' \
        '-29.00 [-29.00, -29.00] |' in table


def test_a_rerun_of_the_same_job_counts_once():
    runs = [_run('sgd', 'bn', 1.0, 0, 50.0, 0.0)] * 2
    runs.append(_run('sgd', 'bn', 1.0, 1, 52.0, 0.0))
    assert '| 2 | 51.0 ± 1.4 |' in summary.cell_table(runs)


def test_a_finetune_starts_from_the_pretrained_bn_network(small_tasks):
    from research.collapse_study import training
    training.pretrained.cache_clear()
    spec = 'shapes16:sgd:1'
    state, acc = training.pretrained('basicnet', 0.25, 0, spec, 16)
    assert 0 <= acc <= 100
    again = training.pretrained('basicnet', 0.25, 0, spec, 16)
    assert again[0] is state  # cached: every variant of a seed shares it
    torch.manual_seed(0)
    model = build_network('basicnet', VARIANTS['rho50_w10'], width=0.25)
    fresh_head = model[-1].weight.clone()
    training._load_pretrained(model, state)
    for key, value in model.state_dict().items():
        if key.startswith(f'{len(model) - 1}.'):  # the new 10-class layer
            continue
        assert torch.equal(value, state[key]), key
    assert torch.equal(model[-1].weight, fresh_head)
    job = training.Job('basicnet', 'adam_l2', 'rho50_w10', 0, epochs=1,
                       batch_size=16, dataset='hard_digits', width=0.25,
                       pretrain=spec)
    result = training.run(job)
    assert result['pretrain_test_acc'] == acc
    assert result['job']['pretrain'] == spec
    training.pretrained.cache_clear()


def test_final_tables_pair_the_four_methods_per_cell():
    from research.capacity_study import final
    runs = []
    for seed in range(3):
        for variant, acc in (('bn', 80.0), ('ps_keep', 81.0),
                             ('ps_rescale_gamma', 80.5), ('redo_20', 79.0)):
            run = _run('adam_l2', variant, 0.25, seed, acc + seed,
                       30.0 if variant == 'bn' else 0.0)
            run.update(shifts=10, intervention_loss_pct=(
                None if variant == 'bn' else 0.01))
            runs.append(run)
    methods, paired = final.tables(runs)
    assert '| adam_l2, w0.25 | psBN | 3 | 82.00 ± 1.00 | 0.0 |' in methods
    assert '| adam_l2, w0.25 | psBN − BN | 3 | +1.00 [+1.00, +1.00] | ' \
        '-30.00 [-30.00, -30.00] |' in paired
    assert '| rule (b) − ReDo | 3 | +1.50 [+1.50, +1.50] |' in paired


def test_final_writes_its_tables_into_a_page(tmp_path):
    import json

    from research.capacity_study import final
    runs = []
    for seed in range(2):
        for variant in ('bn', 'ps_keep'):
            run = _run('sgd', variant, 0.25, seed, 85.0 + seed, 0.0)
            run.update(shifts=0, intervention_loss_pct=None)
            runs.append(run)
    records = tmp_path / 'r.json'
    records.write_text(json.dumps(dict(runs=runs)))
    page = tmp_path / 'page.md'
    page.write_text('# by hand\n\nkept\n')
    assert final.main([str(records), '--out', str(page)]) == 0
    text = page.read_text()
    assert text.startswith('# by hand\n\nkept\n')
    assert '<!-- capacity_final:begin -->' in text
    assert '| sgd, w0.25 | psBN − BN | 2 | +0.00 [+0.00, +0.00] |' in text
