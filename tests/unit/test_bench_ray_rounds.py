"""``padless bench ray``'s pooling of the same-load rounds (pure: reports in, one pooled summary out)."""

from __future__ import annotations

from typing import Any

import pytest

from padless.bench.loadstats import latency_summary, percentile
from padless.bench.ray import capacity_ratio, comparison_base, pool_rounds


def _report(short: list[float], long: list[float], rate: float = 10.0, timeouts: int = 0) -> dict[str, Any]:
    every = sorted(short + long)
    return {"offered_rate": rate, "scheduled": len(every) + timeouts,
            "outcomes": {"ok": len(every), "timeout": timeouts},
            "latency_ms": {"p50": percentile(every, 50), "p99": percentile(every, 99), "max": every[-1]},
            "latency_ms_by_group": {"long": {"p99": percentile(long, 99)}, "short": {"p99": percentile(short, 99)}},
            "ok_latencies_s_by_group": {"long": [ms / 1000 for ms in long], "short": [ms / 1000 for ms in short]}}


def test_rounds_are_pooled_before_the_percentile_is_read() -> None:
    # Round 1 fast, round 2 slow: the pooled p99 is the p99 of all 200 short requests, not a mean of two p99s.
    fast = _report([10.0] * 99 + [50.0], [100.0] * 10)
    slow = _report([20.0] * 97 + [300.0, 400.0, 500.0], [200.0] * 10, timeouts=1)
    pooled = pool_rounds([fast, slow])
    short = [10.0] * 99 + [50.0] + [20.0] * 97 + [300.0, 400.0, 500.0]
    assert pooled["by_group"]["short"] == latency_summary([ms / 1000 for ms in short])
    assert pooled["by_group"]["short"]["count"] == 200
    assert pooled["by_group"]["short"]["p99"] == pytest.approx(300.0)  # the 198th of 200; the rounds' own: 10, 400
    assert pooled["by_group"]["long"]["count"] == 20 and pooled["by_group"]["long"]["p99"] == pytest.approx(200.0)
    assert pooled["latency_ms"]["p99"] == pytest.approx(percentile(sorted(short + [100.0] * 10 + [200.0] * 10), 99))
    assert pooled["latency_ms"]["max"] == pytest.approx(500.0) and pooled["latency_ms"]["count"] == 220
    assert pooled["requests"] == 221 and pooled["outcomes"] == {"ok": 220, "timeout": 1}
    # Each round's own figures stay, in order.
    assert [r["by_group"]["short"]["p99"] for r in pooled["rounds"]] == [10.0, 400.0]
    assert pooled["offered_rate"] == 10.0


def test_no_reports_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reports"):
        pool_rounds([])


def test_the_comparison_runs_at_one_pools_capacity_or_says_what_it_ran_at_instead() -> None:
    assert comparison_base({"one-pool": 28.3, "tiers": 33.6}) == (28.3, "one-pool capacity")
    # One pool held no rate: the tiers' capacity, named as theirs (not a made-up rate labelled as one pool's).
    assert comparison_base({"one-pool": None, "tiers": 14.1}) == (14.1, "tiers capacity")
    rate, name = comparison_base({"one-pool": None, "tiers": None})
    assert rate == 1.0 and "no configuration held" in name


def test_capacity_ratio_is_none_not_zero_when_a_configuration_held_no_rate() -> None:
    ratio, verdict = capacity_ratio({"one-pool": 28.3, "tiers": 33.6})
    assert ratio == pytest.approx(33.6 / 28.3) and "tiers 33.6 / one pool 28.3" in verdict
    # One pool held nothing while the tiers held 14.1: not a ratio of 0 (which would read as tiers being worse).
    ratio, verdict = capacity_ratio({"one-pool": None, "tiers": 14.1})
    assert ratio is None and "tiers higher" in verdict
    ratio, verdict = capacity_ratio({"one-pool": 10.0, "tiers": None})
    assert ratio is None and "tiers lower" in verdict
    assert capacity_ratio({"one-pool": None, "tiers": None}) == (
        None, "neither configuration held the p99 limit at any rate tried")
