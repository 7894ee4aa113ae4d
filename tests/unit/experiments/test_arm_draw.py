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


def test_a_pool_that_is_not_a_multiple_of_n_is_sampled_over_its_whole_length() -> None:
    # Setup: 39 rows, 20 censored then 19 events once ordered; 20 wanted: interval 1.95, start 0
    pool = _pool(39, 3)
    pool["event"] = [0] * 20 + [1] * 19
    # Run
    arm = balanced_rows(pool, 20, duration_col="time", event_col="event", rng=np.random.default_rng(0))
    # Assert: positions floor(1.95 i) reach the last events (a step of 1 would take the 20 censored rows only)
    assert abs(arm["event"].mean() - 19 / 39) <= 1 / 20
    assert arm["x"].is_unique and len(arm) == 20


def test_balanced_rows_come_back_in_random_order() -> None:
    pool = _pool(3000, 1)
    ranks = pool.sort_values(["event", "time"], kind="stable").assign(rank=np.arange(3000)).sort_index()["rank"]
    arm = balanced_rows(pool, 300, duration_col="time", event_col="event", rng=np.random.default_rng(4))
    order = ranks.to_numpy()[arm["x"].to_numpy()]
    # taken in ordered positions, returned shuffled: no trend of rank along the returned rows
    assert abs(np.corrcoef(order, np.arange(300))[0, 1]) < 0.2


def test_balanced_rows_refuse_an_empty_arm() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        balanced_rows(_pool(10, 0), 0, duration_col="time", event_col="event", rng=np.random.default_rng(0))


class _PoolGenerator:
    """A stand-in generator over a two-endpoint schema: records the rows asked for, returns independent draws."""

    def __init__(self, schema: object) -> None:
        self.schema = schema
        self.asked: list[int] = []

    def sample(self, n: int, *, random_state: int, **_: object) -> pd.DataFrame:
        self.asked.append(n)
        rng = np.random.default_rng(random_state)
        t1, c1 = rng.exponential(2.0, n), rng.uniform(0, 6, n)
        t2, c2 = rng.exponential(1.0, n), rng.uniform(0, 3, n)
        return pd.DataFrame({"age": rng.integers(40, 90, n), "os_time": np.minimum(t1, c1),
                             "os_event": (t1 <= c1).astype(int), "pfs_time": np.minimum(t2, c2),
                             "pfs_event": (t2 <= c2).astype(int), "row": np.arange(n)})


@pytest.fixture(scope="module")
def two_endpoints(tmp_path_factory: pytest.TempPathFactory) -> object:
    from fedsynth.cohort.datasets import load

    rng = np.random.default_rng(0)
    frame = _PoolGenerator(None).sample(200, random_state=0).drop(columns="row")
    frame["age"] = rng.integers(40, 90, 200)
    csv = tmp_path_factory.mktemp("two") / "two.csv"
    frame.round(3).to_csv(csv, index=False)
    schema = load(str(csv)).schema
    assert [e.name for e in schema.endpoints] == ["OS", "PFS"]
    return schema


def test_draw_arm_asks_for_ten_times_the_rows_when_balanced_and_follows_the_endpoint_named(two_endpoints) -> None:
    from fedsynth.cohort.conditions import SamplingRequest
    from fedsynth.experiments.arm import draw_arm

    request = SamplingRequest(conditions={}, where=None, notes=())
    gen = _PoolGenerator(two_endpoints)
    # Run
    independent = draw_arm(gen, request, 50, random_state=1, draw="independent")
    along_os = draw_arm(gen, request, 50, random_state=1)
    along_pfs = draw_arm(gen, request, 50, random_state=1, endpoint="PFS")
    again = draw_arm(gen, request, 50, random_state=1, endpoint="PFS")
    other_seed = draw_arm(gen, request, 50, random_state=2, endpoint="PFS")
    # Assert
    assert gen.asked == [50, 500, 500, 500, 500]
    pool = gen.sample(500, random_state=1)
    assert len(independent) == 50 and independent["row"].max() < 50
    assert abs(along_os["os_event"].mean() - pool["os_event"].mean()) <= 1 / 50
    assert abs(along_pfs["pfs_event"].mean() - pool["pfs_event"].mean()) <= 1 / 50
    assert not along_os["row"].sort_values().reset_index(drop=True).equals(
        along_pfs["row"].sort_values().reset_index(drop=True))
    assert along_pfs.equals(again) and not along_pfs.equals(other_seed)


def test_along_needs_a_balanced_draw_and_a_known_endpoint(two_endpoints) -> None:
    from fedsynth.errors import ValidationError
    from fedsynth.experiments.arm import check_draw, describe_draw

    with pytest.raises(ValidationError) as err:
        check_draw(two_endpoints, "independent", "PFS")  # type: ignore[arg-type]
    assert "applies to balanced draws only" in str(err.value)
    with pytest.raises(ValidationError, match="not a draw method"):
        describe_draw(two_endpoints, 10, "stratified")  # type: ignore[arg-type]
    assert describe_draw(two_endpoints, 10, "balanced", "PFS")["endpoint"] == "PFS"  # type: ignore[arg-type]
