"""psBN layer: exactly BN forward/backward, BN's state dict, statistics, post-shift."""
import math
from statistics import NormalDist

import pytest
import torch
from torch import nn

from psbn_mmdet import psBN, psSyncBN


def collecting(layer):
    """The layer with its window statistics on, as a controller turns them
    on (without one a psBN layer collects nothing: it costs what BN costs)."""
    layer.window_stats.enabled = layer.window_stats.attached = True
    return layer


def _pair(c=6, seed=0):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    ps = collecting(psBN(c))
    ps.load_state_dict(bn.state_dict())
    return bn, ps


@pytest.mark.parametrize('train', [True, False])
def test_forward_and_backward_equal_batchnorm2d(train):
    bn, ps = _pair()
    bn.train(train)
    ps.train(train)
    x = torch.randn(4, 6, 9, 7)
    xb, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    yb, yp = bn(xb), ps(xp)
    assert torch.equal(yb, yp)
    grad = torch.randn_like(yb)
    yb.backward(grad)
    yp.backward(grad)
    assert torch.equal(xb.grad, xp.grad)
    assert torch.equal(bn.weight.grad, ps.weight.grad)
    assert torch.equal(bn.bias.grad, ps.bias.grad)
    assert torch.equal(bn.running_mean, ps.running_mean)
    assert torch.equal(bn.running_var, ps.running_var)


def test_state_dict_keys_are_batchnorms_and_round_trip_is_lossless():
    bn, ps = _pair()
    ps(torch.randn(2, 6, 3, 3))  # statistics collected: must not leak
    assert list(ps.state_dict()) == list(bn.state_dict())
    back = nn.BatchNorm2d(6)
    back.load_state_dict(ps.state_dict(), strict=True)
    for key, value in ps.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    again = collecting(psBN(6))
    again.load_state_dict(back.state_dict(), strict=True)
    for key, value in ps.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_sync_variant_matches_batchnorm_outside_distributed():
    bn, _ = _pair()
    sync = collecting(psSyncBN(6))
    sync.load_state_dict(bn.state_dict())
    x = torch.randn(3, 6, 5, 5)
    assert torch.equal(bn(x), sync(x))
    assert sync.window_stats.batches == 1


@pytest.mark.parametrize('cls', [psBN, psSyncBN])
@pytest.mark.parametrize('option, value, message', [
    ('window', 0, 'window must be an integer >= 1'),
    ('window', 2.5, 'window must be an integer >= 1'),
    ('active_fraction', 0.0, 'active_fraction must be in (0, 0.5]'),
    ('active_fraction', 0.7, 'active_fraction must be in (0, 0.5]'),
    ('gamma_min', -1.0, 'gamma_min must be None'),
    ('windw', 10, "unknown option 'windw'"),
])
def test_bad_option_raises_naming_it(cls, option, value, message):
    with pytest.raises((TypeError, ValueError)) as info:
        cls(4, **{option: value})
    assert message in str(info.value)
    assert cls.__name__ in str(info.value)


def test_statistics_only_while_training_the_layer():
    ps = collecting(psBN(3))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        ps(x)
    assert ps.window_stats.batches == 0
    ps.weight.requires_grad_(False)
    ps(x)
    assert ps.window_stats.batches == 0
    ps.weight.requires_grad_(True)
    ps.eval()  # norm_eval=True: eval mode while training
    ps(x)
    assert ps.window_stats.batches == 1


def test_last_batch_xhat_statistics_under_frozen_running_stats():
    ps = collecting(psBN(2, window=2).eval())
    with torch.no_grad():
        ps.running_mean.copy_(torch.tensor([1.0, -2.0]))
        ps.running_var.copy_(torch.tensor([4.0, 0.25]))
    x = torch.randn(64, 2, 8, 8)
    y1, y2 = ps(x), ps(x * 2)
    mean, std = ps.window_stats.xhat_mean_std()
    xhat = (2 * x - ps.running_mean.view(1, 2, 1, 1)) / (
        ps.running_var.view(1, 2, 1, 1) + ps.eps).sqrt()
    per_channel = xhat.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(mean, per_channel.mean(1), rtol=1e-4,
                               atol=1e-4)
    torch.testing.assert_close(std, per_channel.std(1, correction=0),
                               rtol=1e-4, atol=1e-4)
    expected_max = torch.maximum(y1.amax(dim=(0, 2, 3)), y2.amax(dim=(0, 2, 3)))
    assert torch.equal(ps.window_stats.max, expected_max)


def test_batch_statistics_xhat_std_shrinks_with_a_decayed_filter():
    """x̂ = (x - μ) / sqrt(σ² + eps): std ≈ 1 normally, ≪ 1 when σ² ≪ eps."""
    ps = collecting(psBN(2, eps=1e-5))
    x = torch.randn(8, 2, 6, 6)
    x[:, 1] *= 1e-4  # σ² ≈ 1e-8, far below eps
    ps(x)
    mean, std = ps.window_stats.xhat_mean_std()
    assert torch.allclose(mean, torch.zeros(2))
    assert std[0] == pytest.approx(1.0, abs=1e-3)
    var = x[:, 1].var(correction=0)
    assert std[1] == pytest.approx(float((var / (var + 1e-5)).sqrt()),
                                   rel=1e-2)


@pytest.mark.parametrize('train', [True, False])
def test_xhat_variance_does_not_cancel_when_mean_dwarfs_spread(train):
    """E[x²] − E[x]² in float32 would give 0 (or noise) for mean 1e3, std 1e-2."""
    ps = collecting(psBN(1, window=1).train(train))
    if not train:
        with torch.no_grad():
            ps.running_mean.fill_(1000.0)
            ps.running_var.fill_(1e-4)
    torch.manual_seed(0)
    x = (1000.0 + 1e-2 * torch.randn(8, 1, 16, 16, dtype=torch.float64))
    ps(x.float())
    xf = x.float().double()  # the values the layer saw
    var = xf.var(correction=0)
    mean, std = ps.window_stats.xhat_mean_std()
    if train:
        expected_std = (var / (var + ps.eps)).sqrt()
        expected_mean = 0.0
    else:
        expected_std = (var / (1e-4 + ps.eps)).sqrt()
        expected_mean = (xf.mean() - 1000.0) / math.sqrt(1e-4 + ps.eps)
    assert float(std) == pytest.approx(float(expected_std), rel=1e-3)
    assert float(mean) == pytest.approx(float(expected_mean), abs=1e-3)


def test_xhat_moments_are_computed_for_the_first_and_last_batch_only():
    ps = collecting(psBN(1, window=3))
    ps(torch.full((2, 1, 2, 2), 0.0) + torch.arange(4.0).view(1, 1, 2, 2))
    first = ps.window_stats.xhat_var.clone()
    ps(10 * torch.arange(8.0).view(2, 1, 2, 2))  # batch 2 of 3: skipped
    assert torch.equal(ps.window_stats.xhat_var, first)
    last = 1e-3 * torch.arange(8.0)
    ps(last.view(2, 1, 2, 2))  # batch 3: the window's last
    var = float(last.var(correction=0))
    assert float(ps.window_stats.xhat_var) == pytest.approx(
        var / (var + ps.eps), rel=1e-4)
    assert ps.window_stats.batches == 3


def test_dead_channel_found_and_single_active_element_is_not_dead():
    ps = collecting(psBN(3).eval())  # frozen statistics, as in mmdet finetuning
    with torch.no_grad():
        ps.bias.copy_(torch.tensor([-100.0, 0.0, -100.0]))
    x = torch.randn(4, 3, 5, 5)
    x[0, 2, 0, 0] = 1e4  # one element of channel 2 becomes positive
    ps(x)
    assert ps.dead_channels().tolist() == [True, False, False]


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_nonfinite_batch_never_makes_a_channel_dead(bad):
    ps = collecting(psBN(2))
    with torch.no_grad():
        ps.bias.fill_(-100.0)
    ps(torch.randn(4, 2, 3, 3))
    x = torch.randn(4, 2, 3, 3)
    x[:, 0] = bad
    ps(x)
    assert ps.dead_channels().tolist() == [False, True]


@pytest.mark.parametrize('gamma', [0.5, -0.5, 0.0, 1e-5])
def test_post_shift_makes_active_fraction_positive(gamma):
    torch.manual_seed(0)
    ps = collecting(psBN(1, active_fraction=0.05, gamma_min=0.1))
    with torch.no_grad():
        ps.weight.fill_(gamma)
        ps.bias.fill_(-50.0)
    x = torch.randn(256, 1, 16, 16)
    ps(x)
    dead = ps.dead_channels()
    assert dead.tolist() == [True]
    shifted = ps.post_shift_(dead)
    assert shifted.tolist() == [True]
    assert abs(ps.weight.item()) == pytest.approx(max(abs(gamma), 0.1))
    assert math.copysign(1, ps.weight.item()) == (-1 if gamma < 0 else 1)
    with torch.no_grad():
        active = (ps(x) > 0).float().mean().item()
    assert active == pytest.approx(0.05, abs=0.01)
    z = NormalDist().inv_cdf(0.95)
    assert ps.bias.item() == pytest.approx(-abs(ps.weight.item()) * z,
                                           rel=0.01)


def test_relative_gamma_floor_uses_healthy_median():
    ps = collecting(psBN(5))
    with torch.no_grad():
        ps.weight.copy_(torch.tensor([0.0, 2.0, 4.0, 6.0, 1e-4]))
    dead = torch.tensor([True, False, False, False, True])
    assert ps.gamma_floor(dead) == pytest.approx(0.1 * 4.0)


def test_post_shift_leaves_other_channels_untouched():
    ps = collecting(psBN(4))
    with torch.no_grad():
        ps.weight.copy_(torch.tensor([0.3, 1.0, 0.7, 2.0]))
        ps.bias.copy_(torch.tensor([-90.0, 0.1, -80.0, 0.2]))
    ps(torch.randn(8, 4, 4, 4))
    before_w, before_b = ps.weight.clone(), ps.bias.clone()
    dead = ps.dead_channels()
    assert dead.tolist() == [True, False, True, False]
    ps.post_shift_(dead)
    assert torch.equal(ps.weight[~dead], before_w[~dead])
    assert torch.equal(ps.bias[~dead], before_b[~dead])
    assert (ps.bias[dead] > -10).all()


# ------------------------------------------------------------- conversions
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))


def test_conversion_keeps_parameters_so_an_earlier_optimizer_still_trains():
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    gamma, beta, mean = net[1].weight, net[1].bias, net[1].running_mean
    assert psBN.convert_bn(net, window=3) is net
    assert type(net[1]) is psBN and type(net[3][1]) is psBN
    assert net[1].window == 3
    assert net[1].weight is gamma and net[1].bias is beta
    assert net[1].running_mean is mean
    before = gamma.detach().clone(), beta.detach().clone()
    net(torch.randn(2, 3, 6, 6)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(gamma.detach(), before[0])
    assert not torch.equal(beta.detach(), before[1])
    assert psBN.revert(net) is net and type(net[1]) is nn.BatchNorm2d
    assert net[1].weight is gamma and net[3][1].running_mean is not None


def test_conversion_replaces_a_child_only_when_it_changed():
    net = _net()
    conv, inner = net[0], net[3]
    psBN.convert_bn(net)
    assert net[0] is conv and net[3] is inner  # containers kept
    layer = net[1]
    assert psBN.convert_bn(net)[1] is layer  # already psBN: left alone
    assert psBN.revert(nn.ReLU()).__class__ is nn.ReLU


def test_conversion_keeps_mode_and_sync_flavour():
    bn = nn.BatchNorm2d(4).eval()
    ps = psBN.convert_bn(bn)
    assert type(ps) is psBN and not ps.training
    sync = psBN.convert_bn(nn.SyncBatchNorm(4, momentum=0.3))
    assert type(sync) is psSyncBN and sync.momentum == 0.3
    assert type(psBN.revert(sync)) is nn.SyncBatchNorm


def test_conversion_of_bn_without_affine_parameters_or_bias():
    plain = psBN.revert(psBN(4, affine=False))
    assert type(plain) is nn.BatchNorm2d and plain.weight is None
    ps = psBN.convert_bn(nn.BatchNorm2d(4, affine=False))
    assert type(ps) is psBN and ps.weight is None
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(ps(x), nn.BatchNorm2d(4, affine=False)(x))
    no_bias = nn.BatchNorm2d(4)
    no_bias.bias = None
    ps = psBN.convert_bn(no_bias)
    assert ps.bias is None and ps.weight is no_bias.weight
    y = ps(x.requires_grad_())  # trains, nothing to shift: no statistics
    y.sum().backward()
    assert ps.window_stats.batches == 0


# ------------------------------------------------ without a controller
def test_without_a_controller_psbn_collects_nothing_and_says_so_once(
        recwarn):
    """psBN with no controller attached (the config forgot the hook) is BN:
    no statistics, and one warning saying why nothing is recovered."""
    from psbn_mmdet.models.layers import psbn as layers
    layers._WARNED.clear()
    net = nn.Sequential(psBN(4), nn.ReLU(), psBN(4))
    for _ in range(3):
        net(torch.randn(2, 4, 3, 3)).sum().backward()
    assert all(layer.window_stats.max is None
               and layer.window_stats.batches == 0
               for layer in (net[0], net[2]))
    said = [w for w in recwarn if 'without a post-shift controller' in
            str(w.message)]
    assert len(said) == 1
    with torch.no_grad():  # inference says nothing
        layers._WARNED.clear()
        net(torch.randn(2, 4, 3, 3))
    assert not layers._WARNED
