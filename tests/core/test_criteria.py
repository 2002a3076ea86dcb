"""Collapse criteria and the one per-channel maximum over data."""
import torch

from psbn_mmdet.core import ChannelMax, channel_max


def test_batch_padding_does_not_count():
    """Each image's maximum covers its own pixels, not the padding."""
    module = torch.nn.Identity()
    probe = ChannelMax({'bn': module})
    features = torch.full((2, 1, 4, 4), -1.0)
    features[0, 0, 3, 3] = 5.0  # padding of image 0 (2x2 of 4x4 at 1/2 size)
    features[1, 0, 3, 3] = 7.0  # inside image 1 (full size)
    probe.extents = [(4, 4, 8, 8), (8, 8, 8, 8)]
    module(features)
    assert probe.maxima['bn'].tolist() == [7.0]
    features[1, 0, 3, 3] = -1.0
    module(features)  # maxima accumulate over batches
    assert probe.maxima['bn'].tolist() == [7.0]
    probe.remove()
    probe.maxima.clear()
    probe.extents = [(4, 4, 8, 8), (4, 4, 8, 8)]
    features = torch.full((2, 1, 4, 4), -1.0)
    module(features)
    assert probe.maxima == {}


def test_channel_max_reduces_every_dim_but_channels():
    x = torch.randn(3, 4, 5, 6)
    assert torch.equal(channel_max(x), x.amax(dim=(0, 2, 3)))
    fc = torch.randn(7, 4)  # a Linear layer's output (N, C)
    assert torch.equal(channel_max(fc), fc.amax(dim=0))


def test_collector_is_removed_on_exit():
    module = torch.nn.Identity()
    with ChannelMax({'m': module}) as collector:
        module(torch.ones(2, 3, 1, 1))
    module(torch.full((2, 3, 1, 1), 5.0))  # after the block: not seen
    assert collector.maxima['m'].tolist() == [1.0, 1.0, 1.0]
