"""Two gloo processes with different data: decisions and parameters agree."""
import math
import os
from statistics import NormalDist

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from psbn_mmdet import PostShiftController
from psbn_mmdet import psBN, psSyncBN

pytestmark = pytest.mark.slow

DEAD_ON_BOTH, DEAD_ON_RANK0_ONLY = 1, 2


def _worker(rank, port, out_dir, norm):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.manual_seed(0)  # identical initial parameters on both ranks
    # ρ = 0.01 (not the default 0.5, where z = 0) so that β tests the
    # pooled std as well as the pooled mean
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False),
                          norm(4, window=2, active_fraction=0.01), nn.ReLU())
    bn = model[1]
    bn.eval()  # frozen statistics: each rank's data decides its own activity
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4, 3).view(4, 3, 1, 1))
        bn.bias.copy_(torch.tensor([0.0, -5.0, -5.0, 1.0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer)
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    result = None
    for _ in range(2):
        x = torch.randn(4, 3, 6, 6, generator=g) * 0.1
        if rank == 1:
            x[:, DEAD_ON_RANK0_ONLY] += 10.0  # active on rank 1 only
            # dead on both, with rank means far apart against their spread:
            # the pooled variance must include the between-rank part
            x[:, DEAD_ON_BOTH] -= 1.0
        model(x).sum().backward()
        optimizer.step()
        result = controller.step()
    torch.save(dict(shifted=controller.shift_counts['1'].tolist(),
                    last_bn_input=model[0](x).detach(),
                    weight=bn.weight.detach().clone(),
                    bias=bn.bias.detach().clone(),
                    dead=result.dead),
               os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


@pytest.mark.parametrize('norm, port', [(psBN, 29533), (psSyncBN, 29534)])
def test_two_ranks_shift_identically(tmp_path, norm, port):
    mp.spawn(_worker, args=(port, str(tmp_path), norm), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    assert r0['shifted'] == r1['shifted'] == [0, 1, 0, 0]
    assert torch.equal(r0['weight'], r1['weight'])
    assert torch.equal(r0['bias'], r1['bias'])
    assert r0['bias'][DEAD_ON_RANK0_ONLY] == -5.0  # alive on rank 1
    # the shift used x̂'s mean and std pooled over both ranks' last batches:
    # β = −γ·m − |γ|·z·s with γ = 1 and x̂ = x / sqrt(1 + eps) (running stats)
    pooled = torch.cat([r0['last_bn_input'], r1['last_bn_input']])
    xhat = pooled[:, DEAD_ON_BOTH].double() / math.sqrt(1.0 + 1e-5)
    z = NormalDist().inv_cdf(1.0 - 0.01)  # the layers' ρ: z·s is tested too
    expected = -xhat.mean() - z * xhat.std(correction=0)
    assert float(r0['bias'][DEAD_ON_BOTH]) == pytest.approx(float(expected),
                                                            abs=1e-5)
