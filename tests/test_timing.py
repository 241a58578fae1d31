"""The one timing summary: median, spread and every run, in seconds; milliseconds with units in the JSON keys."""

from __future__ import annotations

import statistics

import pytest

from fastrcnn_cli.timing import STAT_KEYS, TimingStats


def test_statistics_of_four_runs() -> None:
    stats = TimingStats.from_samples([0.004, 0.001, 0.003, 0.002])
    assert stats.n == 4
    assert stats.median == pytest.approx(0.0025) and stats.mean == pytest.approx(0.0025)
    assert (stats.min, stats.max) == pytest.approx((0.001, 0.004))
    assert (stats.p25, stats.p75) == pytest.approx((0.00175, 0.00325))  # inclusive quartiles: within [min, max]
    assert stats.iqr == pytest.approx(0.0015)
    assert stats.std == pytest.approx(statistics.stdev([1, 2, 3, 4]) / 1000)  # sample std, n - 1
    assert stats.samples == (0.004, 0.001, 0.003, 0.002)  # in the order they ran


def test_one_run_has_no_spread() -> None:
    one = TimingStats.from_samples([0.5])
    assert one.median == one.min == one.max == one.p25 == one.p75 == one.mean == 0.5
    assert one.std == 0.0 and one.iqr == 0.0


def test_dict_is_in_milliseconds_with_the_unit_in_every_key() -> None:
    data = TimingStats.from_samples([0.004, 0.001, 0.003, 0.002]).to_dict()
    assert list(data) == [f"{k}_ms" for k in STAT_KEYS] + ["runs_ms", "n"]
    assert data["median_ms"] == pytest.approx(2.5) and data["p25_ms"] == pytest.approx(1.75)
    assert data["iqr_ms"] == pytest.approx(1.5)
    assert data["runs_ms"] == pytest.approx([4.0, 1.0, 3.0, 2.0]) and data["n"] == 4
    assert TimingStats.from_dict(data).samples == pytest.approx((0.004, 0.001, 0.003, 0.002))


def test_scaling_multiplies_every_run() -> None:
    stats = TimingStats.from_samples([1.0, 3.0]).scaled(2.5)
    assert stats.samples == (2.5, 7.5) and stats.median == pytest.approx(5.0)


@pytest.mark.parametrize("bad", [[], [float("nan")], [-0.1], [float("inf")]])
def test_no_runs_or_impossible_times_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        TimingStats.from_samples(bad)
