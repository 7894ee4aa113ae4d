"""Balanced arm draws: systematic sampling along an endpoint from a pool of draws, against independent draws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from fedsynth.experiments.arm import balanced_rows


def _pool(n: int, seed: int) -> pd.DataFrame:
    """Exponential times (median log 2 = 0.693 before censoring), uniform censoring on [0, 3]."""
    rng = np.random.default_rng(seed)
    t, c = rng.exponential(1.0, n), rng.uniform(0, 3, n)
    return pd.DataFrame({"time": np.minimum(t, c), "event": (t <= c).astype(int), "x": np.arange(n)})


def _median(df: pd.DataFrame) -> float:
    return float(KaplanMeierFitter().fit(df["time"], df["event"]).median_survival_time_)


def test_balanced_rows_take_every_kth_row_of_the_pool_ordered_by_event_then_time() -> None:
    # Setup: 12 rows, 4 wanted: step 3; the start is the rng's first integer below 3
    pool = pd.DataFrame({"time": [5, 1, 4, 2, 6, 3, 9, 7, 8, 12, 10, 11], "event": [1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1],
                         "x": list("abcdefghijkl")})
    start = int(np.random.default_rng(3).integers(3))
    # ordered by event then time: censored 1 2 3 8 9 10 (b d f i g k), events 4 5 6 7 11 12 (c a e h l j)
    expected = "bdfigkcaehlj"[start::3][:4]
    # Run
    arm = balanced_rows(pool, 4, duration_col="time", event_col="event", rng=np.random.default_rng(3))
    # Assert
    assert sorted(arm["x"]) == sorted(expected)
    assert list(arm.index) == [0, 1, 2, 3]
    assert int(arm["event"].sum()) == 2  # the pool's half, exactly


def test_balanced_rows_keep_the_pools_event_share_within_one_row() -> None:
    pool = _pool(3000, 0)
    for seed in range(5):
        arm = balanced_rows(pool, 300, duration_col="time", event_col="event", rng=np.random.default_rng(seed))
        assert len(arm) == 300 and arm["x"].is_unique
        assert abs(arm["event"].mean() - pool["event"].mean()) <= 1 / 300


def test_a_balanced_arm_follows_the_pools_median_closer_than_independent_draws() -> None:
    # 40 pools of 3,000 from one law; each arm of 300 judged against its own pool's KM median
    bal, ind = [], []
    for r in range(40):
        pool = _pool(3000, 100 + r)
        m = _median(pool)
        arm = balanced_rows(pool, 300, duration_col="time", event_col="event", rng=np.random.default_rng(r))
        bal.append(math.log(_median(arm) / m))
        ind.append(math.log(_median(pool.sample(300, random_state=r)) / m))
    rms_bal, rms_ind = float(np.sqrt(np.mean(np.square(bal)))), float(np.sqrt(np.mean(np.square(ind))))
    # a plain median of 300 draws scatters by about 1.25 / (f(m) m sqrt(n)) ~ 0.1 in log; the balanced one
    # follows its pool to within a few per cent
    assert rms_ind > 0.06
    assert rms_bal < rms_ind / 4


def test_balanced_rows_need_a_pool_at_least_as_large_as_the_arm() -> None:
    with pytest.raises(ValueError, match="at least as many pool rows"):
        balanced_rows(_pool(10, 0), 11, duration_col="time", event_col="event", rng=np.random.default_rng(0))
