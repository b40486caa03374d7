"""The serving search's ladder race, on a fake server whose capacity is known: a candidate wins only by holding a
rate above the best's capacity twice; the defaults are climbed by the same rule; the dimensions always hold the
defaults and leave out waits too long for the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from padless.config import BatchConfig, QueueConfig
from padless.tune import serving
from padless.tune.search import key


class FakeServer:
    """Holds any rate up to ``capacity[point]``; ``flaky`` points pass their first run at one rung above and fail
    the repeat."""

    def __init__(self, capacity: dict[Any, float], flaky: set[Any] = frozenset()) -> None:  # type: ignore[assignment]
        self.capacity, self.flaky, self.point, self.runs = capacity, flaky, None, 0

    def holds(self, rate: float) -> bool:
        self.runs += 1
        return rate <= self.capacity[self.point]


@pytest.fixture
def trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[serving.ServingTrials, FakeServer]:
    server = FakeServer({})
    t = serving.ServingTrials(model="m", task="classify", backend="onnx", texts=["a"], p99_ms=200, deadline=1e12,
                              log_dir=tmp_path, route="/predict")

    def url(point: dict[str, Any]) -> str:
        server.point = key(point)
        return "http://127.0.0.1:1"

    def search(point: dict[str, Any], *, start_rate: float, growth: float, min_rate: float,
               bisect_steps: int) -> dict[str, Any]:
        url(point)
        best, rate = None, start_rate
        while rate <= 10_000 and server.holds(rate):  # climb while it holds (bisection left out: whole rungs)
            best, rate = rate, rate * growth
        return {"rate": best}

    async def run_load(url: str, *, rate: float, **kwargs: Any) -> dict[str, Any]:
        held = server.holds(rate) and server.point not in server.flaky
        return {"held": held}

    monkeypatch.setattr(t, "_url", url)
    monkeypatch.setattr(t, "_search", search)
    monkeypatch.setattr(serving, "run_load", run_load)
    monkeypatch.setattr(serving, "verdict", lambda report, p99: (report["held"], "p99 too high"))
    return t, server


def point(tokens: int, wait: float = 2.0) -> dict[str, Any]:
    return {"max_batch_tokens": tokens, "max_batch_size": 128, "max_wait_ms": wait, "threads": 2}


def test_a_candidate_must_hold_more_than_the_best_twice(trials: tuple[serving.ServingTrials, FakeServer]) -> None:
    t, server = trials
    server.capacity = {key(point(8192)): 100.0, key(point(4096)): 140.0, key(point(2048)): 100.0,
                       key(point(1024)): 140.0}
    server.flaky = {key(point(1024))}
    base = t.first(point(8192), start_rate=20.0)
    assert base is not None and 100.0 / serving.STEP < base <= 100.0  # the defaults climbed to their top rung
    better = t.challenge(point(8192), point(4096))
    assert better.kept and better.figure is not None and better.figure > base and "twice" in better.note
    same = t.challenge(point(8192), point(2048))
    assert not same.kept and same.figure is None and "did not hold" in same.note
    lucky = t.challenge(point(8192), point(1024))
    assert not lucky.kept and "once, then" in lucky.note


def test_the_defaults_are_rechecked_at_the_chosen_capacity(trials: tuple[serving.ServingTrials, FakeServer]) -> None:
    t, server = trials
    server.capacity = {key(point(8192)): 100.0}
    assert t.holds(point(8192), 90.0) and not t.holds(point(8192), 110.0)


def test_dimensions_hold_the_defaults_and_fit_the_bound() -> None:
    dims = {d.name: d.values for d in serving.dimensions(p99_ms=20, max_length=512)}
    start = serving.start_point()
    assert start["max_batch_tokens"] == BatchConfig.max_batch_tokens and start["max_wait_ms"] == QueueConfig.max_wait_ms
    for name, values in dims.items():
        assert start[name] in values and list(values) == sorted(values)
    assert max(dims["max_wait_ms"]) <= 5.0  # a quarter of a 20 ms bound
    assert min(dims["max_batch_tokens"]) >= 512  # one full-length input must fit a batch
