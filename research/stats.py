"""Paired differences over seeds: mean and 95% t interval (the studies'
one formula)."""
from __future__ import annotations

import math
import statistics


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval (low, high) of paired differences (n ≥ 2)."""
    from scipy import stats
    mean = statistics.fmean(diffs)
    half = (stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs)
            / math.sqrt(len(diffs)))
    return mean, mean - half, mean + half


def interval(diffs: list[float], digits: int = 3) -> str:
    """``mean [low, high]``, signed; the mean alone for one difference."""
    if len(diffs) < 2:
        return f'{statistics.fmean(diffs):+.{digits}f}'
    mean, low, high = t_interval(diffs)
    return f'{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]'


def paired(by_seed: dict, a: str, b: str, value) -> list[float]:
    """``value(run of a) - value(run of b)`` over the seeds both ran, where
    ``by_seed[name][seed]`` is a run."""
    seeds = sorted(set(by_seed.get(a, {})) & set(by_seed.get(b, {})))
    return [value(by_seed[a][s]) - value(by_seed[b][s]) for s in seeds]
