"""The tuner's search on a synthetic cost with noise: it finds the optimum, does not chase noise, respects its
deadline and keeps a valid best at every moment."""

from __future__ import annotations

import random
from typing import Any

import pytest

from padless.tune.search import CoordinateSearch, Dimension, Interleaved, Outcome

TOKENS = Dimension("tokens", (1024, 2048, 4096, 8192, 16384, 32768))
ROWS = Dimension("rows", (16, 32, 64, 128, 256))
THREADS = Dimension("threads", (1, 2, 4))
START = {"tokens": 8192, "rows": 128, "threads": 4}


def bowl(point: dict[str, Any]) -> float:
    """Throughput peaking at tokens=2048, rows=32, threads=2 (100), falling 8% per step away in each setting."""
    steps = (abs(TOKENS.values.index(point["tokens"]) - 1) + abs(ROWS.values.index(point["rows"]) - 1)
             + abs(THREADS.values.index(point["threads"]) - 1))
    return 100.0 * 0.92 ** steps


class Clock:
    """A fake clock each measurement advances by one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def noisy(figure: Any, clock: Clock, rng: random.Random, sd: float) -> Any:
    def measure(point: dict[str, Any]) -> float:
        clock.now += 1.0
        return figure(point) * (1 + rng.gauss(0, sd))
    return measure


@pytest.mark.parametrize("seed", range(5))
def test_finds_the_optimum_through_noise(seed: int) -> None:
    clock, rng = Clock(), random.Random(seed)
    search = CoordinateSearch([TOKENS, ROWS, THREADS], START, Interleaved(noisy(bowl, clock, rng, 0.01), repeats=3),
                              deadline=10_000, clock=clock)
    assert search.run() == {"tokens": 2048, "rows": 32, "threads": 2}
    assert search.stopped_by == "converged"
    # Not a grid: far fewer points than the 90 of the full product, each measured 3 times with the best.
    assert len(search.outcomes) < 20
    assert all(len(o.samples) == len(o.best_samples) == 3 for o in search.outcomes)


def test_does_not_chase_noise_on_a_flat_figure() -> None:
    """A figure with no true optimum anywhere, 3% noise: over 40 searches, almost every one stays at the start."""
    moved = 0
    for seed in range(40):
        clock, rng = Clock(), random.Random(seed)
        search = CoordinateSearch([TOKENS, ROWS, THREADS], START,
                                  Interleaved(noisy(lambda p: 100.0, clock, rng, 0.03), repeats=3),
                                  deadline=10_000, clock=clock)
        moved += search.run() != START
    assert moved <= 4, f"{moved} of 40 searches moved on noise alone"


def test_a_gain_below_the_noise_is_not_kept_but_one_above_is() -> None:
    rng = random.Random(7)
    small = Interleaved(lambda p: p["x"] * (1 + rng.gauss(0, 0.05)), repeats=3)
    assert not small({"x": 100.0}, {"x": 101.0}).kept  # 1% under 5% noise
    big = Interleaved(lambda p: p["x"] * (1 + rng.gauss(0, 0.01)), repeats=3)
    outcome = big({"x": 100.0}, {"x": 130.0})
    assert outcome.kept and outcome.figure is not None and outcome.best_figure is not None
    assert outcome.figure > 1.2 * outcome.best_figure


def test_measurements_interleave() -> None:
    order: list[Any] = []
    Interleaved(lambda p: order.append(p["x"]) or 1.0, repeats=4)({"x": "best"}, {"x": "cand"})
    assert order == ["best", "cand", "cand", "best", "best", "cand", "cand", "best"]


def test_stops_at_the_deadline_with_a_valid_best() -> None:
    clock, rng = Clock(), random.Random(0)
    search = CoordinateSearch([TOKENS, ROWS, THREADS], START, Interleaved(noisy(bowl, clock, rng, 0.01), repeats=3),
                              deadline=20, clock=clock)
    best = search.run()
    assert search.stopped_by == "time"
    assert clock.now <= 20 + 6  # the last challenge may not start unless the longest one so far still fits
    assert bowl(best) >= bowl(START)
    assert best in [START] + [o.point for o in search.outcomes if o.kept]


def test_invalid_points_are_skipped() -> None:
    streams = Dimension("streams", (1, 2, 4))
    seen: list[dict[str, Any]] = []

    def challenge(best: dict[str, Any], cand: dict[str, Any]) -> Outcome:
        seen.append(cand)
        return Outcome(cand, best, kept=cand["streams"] > best["streams"])

    search = CoordinateSearch([streams, THREADS], {"streams": 1, "threads": 2}, challenge, deadline=1e9,
                              valid=lambda p: p["streams"] <= p["threads"])
    best = search.run()
    assert all(p["streams"] <= p["threads"] for p in seen)
    assert best["streams"] == 2


def test_ctrl_c_keeps_the_best_so_far() -> None:
    calls = 0

    def challenge(best: dict[str, Any], cand: dict[str, Any]) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return Outcome(cand, best, kept=True)

    search = CoordinateSearch([TOKENS], {"tokens": 1024}, challenge, deadline=1e9)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    assert search.best == {"tokens": 4096}


def test_the_start_must_be_on_the_grid() -> None:
    with pytest.raises(ValueError, match="tokens=1000"):
        CoordinateSearch([TOKENS], {"tokens": 1000}, lambda b, c: Outcome(c, b, False), deadline=1)
