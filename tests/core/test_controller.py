"""PostShiftController in a plain PyTorch loop: detect, shift, reset, stay exact."""
import copy

import pytest
import torch
from torch import nn

from psbn_mmdet import PostShiftController
from psbn_mmdet import psBN

DEAD = 3  # the crafted dead channel of bn1


class ConvNet(nn.Module):
    """conv-BN-ReLU x2, pooling, linear head (roles found by an FX trace)."""

    def __init__(self, norm=psBN, **norm_kwargs):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = norm(8, **norm_kwargs)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = norm(8, **norm_kwargs)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g),
             torch.randint(0, 4, (8, ), generator=g)) for _ in range(n)]


def _train(model, optimizer, batches, controller=None):
    losses = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if controller is not None:
            controller.step()
        losses.append(loss.item())
    return losses


def _with_dead_channel(window=3, **kwargs):
    torch.manual_seed(0)
    model = ConvNet(window=window, **kwargs)
    with torch.no_grad():
        model.bn1.bias[DEAD] = -50.0
    return model


def test_roles_of_a_plain_convnet_come_from_an_fx_trace():
    controller = PostShiftController(ConvNet())
    assert controller.pre_relu == ['bn1', 'bn2']


def test_healthy_psbn_network_trains_bit_identically_to_bn():
    torch.manual_seed(0)
    bn_model = ConvNet(norm=nn.BatchNorm2d)
    ps_model = ConvNet(window=5)
    ps_model.load_state_dict(bn_model.state_dict())
    batches = _batches(20)
    opt_bn = torch.optim.Adam(bn_model.parameters(), lr=1e-3)
    opt_ps = torch.optim.Adam(ps_model.parameters(), lr=1e-3)
    controller = PostShiftController(ps_model, opt_ps)
    losses_bn = _train(bn_model, opt_bn, batches)
    losses_ps = _train(ps_model, opt_ps, batches, controller)
    assert controller.recovered_by_stage()['other'] == 0
    assert losses_bn == losses_ps
    for (name, a), b in zip(bn_model.state_dict().items(),
                            ps_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_dead_channel_is_shifted_within_one_window_and_gets_gradient():
    model = _with_dead_channel(window=3)
    with torch.no_grad():
        model.bn1.weight[DEAD] = 1e-3  # collapsed: γ decayed too
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    batches = _batches(3)
    _train(model, optimizer, batches[:2], controller)
    assert model.bn1.bias[DEAD].item() == -50.0  # window not over yet
    x, y = batches[2]
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert model.bn1.weight.grad[DEAD] == 0 and model.bn1.bias.grad[DEAD] == 0
    optimizer.step()
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y).item()
    result = controller.step()
    assert result.dead['other'] == 1 and result.shifted['other'] == 1
    assert controller.shift_counts['bn1'].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    with torch.no_grad():
        after = nn.functional.cross_entropy(model(x), y).item()
        revived = model.relu1(model.bn1(model.conv1(x)))[:, DEAD]
    # The bound of one shift (docs/psbn.md): only the revived channel's
    # output changes, from 0 to ReLU(γ(x̂ − m)) with |γ| at the floor, whose
    # RMS is at most |γ|·s (s: x̂'s std, <= 1 under batch statistics), i.e.
    # 1/10 of the layer's median |γ|.
    gamma = model.bn1.weight[DEAD].abs().item()
    live = model.bn1.weight.detach().abs()[torch.arange(8) != DEAD]
    assert gamma == pytest.approx(0.1 * live.median().item())
    assert revived.square().mean().sqrt().item() <= gamma
    assert 0.3 < (revived > 0).float().mean().item() < 0.7  # ρ = 0.5
    assert abs(after - before) / before < 1e-2  # measured: 5.2e-4
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.bn1.weight.grad[DEAD] != 0
    assert model.bn1.bias.grad[DEAD] != 0


@pytest.mark.parametrize('rule', ['zero', 'healthy'])
def test_optimizer_state_reset_touches_exactly_the_shifted_entries(rule):
    model = _with_dead_channel(window=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3,
                                 weight_decay=1e-2)
    controller = PostShiftController(model, optimizer, optimizer_reset=rule)
    batches = _batches(4)
    _train(model, optimizer, batches[:3], controller)
    x, y = batches[3]
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    state = copy.deepcopy(optimizer.state[model.bn1.weight])
    assert state['exp_avg'][DEAD] != 0  # weight decay alone moved it
    assert controller.step().shifted['other'] == 1
    new = optimizer.state[model.bn1.weight]
    others = torch.arange(8) != DEAD
    for key in ('exp_avg', 'exp_avg_sq'):
        assert torch.equal(new[key][others], state[key][others]), key
    assert new['exp_avg'][DEAD] == 0
    expected_sq = (0.0 if rule == 'zero' else
                   state['exp_avg_sq'][others].median().item())
    assert new['exp_avg_sq'][DEAD].item() == pytest.approx(expected_sq)


def test_monitor_only_counts_dead_channels_of_plain_bn_and_changes_nothing():
    torch.manual_seed(0)
    model = ConvNet(norm=nn.BatchNorm2d)
    with torch.no_grad():
        model.bn2.bias[:2] = -50.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer, shift=False, window=2)
    _train(model, optimizer, _batches(2), controller)
    assert controller.dead_by_stage()['other'] == 2
    assert controller.recovered_by_stage()['other'] == 0
    assert (model.bn2.bias[:2] == -50.0).all()
    controller.close()
    assert not model.bn2._forward_hooks


def test_bf16_autocast_keeps_statistics_usable():
    model = _with_dead_channel(window=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    controller = PostShiftController(model, optimizer)
    results = []
    for x, y in _batches(2):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        results.append(controller.step())
    stats_dtype = model.bn1.window_stats  # reset after the window
    assert stats_dtype.batches == 0
    assert results[-1].shifted['other'] == 1
    assert torch.isfinite(model.bn1.weight).all()
    assert torch.isfinite(model.bn1.bias).all()
    assert model.bn1.bias[DEAD] > -10


def test_nan_batch_never_shifts_or_writes_nan():
    model = _with_dead_channel(window=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    x, y = _batches(1)[0]
    model(x).sum().backward()
    controller.step()
    x = x.clone()
    x[0, 0, 0, 0] = float('nan')
    model(x).sum().backward()
    result = controller.step()
    assert result.shifted['other'] == 0
    assert model.bn1.bias[DEAD] == -50.0
    assert torch.isfinite(model.bn1.weight).all()


def test_controller_state_round_trips():
    model = _with_dead_channel(window=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    _train(model, optimizer, _batches(2), controller)
    state = controller.state_dict()
    fresh = PostShiftController(_with_dead_channel(window=2))
    fresh.load_state_dict(state)
    assert fresh.steps == 2
    assert fresh.recovered_by_stage() == controller.recovered_by_stage()
    assert torch.equal(fresh.shift_counts['bn1'],
                       controller.shift_counts['bn1'])


def test_frozen_stages_cost_nothing_and_are_never_shifted():
    """mmdet's default finetuning: frozen_stages=1, norm_eval=True."""
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, norm_cfg=dict(type='psBN', window=1),
                 frozen_stages=1, norm_eval=True)
    net.init_weights()
    net.train()
    with torch.no_grad():
        # frozen stages: half their channels dead (the other half keeps
        # layer2's input varied: a constant input decides nothing)
        for bn in (net.bn1, net.layer1[0].bn1):
            bn.bias[::2] = -1e3
        net.layer2[0].bn1.bias.fill_(-1e3)
    optimizer = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=0.0)
    controller = PostShiftController(net, optimizer)
    sum(f.sum() for f in net(torch.randn(2, 3, 64, 64))).backward()
    assert net.bn1.window_stats.batches == 0  # frozen: no statistics
    assert net.layer1[0].bn1.window_stats.batches == 0
    assert net.layer2[0].bn1.window_stats.batches == 1  # eval mode, trained
    result = controller.step()
    assert result.shifted['stem'] == result.shifted['layer1'] == 0
    assert result.shifted['layer2'] >= net.layer2[0].bn1.num_features
    assert (net.layer2[0].bn1.bias > -10).all()
    assert (net.bn1.bias[::2] == -1e3).all()
    assert (net.layer1[0].bn1.bias[::2] == -1e3).all()


def test_pre_add_layers_collect_nothing_while_a_controller_runs():
    """Statistics nobody reads cost nothing: pre-add BNs (the widest) are
    never switched on, and after ``close()`` no layer collects (issue 22:
    without a controller psBN costs what BN costs)."""
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, norm_cfg=dict(type='psBN', window=2))
    net.init_weights()
    net.train()
    controller = PostShiftController(net)
    sum(f.sum() for f in net(torch.randn(2, 3, 32, 32))).backward()
    block = net.layer2[0]
    assert block.bn1.window_stats.batches == 1  # pre-ReLU
    assert block.bn2.window_stats.batches == 0  # pre-add
    assert block.downsample[1].window_stats.batches == 0  # pre-add
    controller.close()
    net(torch.randn(2, 3, 32, 32))
    assert block.bn1.window_stats.batches == 1
    assert block.bn2.window_stats.batches == 0


# --------------------------------------------- batches without information
def test_a_constant_last_batch_does_not_decide_the_shift():
    """The window's last batch is all zeros: the shift uses the last batch
    that had spread, and the revived channel fires on ~ρ of clean data."""
    torch.manual_seed(0)
    layer = psBN(4, window=2, active_fraction=0.01)
    with torch.no_grad():
        layer.bias[0] = -1e3  # dead under batch statistics
    controller = PostShiftController(torch.nn.Sequential(layer,
                                                         torch.nn.ReLU()))
    layer(torch.randn(16, 4, 8, 8).requires_grad_())
    assert controller.step() is None
    layer(torch.zeros(16, 4, 8, 8).requires_grad_())  # no information
    result = controller.step()
    assert result.shifted_channels['0'].tolist() == [True, False, False,
                                                     False]
    with torch.no_grad():
        active = (layer(torch.randn(64, 4, 8, 8))[:, 0] > 0).float().mean()
    assert 0.001 < float(active) < 0.05  # ρ = 1%, not ~50% (ρ is set low:
    # with the default ρ = 0.5 the two cases would look alike)


def test_a_constant_batch_alone_makes_no_channel_dead():
    """Window 1 and one all-zero batch on a fresh ResNet-18: every channel's
    input is constant, so none is judged (it was: all 1,984 'dead')."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    net = ResNet(depth=18, norm_cfg=dict(type='psBN', window=1),
                 norm_eval=False, frozen_stages=-1)
    net.init_weights()
    net.train()
    controller = PostShiftController(net)
    before = {k: v.clone() for k, v in net.state_dict().items()
              if k.endswith(('.weight', '.bias'))}
    sum(f.sum() for f in net(torch.zeros(2, 3, 64, 64))).backward()
    result = controller.step()
    assert sum(result.dead.values()) == 0
    assert sum(result.shifted.values()) == 0
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key
