"""The study's grid: which variants run in which regime and network, and the
worker pool that runs them (one thread per worker process)."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from .training import Job, run

#: variants of every regime.  Recovery rules only where channels die: a rule
#: acts on dead channels only, and until its first shift (or recycling) a run
#: is bit-identical to BN's, so where BN never has a dead channel (AdamW, SGD
#: at an ordinary lr) every rule reproduces BN; the defaults show it.
#: Issue 13's grid: BN, psBN's defaults (window 10, ρ 0.5) and the same rule
#: at window 20, the defaults before issue 13, the first study's best
#: combination, and the peer, ReDo, every 20 and every 100 steps.  Options
#: are explicit in every variant, so records keep their meaning when the
#: product's defaults change.
COLLAPSE_VARIANTS = ('bn', 'rho50_w10', 'rho50_w20', 'shipped', 'rho16_w20',
                     'redo_20', 'redo')
MAIN_VARIANTS = {
    'adam_l2': COLLAPSE_VARIANTS,
    'adamw': ('bn', 'rho50_w10'),
    'sgd_high': COLLAPSE_VARIANTS,
    'sgd': ('bn', 'rho50_w10'),
}
NETWORKS = ('basicnet', 'resnet18')
QUICK_VARIANTS = ('bn', 'defaults', 'shipped')


def full_grid(seeds: int = 3, epochs: int = 15) -> list[Job]:
    """Every network, regime and variant of :data:`MAIN_VARIANTS`.

    The first study's candidate rules (``fix_*``, ``psbn``) are no longer
    run: their records stay in ``docs/collapse_study_runs/full_grid.json``.
    """
    cells = [(network, regime, variant) for network in NETWORKS
             for regime, variants in MAIN_VARIANTS.items()
             for variant in variants]
    return [Job(*cell, seed=seed, epochs=epochs) for cell in cells
            for seed in range(seeds)]


def quick_grid(seeds: int = 2, epochs: int = 15) -> list[Job]:
    """BasicNet, Adam + L2, BN vs psBN (defaults, and those before)."""
    return [Job('basicnet', 'adam_l2', variant, seed, epochs)
            for variant in QUICK_VARIANTS for seed in range(seeds)]


def _init_worker() -> None:
    torch.set_num_threads(1)


def run_jobs(jobs: list[Job], processes: int = 1, log=None) -> list[dict]:
    """Run ``jobs`` in ``processes`` worker processes (1: in this process).

    Results come back in the order of ``jobs``.  ``log(str)`` gets a line per
    finished run.
    """
    done = 0

    def report(result):
        nonlocal done
        done += 1
        if log is not None:
            j = result['job']
            log(f'[{done}/{len(jobs)}] {j["network"]} {j["regime"]} '
                f'{j["variant"]} seed {j["seed"]}: dead '
                f'{result["dead_pct"]:.1f}% acc {result["test_acc"]:.1f}% '
                f'({result["seconds"]:.0f}s)')
        return result

    if processes <= 1:
        return [report(run(job)) for job in jobs]
    # the BasicNet runs are the long ones: start them first.  A process pool
    # of concurrent.futures fails loudly if a worker dies (multiprocessing's
    # Pool would wait forever for the lost run).
    order = sorted(range(len(jobs)),
                   key=lambda i: jobs[i].network != 'basicnet')
    results: list[dict | None] = [None] * len(jobs)
    with ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context('spawn'),
            initializer=_init_worker) as pool:
        futures = {pool.submit(run, jobs[i]): i for i in order}
        for future in as_completed(futures):
            results[futures[future]] = report(future.result())
    return results
