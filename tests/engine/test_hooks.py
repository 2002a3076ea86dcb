"""PostShiftHook / CollapseMonitorHook inside mmengine's Runner."""
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import psbn_mmdet  # noqa: F401
from psbn_mmdet.engine.hooks import find_controller


class RandomImages(Dataset):

    def __len__(self):
        return 64

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 64, 64, generator=g))


@MODELS.register_module(force=True)
class CraftedResNet18(BaseModel):
    """mmdet's ResNet-18 with known dead and collapsed channels."""

    def __init__(self, norm_type='psBN', window=2):
        super().__init__()
        from mmdet.models.backbones import ResNet
        norm_cfg = dict(type=norm_type, requires_grad=True)
        if norm_type == 'psBN':
            norm_cfg['window'] = window
        # zero_init_residual would zero every pre-add γ: keep them crafted
        self.backbone = ResNet(depth=18, norm_cfg=norm_cfg, norm_eval=False,
                               frozen_stages=-1, zero_init_residual=False)

    def init_weights(self):
        super().init_weights()  # the Runner calls it: craft afterwards
        with torch.no_grad():
            # batch statistics: x̂ ~ N(0, 1), so y = x̂ - 1e3 < 0 everywhere
            self.backbone.bn1.bias[:2] = -1e3  # stem: 2 dead
            self.backbone.layer2[0].bn1.bias[:3] = -1e3  # layer2: 3 dead
            self.backbone.layer3[0].bn2.weight[:4] = 0.0  # pre-add: γ = 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        feats = self.backbone(torch.stack(inputs) if isinstance(
            inputs, list) else inputs)
        return dict(loss=sum(f.mean() for f in feats) * 0.0)


def _runner(tmp_path, norm_type, hook, accumulative_counts=1, model=None,
            optimizer=None):
    # seeded: the random init decides whether each revived channel also fires
    # on the next window's batches, and with it the exact counts
    return Runner(
        model=model or dict(type='CraftedResNet18', norm_type=norm_type),
        work_dir=str(tmp_path),
        # mmengine's visualizer is a process-wide instance per experiment
        # name: a name per test keeps each test's scalars in its own work_dir
        experiment_name=tmp_path.name,
        randomness=dict(seed=0),
        train_dataloader=dict(
            dataset=RandomImages(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=optimizer or dict(type='SGD', lr=0.0),
                           accumulative_counts=accumulative_counts),
        train_cfg=dict(by_epoch=False, max_iters=4),
        custom_hooks=hook if isinstance(hook, list) else [hook],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook',
                                           interval=4, by_epoch=False)),
        default_scope='mmdet')


def _scalars(runner, kind):
    hub = runner.message_hub
    return {stage: hub.get_scalar(f'train/psbn/{kind}_{stage}').current()
            for stage in ('stem', 'layer1', 'layer2', 'layer3', 'layer4')}


def _shifted(controller):
    return {name: counts.nonzero().flatten().tolist()
            for name, counts in controller.shift_counts.items()
            if counts.any()}


def test_hook_logs_per_stage_counts_and_shifts(tmp_path):
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook', interval=1))
    runner.train()
    controller = find_controller(runner)
    # window 2, 4 iterations: the crafted dead channels, and only they, are
    # shifted at iteration 2
    assert _shifted(controller) == {'backbone.bn1': [0, 1],
                                    'backbone.layer2.0.bn1': [0, 1, 2]}
    # at iteration 2: the stem's recoveries logged before training, then at
    # iterations 1-4
    assert runner.message_hub.get_scalar(
        'train/psbn/recovered_stem').data[0].tolist() == [0, 0, 2, 2, 2]
    # the logged scalars are the controller's per-stage counts
    assert _scalars(runner, 'recovered') == controller.recovered_by_stage()
    assert _scalars(runner, 'dead') == controller.dead_by_stage()
    # the shift revives them: a shift fitted to 1% of one batch's elements
    # can miss the next batches' (with this seed, one of the five does and
    # is shifted again at iteration 4)
    dead = _scalars(runner, 'dead')
    assert dead['stem'] + dead['layer2'] <= 1
    assert dead['layer1'] == dead['layer3'] == dead['layer4'] == 0
    assert _scalars(runner, 'collapsed_gamma')['layer3'] == 4
    model = runner.model
    assert (model.backbone.bn1.bias[:2] > -10).all()
    assert (model.backbone.layer3[0].bn2.weight[:4] == 0).all()  # pre-add


def test_monitor_hook_logs_the_same_scalars_for_bn(tmp_path):
    runner = _runner(tmp_path, 'BN',
                     dict(type='CollapseMonitorHook', interval=1, window=2))
    runner.train()
    assert _scalars(runner, 'dead') == dict(stem=2, layer1=0, layer2=3,
                                           layer3=0, layer4=0)
    assert sum(_scalars(runner, 'recovered').values()) == 0
    assert _scalars(runner, 'collapsed_gamma')['layer3'] == 4
    assert (runner.model.backbone.bn1.bias[:2] == -1e3).all()


def test_hook_counters_survive_checkpoint_and_resume(tmp_path):
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook', interval=1))
    runner.train()
    before = {k: v.clone() for k, v in find_controller(runner).shift_counts.items()}
    checkpoint = torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    assert checkpoint['psbn']['steps'] == 4
    resumed = _runner(tmp_path, 'psBN', dict(type='PostShiftHook',
                                             interval=1))
    resumed.train_cfg = None
    resumed._train_loop = dict(type='IterBasedTrainLoop', max_iters=6)
    resumed._resume = True
    resumed._load_from = str(tmp_path / 'iter_4.pth')
    resumed.train()
    controller = find_controller(resumed)
    assert controller.steps == 6
    # the shifts of iterations 1-4 are still counted (a fresh controller
    # would only know the shifts of iterations 5-6)
    for name, counts in before.items():
        assert (controller.shift_counts[name] >= counts).all(), name
    assert _shifted(controller)['backbone.layer2.0.bn1'][:3] == [0, 1, 2]
    assert _scalars(resumed, 'recovered') == controller.recovered_by_stage()


def test_safe_loading_reads_mmengine_message_hub_state(tmp_path):
    """torch.load(weights_only=True) on what mmengine checkpoints pickle."""
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('psbn-test-safe-load')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_scalar('train/psbn/dead_layer2', 3)
    hub.update_info('iter', 7)
    state = dict(message_hub=hub.state_dict(),
                 empty=__import__('mmengine').logging.HistoryBuffer())
    torch.save(state, tmp_path / 'hub.pth')
    loaded = torch.load(tmp_path / 'hub.pth', weights_only=True)
    scalars = loaded['message_hub']['log_scalars']
    assert scalars['train/psbn/dead_layer2'].current() == 3
    assert scalars['train/loss'].current() == 0.5


def test_hook_windows_count_optimizer_steps_under_gradient_accumulation(
        tmp_path):
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook', interval=1),
                     accumulative_counts=2)
    runner.train()
    controller = find_controller(runner)
    assert runner.iter == 4
    assert controller.steps == 2  # 4 iterations, 2 optimizer steps
    # window 2 steps = 4 iterations: the crafted channels shift once
    assert controller.recovered_by_stage()['stem'] == 2


def test_bad_hook_option_fails_when_the_runner_is_built(tmp_path):
    with pytest.raises(ValueError, match="PostShiftHook: optimizer_reset "
                       "must be one of"):
        _runner(tmp_path, 'psBN', dict(type='PostShiftHook',
                                       optimizer_reset='bogus'))
    with pytest.raises(ValueError, match='window must be an integer >= 1'):
        _runner(tmp_path, 'psBN', dict(type='PostShiftHook', window=0))
    with pytest.raises(ValueError, match="PostShiftHook: revival must be "
                       "one of .*'shift'.*'reinit'"):
        _runner(tmp_path, 'psBN', dict(type='PostShiftHook', revival='redo'))


@pytest.mark.parametrize('option, message', [
    (dict(seed='abc'), "seed must be an integer or None, got 'abc'"),
    (dict(seed=1.7), 'seed must be an integer or None, got 1.7'),
    (dict(seed=True), 'seed must be an integer or None, got True'),
    (dict(shift='no'), "shift must be True or False, got 'no'"),
])
def test_every_hook_option_is_validated_when_the_runner_is_built(
        tmp_path, option, message):
    """Issue 39, item 7: before, seed='abc' crashed at train start, 1.7
    was truncated and shift='no' was taken as True."""
    with pytest.raises(ValueError, match=f'PostShiftHook: {message}'):
        _runner(tmp_path, 'psBN', dict(type='PostShiftHook', **option))


@pytest.mark.parametrize('order', ['monitor first', 'monitor last'])
def test_monitor_and_post_shift_hook_in_one_run(tmp_path, order):
    """Issue 39, item 3: a psBN config that appends PostShiftHook to a BN
    base's CollapseMonitorHook revives as PostShiftHook alone does (before,
    the monitor reset the windows first and nothing was revived, or
    overwrote the scalars with zeros); the monitor says it stands down."""
    hooks = [dict(type='CollapseMonitorHook', interval=1, window=2),
             dict(type='PostShiftHook', interval=1)]
    runner = _runner(tmp_path, 'psBN',
                     hooks if order == 'monitor first' else hooks[::-1])
    said = _said(runner)
    assert sum('the monitor stands down' in m for m in said) == 1
    controller = find_controller(runner)
    assert controller.shift is True
    assert _shifted(controller) == {'backbone.bn1': [0, 1],
                                    'backbone.layer2.0.bn1': [0, 1, 2]}
    assert _scalars(runner, 'recovered') == controller.recovered_by_stage()
    assert _scalars(runner, 'recovered')['layer2'] == 3


@pytest.fixture(scope='module')
def window_end_run(tmp_path_factory):
    """Window 4, 4 iterations: the crafted layer2.0.bn1 channels are
    re-initialized at iteration 4, when the checkpoint is saved."""
    tmp_path = tmp_path_factory.mktemp('window_end')
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook', interval=1),
                     model=dict(type='CraftedResNet18', window=4))
    runner.train()
    return runner, tmp_path


def test_a_window_end_checkpoint_holds_the_revived_channels_statistics(
        window_end_run):
    """Issue 39, item 5: window 4, 4 iterations: the crafted layer2.0.bn1
    channels are re-initialized at iteration 4, when the checkpoint is
    saved, before any batch recalibrates them.  The saved running mean and
    variance of those channels are the last batch's (what a recalibration
    on it gives), not the stale ones the live layer still holds until its
    next training batch; every other entry is the live model's; resuming
    still recalibrates on the next batch (the pending channels are in the
    checkpoint's psbn entry)."""
    runner, tmp_path = window_end_run
    bn = runner.model.backbone.layer2[0].bn1
    assert bn.pending_recalibration[:3].all()
    assert not bn.pending_recalibration[3:].any()
    saved = torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    assert saved['psbn']['recalibrations']['backbone.layer2.0.bn1'][:3] == [
        True] * 3
    weights = saved['state_dict']
    # what the layer's input was on the last batch (images 12-15), eval mode
    seen = []
    handle = bn.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    runner.model.eval()
    with torch.no_grad():
        runner.model.backbone(torch.stack(
            [RandomImages()[i]['inputs'] for i in range(12, 16)]))
    handle.remove()
    x = seen[0].transpose(0, 1).flatten(1)[:3].double()
    key = 'backbone.layer2.0.bn1.'
    torch.testing.assert_close(weights[key + 'running_mean'][:3],
                               x.mean(1).float())
    torch.testing.assert_close(weights[key + 'running_var'][:3],
                               x.var(1).float())
    assert not torch.allclose(bn.running_var[:3], x.var(1).float(),
                              rtol=0.05)  # the live, stale statistics
    for name, value in runner.model.state_dict().items():
        if name not in (key + 'running_mean', key + 'running_var'):
            assert torch.equal(weights[name], value), name
        else:
            assert torch.equal(weights[name][3:], value[3:]), name


def test_bn_twin_resumes_a_psbn_checkpoint_with_pending_recalibrations(
        window_end_run, tmp_path):
    """Issue 39, item 6: the BN config with CollapseMonitorHook resumes the
    psBN run's window-end checkpoint (before: 'BatchNorm2d' object has no
    attribute 'recalibrate_'); the log says what it cannot recalibrate."""
    _, trained = window_end_run
    resumed = _runner(tmp_path, 'BN', dict(type='CollapseMonitorHook',
                                           interval=1, window=2))
    resumed.train_cfg = None
    resumed._train_loop = dict(type='IterBasedTrainLoop', max_iters=6)
    resumed._resume = True
    resumed._load_from = str(trained / 'iter_4.pth')
    said = _said(resumed)
    assert resumed.iter == 6
    notes = [m for m in said if 'revived channel(s) of plain BN layers' in m]
    assert len(notes) == 1 and '3 revived channel(s)' in notes[0]


def _said(runner):
    import logging
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    return said


@pytest.mark.parametrize('hook', ['PostShiftHook', 'CollapseMonitorHook'])
def test_train_start_logs_the_loaded_weights_dead_channels(tmp_path, hook):
    """Iteration 0: the crafted dead channels per stage, in the text log
    and at step 0 of the visualizer's psbn/dead_<stage> scalars."""
    import json
    runner = _runner(tmp_path, 'psBN' if hook == 'PostShiftHook' else 'BN',
                     dict(type=hook, interval=1, window=2))
    said = _said(runner)
    lines = [m for m in said if 'at train start' in m]
    assert len(lines) == 1
    assert ('have 5 of 1984 pre-ReLU channels dead on the first batch '
            '(stem 2/64, layer1 0/128, layer2 3/256, layer3 0/512') in lines[0]
    scalars = [json.loads(line) for line in open(
        f'{runner.log_dir}/vis_data/scalars.json')]
    first = next(r for r in scalars if 'psbn/dead_stem' in r)
    assert first['step'] == 0
    assert (first['psbn/dead_stem'], first['psbn/dead_layer2']) == (2, 3)


@pytest.mark.parametrize('optimizer,warned', [
    (dict(type='Adam', lr=0.0, weight_decay=1e-4), 'Adam with weight_decay'),
    (dict(type='AdamW', lr=0.0, weight_decay=1e-2), None),
    (dict(type='SGD', lr=0.0, weight_decay=1e-4), None),
])
def test_collapse_regime_warned_once_at_train_start(tmp_path, optimizer,
                                                     warned):
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook'),
                     optimizer=optimizer)
    lines = [m for m in _said(runner) if 'known collapse regime' in m]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert warned in lines[0] and '\n' not in lines[0]


@pytest.mark.parametrize('revival', [None, 'shift'])
def test_hook_revival_option_picks_the_rule(tmp_path, revival):
    """Default (the layers' 'reinit'): layer2.0.bn1's dead channels get
    fresh conv1 filters and conv2 stops reading them; 'shift' keeps both
    and shifts β.  The stem (no unit) is shifted by either."""
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook',
                                            revival=revival))
    block = runner.model.backbone.layer2[0]
    runner.train()
    controller = find_controller(runner)
    assert _shifted(controller)['backbone.layer2.0.bn1'][:3] == [0, 1, 2]
    zeroed = bool((block.conv2.weight[:, :3] == 0).all())
    assert zeroed == (revival is None)
    assert (runner.model.backbone.bn1.bias[:2] > -10).all()


@MODELS.register_module(force=True)
class ConvOnly(BaseModel):
    """A model without BN."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, inputs, data_samples=None, mode='loss'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        return dict(loss=torch.relu(self.conv(x)).mean())


def test_monitor_hook_on_a_model_without_bn_says_so_once(tmp_path):
    runner = _runner(tmp_path, 'BN', dict(type='CollapseMonitorHook',
                                          interval=1),
                     model=dict(type='ConvOnly'))
    said = _said(runner)
    assert sum('the model has no pre-ReLU BN layer' in m for m in said) == 1


def test_train_start_names_the_layers_that_fall_back_to_the_shift(tmp_path):
    """Issue 39, item 9: one line says, per stage, how many psBN layers
    re-initialize (ResNet-18: each block's bn1) and that the others (the
    stem) fall back to the shift."""
    runner = _runner(tmp_path, 'psBN', dict(type='PostShiftHook'))
    lines = [m for m in _said(runner) if 'fall back to the shift' in m]
    assert len(lines) == 1
    assert ('re-initialized in 8 of 9 psBN layers (stem 0/1, layer1 2/2, '
            'layer2 2/2, layer3 2/2, layer4 2/2)') in lines[0]


def test_weight_standardized_readers_fall_back_to_the_shift():
    """Issue 39, item 9: a ConvWS conv re-standardizes a zeroed column
    into a non-zero one, so it cannot mute a revived channel: no unit."""
    from mmdet.models.backbones import ResNet

    from psbn_mmdet.core import units_of
    plain, ws = (ResNet(depth=18, conv_cfg=conv_cfg,
                        norm_cfg=dict(type='psBN'))
                 for conv_cfg in (None, dict(type='ConvWS')))
    assert len(units_of(plain)) == 8
    assert units_of(ws) == {}
