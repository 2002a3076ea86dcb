"""The hook's seed of the fresh filters is rank 0's on every rank (issue 39,
item 2: under ``randomness.diff_rank_seed=True`` the runner's seed is the
base seed + the rank, and each rank drew other filters)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from psbn_mmdet import PostShiftController, psBN
from psbn_mmdet.engine.hooks.post_shift_hook import same_on_every_rank


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    seed = same_on_every_rank(100 + rank)  # a per-rank runner seed
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), psBN(4, window=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        model[1].bias[0] = -50.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    controller = PostShiftController(model, optimizer, seed=seed)
    model(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(
        rank))).sum().backward()
    optimizer.step()
    result = controller.step()
    torch.save(dict(seed=seed, filter=model[0].weight[0].detach().clone(),
                    revived=sum(result.reinitialized.values())),
               os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_without_a_process_group_the_value_is_kept():
    assert same_on_every_rank(7) == 7


@pytest.mark.slow
def test_two_ranks_draw_the_same_fresh_filter(tmp_path):
    mp.spawn(_worker, args=(29541, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    assert first['seed'] == second['seed'] == 100
    assert first['revived'] == second['revived'] == 1
    assert torch.equal(first['filter'], second['filter'])
