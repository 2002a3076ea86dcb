"""ReDo, the studies' peer baseline: which units it finds, and that recycling
a dormant unit changes nothing the network computes until it learns again."""
import torch
from torch import nn

from research.collapse_study.networks import BasicNet
from research.redo import ReDo, units_of


def test_units_of_a_conv_stack_read_by_the_next_conv_or_the_head():
    net = BasicNet()
    units = units_of(net)
    assert len(units) == 6
    assert [type(u.outgoing[0]).__name__ for u in units] == \
        ['Conv2d'] * 5 + ['Linear']
    for unit in units:
        assert unit.conv.out_channels == unit.bn.num_features


def test_units_of_mmdet_resnet_are_block_internal_and_trainable():
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, base_channels=8, frozen_stages=1)
    names = [u.name for u in units_of(net)]
    # BasicBlock: bn1 only (bn2 is summed with the shortcut); the stem and
    # the frozen layer1 are left alone
    assert names == [f'layer{s}.{b}.bn1' for s in (2, 3, 4) for b in (0, 1)]
    net50 = ResNet(depth=50, base_channels=8, num_stages=1, out_indices=(0, ),
                   strides=(1, ), dilations=(1, ))
    first = [u.name for u in units_of(net50)][:2]
    assert first == ['layer1.0.bn1', 'layer1.0.bn2']


def test_recycling_a_dead_unit_keeps_the_output_and_resets_moments():
    torch.manual_seed(0)
    net = BasicNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(16, 1, 16, 16)
    net(x).sum().backward()
    optimizer.step()
    unit = units_of(net)[2]
    with torch.no_grad():
        unit.bn.bias[[1, 5]] = -100.0  # two dead channels
    redo = ReDo(units_of(net), optimizer, tau=0.0, period=1)
    net.train()
    net(x)  # scores on a training batch
    net.eval()
    with torch.no_grad():
        before = net(x)
    assert redo.step() == 2
    with torch.no_grad():
        after = net(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert unit.bn.bias[[1, 5]].tolist() == [0.0, 0.0]
    assert unit.bn.weight[[1, 5]].tolist() == [1.0, 1.0]
    assert (unit.outgoing[0].weight[:, [1, 5]] == 0).all()
    assert (unit.conv.weight[[1, 5]] != 0).any()
    state = optimizer.state[unit.conv.weight]
    assert (state['exp_avg'][[1, 5]] == 0).all()
    assert (state['exp_avg'][[0, 2]] != 0).any()
    assert (optimizer.state[unit.outgoing[0].weight]['exp_avg_sq'][:, [1, 5]]
            == 0).all()
    # without a new training batch nothing is scored; on one, the recycled
    # units are live (γ = 1, β = 0)
    assert redo.step() == 0
    net.train()
    net(x)
    assert redo.step() == 0


def test_recycled_units_learn_again():
    torch.manual_seed(0)
    net = BasicNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    unit = units_of(net)[3]
    with torch.no_grad():
        unit.bn.bias[:4] = -100.0
    redo = ReDo(units_of(net), optimizer, tau=0.0, period=1)
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32, ))
    for _ in range(5):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        redo.step()
    assert redo.recycled >= 4
    assert (unit.outgoing[0].weight[:, :4] != 0).any()  # learning again
