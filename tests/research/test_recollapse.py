"""The re-collapse probe's arithmetic: what killed a revived channel."""
import pytest

from research.collapse_study.recollapse import Episode, summarize, table


def _episode(batches, **kwargs):
    episode = Episode('bn1', 0, 100, gamma=0.1, beta=-0.2, s=0.5,
                      margin=0.1, filter_ratio=0.01, **kwargs)
    episode.batches = batches
    episode.grads = [[0.5, 2.0, 1.0]]
    return episode


def test_the_fall_of_max_y_splits_exactly_into_beta_gamma_and_xhat():
    # batch: (max y, active fraction, γ, β, max x̂, std x̂)
    # max y = γ·max x̂ + β: 0.1·3 − 0.2 = 0.1, then 0.05·2 − 0.3 = −0.2
    died = _episode([(0.1, 0.2, 0.1, -0.2, 3.0, 1.0),
                     (0.05, 0.1, 0.1, -0.25, 3.0, 1.0),
                     (-0.2, 0.0, 0.05, -0.3, 2.0, 1.0)])
    lived = _episode([(0.1, 0.2, 0.1, -0.2, 3.0, 1.0),
                      (0.2, 0.3, 0.1, -0.1, 3.0, 1.0)])
    summary = summarize([died, lived])
    assert summary['episodes'] == 2 and summary['died'] == 1
    assert summary['died_steps_median'] == 2
    shares = summary['share_median']
    # fall 0.3: β −0.1 → 1/3, γ −0.05 at max x̂ 3 → 1/2, x̂ −1 at γ 0.05 → 1/6
    assert shares['beta'] == pytest.approx(1 / 3)
    assert shares['gamma'] == pytest.approx(1 / 2)
    assert shares['xhat'] == pytest.approx(1 / 6)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert summary['grad_over_l2_median'] == {'gamma': 0.5, 'beta': 2.0,
                                              'filter': 1.0}


def test_table_has_a_row_per_variant():
    summary = summarize([_episode([(0.1, 0.2, 0.1, -0.2, 3.0, 1.0),
                                   (-0.2, 0.0, 0.05, -0.3, 2.0, 1.0)])])
    text = table([dict(job=dict(variant='shipped'), dead_pct=20.0,
                       recollapse=summary)])
    assert text.count('\n') == 2 and '| 1 (100%) |' in text
