"""Issue 23, step 4's revival rules (research.collapse_study.revival) and
step 3's trace probe (research.capacity_study.trace): what a rule changes at
a shift, that it changes nothing before one, and the stated bound on the
function change at a shift."""
import pytest
import torch

from psbn_mmdet import PostShiftController
from research.capacity_study.trace import RevivedTrace
from research.collapse_study import VARIANTS, build_network
from research.collapse_study.revival import Revival, Rule, shift_bound


def _net(seed=0):
    torch.manual_seed(seed)
    return build_network('basicnet', VARIANTS['rho50_w10'], width=0.25)


def _kill(net, controller, layer=1, channels=(1, 4)):
    """Channels of the ``layer``-th pre-ReLU BN dead, with decayed filters
    and outgoing weights, as Adam + L2 leaves them."""
    name = controller.pre_relu[layer]
    unit = next(u for u in Revival(net, None, controller, Rule()).units.values()
                if u.name == name)
    controller.callbacks.clear()
    with torch.no_grad():
        for c in channels:
            unit.bn.weight[c] = 1e-3
            unit.bn.bias[c] = -5.0
            unit.conv.weight[c] *= 1e-3
            unit.outgoing[0].weight[:, c] *= 1e-2
    return name, unit


def _train_window(net, controller, optimizer, x, y, steps=10):
    result = None
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result = controller.step() or result
    return result


@pytest.mark.parametrize('rule', [Rule(), Rule('rescale'),
                                  Rule('rescale', 'live'), Rule('fresh'),
                                  Rule('rescale', 'live', 0.25)])
def test_rule_changes_only_shifted_channels_and_respects_the_bound(rule):
    net = _net()
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32, ))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # frozen weights
    controller = PostShiftController(net, optimizer)
    name, unit = _kill(net, controller)
    revival = Revival(net, optimizer, controller, rule)
    net.train()
    with torch.no_grad():
        net(x)  # no gradient: the rule keeps no input
    _train_window(net, controller, optimizer, x, y, steps=9)
    before = {k: v.clone() for k, v in net.named_parameters()}
    # the network just before the shift, under batch statistics
    feats = {}
    hook = unit.outgoing[0].register_forward_pre_hook(
        lambda m, a: feats.setdefault(len(feats), a[0].detach().clone()))
    with torch.no_grad():
        net(x)
    result = _train_window(net, controller, optimizer, x, y, steps=1)
    shifted = result.shifted_channels[name]
    assert shifted.tolist() == [c in (1, 4) for c in range(len(shifted))]
    # only the shifted channels' own slices change (weights frozen: lr 0)
    own = {id(unit.conv.weight): 0, id(unit.bn.weight): 0,
           id(unit.bn.bias): 0, id(unit.outgoing[0].weight): 1}
    for key, param in net.named_parameters():
        delta = param != before[key]
        if id(param) in own:
            assert not delta.movedim(own[id(param)], 0)[~shifted].any(), key
        else:
            assert not delta.any(), key
    with torch.no_grad():
        net(x)
    hook.remove()
    change = float((feats[1] - feats[0]).abs().max())
    bound = shift_bound(unit, revival.inputs[name], shifted)
    assert change <= bound * (1 + 1e-5) + 1e-6
    if rule.filter != 'keep':
        norms = unit.conv.weight.flatten(1).norm(dim=1)
        live = norms[~controller.last_dead[name]].median()
        torch.testing.assert_close(norms[shifted],
                                   live.expand(int(shifted.sum())))
    if rule.gamma == 'live':
        gamma = unit.bn.weight.abs()
        assert (gamma[shifted] >= gamma[~shifted].median() - 1e-6).all()
    if rule.outgoing:
        out = unit.outgoing[0].weight.transpose(0, 1).flatten(1).norm(dim=1)
        target = rule.outgoing * out[~shifted].median()
        assert (out[shifted] >= target * (1 - 1e-5)).all()
    report = revival.close()
    assert report['changed'] == 2 and report['max_shift_bound'] >= change


def test_nothing_changes_before_the_first_shift():
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32, ))
    nets = []
    for rule in (None, Rule('rescale', 'live', 0.25)):
        net = _net()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        controller = PostShiftController(net, optimizer)
        if rule is not None:
            Revival(net, optimizer, controller, rule)
        assert _train_window(net, controller, optimizer, x, y, 20)\
            .shifted_channels == {}
        nets.append(net)
    for (k, a), b in zip(nets[0].state_dict().items(),
                         nets[1].state_dict().values()):
        assert torch.equal(a, b), k


def test_rescale_refuses_other_active_fractions():
    torch.manual_seed(0)
    net = build_network('basicnet', VARIANTS['rho16_w20'], width=0.25)
    with pytest.raises(ValueError):
        Revival(net, None, PostShiftController(net), Rule('rescale'))


def test_trace_follows_shifted_channels_and_changes_nothing():
    net = _net()
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32, ))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    controller = PostShiftController(net, optimizer)
    name, unit = _kill(net, controller)
    trace = RevivedTrace(net, optimizer, controller, every=2)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trace.after_step(controller.step())
    report = trace.close()
    assert report['followed_channels'] == 2
    assert report['at_shift_count'] == 2
    assert report['at_shift']['filter'] < 0.01
    assert report['at_shift']['outgoing'] < 0.05
    bins = report['by_steps_since_shift']
    assert set(bins) == {'0-10', '10-50'}
    assert bins['0-10']['gamma'] == pytest.approx(0.1, rel=1e-4)


def test_revival_hook_applies_its_rule_to_the_runs_controller():
    """The mmengine hook (research/configs/transfer/*_psbn_b.py) puts a
    Revival on the PostShiftHook's controller: the shifted channels' filters
    are rescaled to the live median norm, and the checkpoint says so."""
    from types import SimpleNamespace

    from psbn_mmdet.engine.hooks import PostShiftHook
    from research.collapse_study.revival import RevivalHook
    net = _net()
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32, ))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    controller = PostShiftController(net, optimizer)
    name, unit = _kill(net, controller)
    post_shift = PostShiftHook()
    post_shift.controller = controller
    runner = SimpleNamespace(hooks=[post_shift], model=net,
                             optim_wrapper=SimpleNamespace(optimizer=optimizer))
    hook = RevivalHook(filter='rescale', gamma='live')
    from psbn_mmdet.utils.errors import UserError
    with pytest.raises(UserError, match='needs a PostShiftHook'):
        hook.before_train(SimpleNamespace(hooks=[], model=net))
    hook.before_train(runner)
    net.train()
    result = _train_window(net, controller, optimizer, x, y, steps=10)
    shifted = result.shifted_channels[name]
    assert shifted[[1, 4]].all()
    norms = unit.conv.weight.flatten(1).norm(dim=1)
    live = ~controller.last_dead[name]
    assert torch.allclose(norms[shifted], norms[live].median().expand(
        int(shifted.sum())))
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint['revival']['changed'] == sum(
        int(s.sum()) for s in result.shifted_channels.values())
    assert checkpoint['revival']['rule']['filter'] == 'rescale'
