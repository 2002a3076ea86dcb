"""The 'reinit' revival rules: exact until a revival, function kept at one,
identical draws, the ResNet's pre-add BNs and stem left to their rules."""
import copy

import pytest
import torch
from torch import nn

from psbn_mmdet import PostShiftController, psBN
from psbn_mmdet.core import (DEFAULT_REVIVAL, REVIVALS, draw_seed, plan,
                             reinit_, units_of)

DEAD = 2  # the crafted dead channel of the first psBN


def _seqnet(norm=psBN, **options):
    """conv-BN-ReLU x2, global pool, linear: every BN has a unit."""
    torch.manual_seed(0)
    kwargs = options if norm is psBN else {}
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), norm(6, **kwargs), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=False), norm(6, **kwargs),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g),
             torch.randint(0, 4, (8, ), generator=g)) for _ in range(n)]


def _kill(model):
    with torch.no_grad():
        model[1].bias[DEAD] = -50.0
    return model


def _train_backbone(net, optimizer, controller, steps):
    """``steps`` training steps of a backbone on random images; the
    controller's last result."""
    net.train()
    for _ in range(steps):
        loss = sum(o.mean() for o in net(torch.randn(2, 3, 32, 32)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result = controller.step()
    return result


def _step(model, optimizer, x, y, controller=None):
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return controller.step() if controller is not None else loss


@pytest.mark.parametrize('revival', ['reinit', 'reinit_init'])
def test_training_is_bit_identical_to_bn_until_the_first_revival(revival):
    """The same net with BN and with psBN (revival rule, controller
    running): identical parameters after every step before the window's
    end, where the dead channel is revived."""
    bn_net = _kill(_seqnet(nn.BatchNorm2d))
    ps_net = _kill(_seqnet(window=4, revival=revival))
    ps_net.load_state_dict(bn_net.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
            for m in (bn_net, ps_net)]
    controller = PostShiftController(ps_net, opts[1])
    for i, (x, y) in enumerate(_batches(4)):
        _step(bn_net, opts[0], x, y)
        result = _step(ps_net, opts[1], x, y, controller)
        if i < 3:
            assert result is None
            for a, b in zip(bn_net.state_dict().values(),
                            ps_net.state_dict().values()):
                assert torch.equal(a, b)
    assert sum(result.reinitialized.values()) == 1
    assert not torch.equal(bn_net[0].weight[DEAD], ps_net[0].weight[DEAD])


@pytest.mark.parametrize('both', [False, True])
@pytest.mark.parametrize('revival', ['reinit', 'reinit_init'])
def test_revival_keeps_the_networks_output_on_the_windows_batches(revival,
                                                                  both):
    """The revived channel was dead on the window's batches and its readers'
    weights on it are zeroed: on those batches the output is unchanged to
    rounding; the revived channel fires on about half its elements.  Also
    when the next layer revives a channel in the same window (its fresh
    filter reads the first revived channel; its own output is muted)."""
    model = _kill(_seqnet(window=3, revival=revival)).train()
    if both:
        with torch.no_grad():
            model[4].bias[DEAD + 1] = -50.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    batches = _batches(3)
    before = [model(x).detach() for x, _ in batches]
    for x, y in batches:
        result = _step(model, optimizer, x, y, controller)
    assert result is not None and DEAD in result.shifted_channels['1'].nonzero()
    kept = ~result.shifted_channels.get('4', torch.zeros(6, dtype=bool))
    assert kept.sum() == 6 - both
    assert torch.all(model[3].weight[kept, DEAD] == 0)
    after = [model(x).detach() for x, _ in batches]
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    pre = model[1](model[0](batches[0][0]))[:, DEAD]
    assert 0.3 < (pre > 0).float().mean().item() < 0.7


def test_revived_unit_gets_the_scale_its_rule_names():
    """'reinit': filter norm and |γ| at the live channels' medians;
    'reinit_init': BN's initialization (γ 1, filter norm √2); β at the
    threshold of ρ = 0.5 (0); the conv bias 0."""
    for revival in ('reinit', 'reinit_init'):
        model = _kill(_seqnet(window=2, revival=revival))
        with torch.no_grad():
            model[1].weight.mul_(0.3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        controller = PostShiftController(model, optimizer)
        live = torch.ones(6, dtype=torch.bool)
        live[DEAD] = False
        gamma = model[1].weight[live].abs().median().item()
        norm = model[0].weight.flatten(1).norm(dim=1)[live].median().item()
        for x, y in _batches(2):
            _step(model, optimizer, x, y, controller)
        got_norm = model[0].weight[DEAD].norm().item()
        want = (gamma, norm) if revival == 'reinit' else (1.0, 2.0**0.5)
        assert model[1].weight[DEAD].item() == pytest.approx(want[0])
        assert got_norm == pytest.approx(want[1], rel=1e-5)
        assert model[1].bias[DEAD].item() == 0
        assert model[0].bias[DEAD].item() == 0


def test_optimizer_state_of_every_touched_slice_is_zeroed():
    model = _kill(_seqnet(window=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    controller = PostShiftController(model, optimizer)
    for x, y in _batches(2):
        _step(model, optimizer, x, y, controller)
    state = optimizer.state
    for param, dim in [(model[0].weight, 0), (model[0].bias, 0),
                       (model[1].weight, 0), (model[1].bias, 0),
                       (model[3].weight, 1)]:
        buf = state[param]['momentum_buffer']
        assert torch.all(buf.select(dim, DEAD) == 0)
        others = [c for c in range(6) if c != DEAD]
        assert buf.index_select(dim, torch.tensor(others)).abs().sum() > 0


def test_recalibration_sets_running_statistics_from_the_next_batch():
    """Frozen statistics (eval-mode BN, trainable γ, as norm_eval=True):
    the revived channel's running mean and variance become the next
    training batch's, so its x̂ has mean 0 and variance 1 there."""
    model = _kill(_seqnet(window=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    for x, y in _batches(2):
        _step(model, optimizer, x, y, controller)
    bn = model[1]
    assert bn.pending_recalibration is not None
    x = _batches(1, seed=5)[0][0]
    conv_out = model[0](x).detach()
    model.train()
    bn.eval()  # norm_eval: statistics frozen, γ and β still trained
    model(x)
    assert bn.pending_recalibration is None
    xc = conv_out[:, DEAD].double()
    assert bn.running_mean[DEAD].item() == pytest.approx(xc.mean().item(),
                                                         rel=1e-5)
    assert bn.running_var[DEAD].item() == pytest.approx(xc.var().item(),
                                                        rel=1e-5)


def test_draws_depend_on_seed_step_and_layer_alone():
    assert draw_seed(0, 10, 1) == draw_seed(0, 10, 1)
    assert len({draw_seed(s, t, i) for s in (0, 1) for t in (10, 20)
                for i in (0, 1)}) == 8
    filters = []
    for seed in (0, 0, 1):
        model = _kill(_seqnet(window=2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        controller = PostShiftController(model, optimizer, seed=seed)
        for x, y in _batches(2):
            _step(model, optimizer, x, y, controller)
        filters.append(model[0].weight[DEAD].clone())
    assert torch.equal(filters[0], filters[1])
    assert not torch.equal(filters[0], filters[2])


def test_resume_restores_a_pending_recalibration():
    model = _kill(_seqnet(window=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    for x, y in _batches(2):
        _step(model, optimizer, x, y, controller)
    state = copy.deepcopy(controller.state_dict())
    assert state['recalibrations'] == {
        '1': [c == DEAD for c in range(6)]}
    fresh = copy.deepcopy(model)
    fresh[1].pending_recalibration = None
    resumed = PostShiftController(fresh, optimizer)
    resumed.load_state_dict(state)
    assert torch.equal(fresh[1].pending_recalibration,
                       model[1].pending_recalibration)


def test_units_of_a_resnet_are_its_inner_bns_and_the_stem_shifts():
    """mmdet's ResNet (the function kept at a revival is tested on the
    Sequential net above): units are each block's bn1 and bn2 (read by conv2 and
    conv3); bn3 and downsample (pre-add) and the stem have none.  A dead
    stem channel is shifted, never re-initialized; bn3 is never touched."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    net = ResNet(depth=50, num_stages=2, out_indices=(1, ), strides=(1, 2),
                 dilations=(1, 1), norm_cfg=dict(type='psBN', window=2),
                 frozen_stages=-1)
    units = units_of(net)
    assert set(units) == {f'layer{s}.{b}.bn{i}' for s, n in ((1, 3), (2, 4))
                          for b in range(n) for i in (1, 2)}
    assert units['layer1.0.bn2'].outgoing == (net.layer1[0].conv3, )
    with torch.no_grad():
        net.bn1.bias[0] = -50.0
        net.layer1[0].bn1.bias[0] = -50.0
        net.layer1[0].bn3.bias[0] = -50.0
    bn3 = copy.deepcopy(net.layer1[0].bn3.state_dict())
    stem_filter = net.conv1.weight[0].clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    controller = PostShiftController(net, optimizer)
    assert controller.revival_of('bn1') == 'shift'
    assert controller.revival_of('layer1.0.bn1') == DEFAULT_REVIVAL
    result = _train_backbone(net, optimizer, controller, steps=2)
    assert result.shifted_channels['bn1'][0]
    assert torch.equal(net.conv1.weight[0], stem_filter)  # shifted only
    assert net.bn1.bias[0].item() > -50.0
    assert result.shifted_channels['layer1.0.bn1'][0]
    # conv2's rows of revived bn2 channels are fresh filters (their own
    # output is muted by conv3); every other row reads nothing from it
    kept = ~result.shifted_channels.get(
        'layer1.0.bn2', torch.zeros(64, dtype=torch.bool))
    assert torch.all(net.layer1[0].conv2.weight[kept, 0] == 0)
    for key, value in net.layer1[0].bn3.state_dict().items():
        if key != 'num_batches_tracked':
            assert torch.equal(value, bn3[key]), key


def test_frozen_conv_falls_back_to_the_shift():
    model = _kill(_seqnet(window=2))
    model[0].weight.requires_grad_(False)
    controller = PostShiftController(model, torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.0))
    assert controller.revival_of('1') == 'shift'
    assert controller.revival_of('4') == DEFAULT_REVIVAL


@pytest.mark.parametrize('make', [
    lambda: psBN(4, revival='redo'),
    lambda: PostShiftController(_seqnet(), revival='redo'),
])
def test_unknown_rule_is_one_line_naming_the_rules(make):
    with pytest.raises(ValueError) as error:
        make()
    message = str(error.value)
    assert '\n' not in message and 'revival' in message
    assert all(rule in message for rule in REVIVALS)


def test_reinit_returns_each_touched_slice():
    model = _seqnet()
    revive = torch.zeros(6, dtype=torch.bool)
    revive[1] = True
    touched = reinit_(model[1], units_of(model)['1'], revive, ~revive,
                      torch.Generator().manual_seed(0))
    assert [(t.shape, d) for t, _, d in touched] == [
        (model[0].weight.shape, 0), (model[0].bias.shape, 0),
        (torch.Size([6]), 0), (torch.Size([6]), 0),
        (model[3].weight.shape, 1)]


# ------------------------------------------------------ 'auto' (issue 38)
def test_plan_names_each_rules_channels():
    dead = torch.tensor([True, True, False, False])
    unfit = torch.tensor([False, True, False, True])
    none = torch.zeros(4, dtype=torch.bool)
    assert [m.tolist() for m in plan('shift', dead, unfit, True)] == [
        none.tolist(), dead.tolist()]
    for rule in ('reinit', 'reinit_init'):
        for first in (True, False):
            reinit, shift = plan(rule, dead, unfit, first)
            assert reinit.tolist() == (dead | unfit).tolist()
            assert not shift.any()
    reinit, shift = plan('auto', dead, unfit, True)
    assert reinit.tolist() == (dead | unfit).tolist() and not shift.any()
    reinit, shift = plan('auto', dead, unfit, False)
    assert reinit.tolist() == unfit.tolist()
    assert shift.tolist() == [True, False, False, False]


def test_auto_renews_what_arrives_dead_and_shifts_what_dies_later():
    """Channel DEAD of the first psBN is dead from the first batch: at the
    first window end it becomes a fresh unit (init scale, γ 1).  Channel
    DEAD + 1 dies after the first window: at the next window end it is
    shifted, its learned filter kept, its readers' weights untouched."""
    model = _kill(_seqnet(window=2, revival='auto'))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    batches = _batches(4)
    for x, y in batches[:2]:
        first = _step(model, optimizer, x, y, controller)
    assert first.shifted_channels['1'].nonzero().flatten().tolist() == [DEAD]
    assert sum(first.reinitialized.values()) == 1
    assert model[0].weight[DEAD].norm().item() == pytest.approx(2.0**0.5,
                                                                rel=1e-5)
    assert model[1].weight[DEAD].item() == 1.0
    later = DEAD + 1
    with torch.no_grad():
        model[1].bias[later] = -50.0
    learned = model[0].weight[later].clone()
    reader = model[3].weight[:, later].clone()
    for x, y in batches[2:]:
        second = _step(model, optimizer, x, y, controller)
    assert second.shifted_channels['1'].nonzero().flatten().tolist() == [
        later]
    assert sum(second.reinitialized.values()) == 0
    assert torch.equal(model[0].weight[later], learned)
    assert torch.equal(model[3].weight[:, later], reader)
    assert model[1].bias[later].item() > -50.0


def test_auto_renews_a_later_channel_a_shift_cannot_place():
    """After the first window, a silent channel with an all-zero filter
    (constant input) gets a fresh filter under 'auto'."""
    model = _seqnet(window=2, revival='auto')
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    batches = _batches(4)
    for x, y in batches[:2]:
        result = _step(model, optimizer, x, y, controller)
    assert not result.shifted_channels
    with torch.no_grad():
        model[0].weight[DEAD] = 0
        model[0].bias[DEAD] = 0
        model[1].bias[DEAD] = -1.0  # constant x̂ = 0: y = β < 0
    for x, y in batches[2:]:
        result = _step(model, optimizer, x, y, controller)
    assert sum(result.reinitialized.values()) == 1
    assert model[0].weight[DEAD].norm().item() == pytest.approx(2.0**0.5,
                                                                rel=1e-5)


def test_revival_under_adam_sets_the_typical_second_moment():
    """A revival late in an Adam run: the touched entries' exp_avg_sq is
    the median of the tensor's untouched entries, exp_avg 0."""
    model = _seqnet(window=3, revival='reinit_init')
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    controller = PostShiftController(model, optimizer)
    batches = _batches(6)
    for x, y in batches[:3]:
        _step(model, optimizer, x, y, controller)
    _kill(model)
    for x, y in batches[3:]:
        result = _step(model, optimizer, x, y, controller)
    assert result.shifted_channels['1'][DEAD]
    state = optimizer.state[model[0].weight]
    others = [c for c in range(6) if c != DEAD]
    assert torch.all(state['exp_avg'][DEAD] == 0)
    assert torch.all(state['exp_avg_sq'][DEAD]
                     == state['exp_avg_sq'][others].median())
    column = optimizer.state[model[3].weight]['exp_avg_sq']
    assert torch.all(column[:, DEAD] == column[:, others].median())


def test_resnest_blocks_are_monitored_and_fall_back_where_unknown():
    """mmdet's ResNeSt deletes its Bottleneck's bn2 (issue 39, item 1):
    units are the bn1s whose reader is a plain conv (none: conv2 is a
    split-attention conv, so bn1 falls back to the shift); bn3 is pre-add;
    a window of training revives without an error."""
    from mmdet.models.backbones import ResNeSt
    torch.manual_seed(0)
    net = ResNeSt(depth=50, stem_channels=16, base_channels=8, num_stages=2,
                  out_indices=(1, ), strides=(1, 2), dilations=(1, 1),
                  norm_cfg=dict(type='psBN', window=2), frozen_stages=-1)
    assert not any('bn2' in name for name in units_of(net))
    with torch.no_grad():
        net.layer1[0].bn1.bias[0] = -50.0
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    controller = PostShiftController(net, optimizer)
    assert controller.roles['layer1.0.bn1'].role == 'pre-relu'
    assert controller.roles['layer1.0.bn3'].role == 'pre-add'
    assert controller.revival_of('layer1.0.bn1') == 'shift'
    result = _train_backbone(net, optimizer, controller, steps=2)
    assert result.shifted_channels['layer1.0.bn1'][0]
