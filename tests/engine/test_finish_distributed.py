"""psbn_mmdet.engine.dist.finish_distributed: the tools' end of a
distributed run (a barrier, then the process group destroyed)."""
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from psbn_mmdet.engine.dist import finish_distributed

#: rank 1 reaches the end this much later than rank 0
LATE_S = 1.0


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    if rank == 1:
        time.sleep(LATE_S)
    entered = time.time()
    finish_distributed()
    torch.save(dict(entered=entered, left=time.time(),
                    initialized=dist.is_initialized()),
               os.path.join(out_dir, f'rank{rank}.pt'))


def test_without_a_process_group_it_does_nothing():
    assert not dist.is_initialized()
    finish_distributed()
    assert not dist.is_initialized()


@pytest.mark.slow
def test_ranks_leave_together_and_the_group_is_gone(tmp_path):
    mp.spawn(_worker, args=(29536, str(tmp_path)), nprocs=2, join=True)
    first, late = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    assert not first['initialized'] and not late['initialized']
    # rank 0 waited at the barrier for rank 1
    assert late['entered'] - first['entered'] >= 0.9 * LATE_S
    assert first['left'] >= late['entered']
