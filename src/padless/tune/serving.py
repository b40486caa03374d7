"""The serving half of ``padless tune``: for a p99 bound, the batcher settings with the highest capacity, each
point a real ``padless serve`` process driven with one-text Poisson load (:func:`padless.bench.capacity.find_capacity`,
the search ``padless bench serve`` runs).

A point sets ``max_batch_tokens``, ``max_batch_size``, ``max_wait_ms`` and the engine's ``threads`` (fewer than the
cores can leave one to the event loop and the tokenizer, which share the machine with the model). The defaults'
capacity is searched from scratch; a candidate then races the best on a ladder: it must hold the rate one ``step``
above the best's capacity, keeps climbing while it holds, and its top rate is run once more. It wins only if that
repeat holds too: a single lucky run at a rate the best failed is not enough.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from padless.bench.capacity import find_capacity, step_seconds, verdict
from padless.bench.loadtest import run_load
from padless.bench.servers import free_port, start_server, stop_server
from padless.config import BatchConfig, QueueConfig
from padless.machine import usable_cores
from padless.tune.search import Dimension, Outcome, Point, key

TOKEN_STEPS = (512, 1024, 2048, 4096, 8192, 16384)
ROW_STEPS = (8, 16, 32, 64, 128, 256)
WAIT_STEPS_MS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
STEP = 1.15  # the ladder's rung: a candidate must hold 15% more than the best, twice
MIN_RATE = 5.0  # req/s: a bound the defaults cannot hold at this rate is reported as not tuned, not searched lower


def start_point() -> Point:
    """``padless serve``'s defaults as a point (threads 0, every core, as the number it resolves to)."""
    return {"max_batch_tokens": BatchConfig.max_batch_tokens, "max_batch_size": BatchConfig.max_batch_size,
            "max_wait_ms": QueueConfig.max_wait_ms, "threads": usable_cores()}


def dimensions(p99_ms: float, max_length: int) -> list[Dimension]:
    """The token budget first (what bounds one batch's time), then the wait, the threads, then the row cap. Waits
    over a quarter of the bound and budgets under the model's token limit are left out; the defaults are always
    in."""
    start = start_point()
    tokens = sorted({t for t in TOKEN_STEPS if t >= max_length} | {start["max_batch_tokens"]})
    waits = sorted({w for w in WAIT_STEPS_MS if w <= p99_ms / 4} | {start["max_wait_ms"]})
    rows = sorted(set(ROW_STEPS) | {start["max_batch_size"]})
    return [Dimension("max_batch_tokens", tuple(tokens)), Dimension("max_wait_ms", tuple(waits)),
            Dimension("threads", tuple(range(1, start["threads"] + 1))), Dimension("max_batch_size", tuple(rows))]


class ServingTrials:
    """Capacity at ``p99_ms`` of ``padless serve`` processes, one point at a time (the running server is kept while
    the point stays the same). ``deadline`` is on :func:`time.monotonic`; no load run starts that could not end by
    it. Logs go to ``log_dir``."""

    def __init__(self, *, model: str, task: str, backend: str, texts: list[str], p99_ms: float, deadline: float,
                 log_dir: Path, route: str, duration: float = 5.0, min_requests: int = 150) -> None:
        self.model, self.task, self.backend, self.texts, self.p99_ms = model, task, backend, texts, p99_ms
        self.deadline, self.log_dir, self.route = deadline, log_dir, route
        self.duration, self.min_requests = duration, min_requests
        self.capacity: dict[Any, float | None] = {}
        self.running: tuple[Any, subprocess.Popen[bytes], str] | None = None

    def close(self) -> None:
        if self.running is not None:
            stop_server(self.running[1])
            self.running = None

    def _url(self, point: Point) -> str:
        if self.running is not None and self.running[0] == key(point):
            return self.running[2]
        self.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "padless.cli.main", "serve", "--model", self.model, "--task", self.task,
               "--backend", self.backend, "--log-level", "warning", "--cache-size", "0",
               "--threads", str(point["threads"]), "--max-batch-tokens", str(point["max_batch_tokens"]),
               "--max-batch-size", str(point["max_batch_size"]),
               "--max-wait-ms", str(point["max_wait_ms"]), "--port", str(port)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = start_server(cmd, url, "/ready", self.log_dir / "tune-server.log")
        self.running = (key(point), proc, url)
        return url

    def _budget(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _search(self, point: Point, **kwargs: Any) -> dict[str, Any]:
        return asyncio.run(find_capacity(self._url(point), texts=self.texts, p99_limit_ms=self.p99_ms,
                                         duration=self.duration, budget_s=self._budget(),
                                         min_requests=self.min_requests, route=self.route, **kwargs))

    def alone_p99_ms(self, point: Point, seconds: float = 4.0) -> float | None:
        """The p99 latency (ms) of requests sent one at a time (none waits for another): the floor under any
        capacity's p99. A bound below it cannot be held at any rate."""
        report = asyncio.run(run_load(self._url(point), rate=50.0, duration=seconds, texts=self.texts,
                                      route=self.route, timeout=5.0, max_in_flight=1, seed=3))
        p99: float | None = report["latency_ms"]["p99"]
        return p99

    def first(self, point: Point, start_rate: float) -> float | None:
        """The capacity of ``point`` searched from ``start_rate`` (growing by 1.5×, then two midpoints), then
        climbed on the ladder as a candidate would be (:meth:`climb`), so that the defaults and every challenger
        are held to the same rule: the highest rung held twice."""
        found = self._search(point, start_rate=start_rate, growth=1.5, bisect_steps=2,
                             min_rate=min(MIN_RATE, start_rate))
        rate = found["rate"]
        if rate is not None:
            climbed, _ = self.climb(point, rate * STEP)
            rate = climbed or rate
        self.capacity[key(point)] = rate
        return rate

    def climb(self, point: Point, rung: float) -> tuple[float | None, str]:
        """The highest rate from ``rung`` up (by ``STEP``) that ``point`` holds, its top rate held a second time;
        None (and why) if it does not hold ``rung``, the repeat fails, or no time is left to repeat it."""
        found = self._search(point, start_rate=rung, min_rate=rung, growth=STEP, bisect_steps=0)
        rate = found["rate"]
        if rate is None:
            return None, f"did not hold {rung:.1f} req/s"
        if time.monotonic() + step_seconds(rate, self.duration, self.min_requests) + 10 > self.deadline:
            return None, "no time left to repeat its top rate"
        held, reason = self._held(point, rate, seed=1)
        if not held:
            return None, f"held {rate:.1f} req/s once, then {reason}"
        return rate, f"held {rate:.1f} req/s twice"

    def challenge(self, best: Point, candidate: Point) -> Outcome:
        """The ladder race of the module docstring."""
        best_rate = self.capacity.get(key(best))
        if best_rate is None:
            raise ValueError("the best point has no capacity yet: call first() on it")
        rate, note = self.climb(candidate, best_rate * STEP)
        self.capacity[key(candidate)] = rate
        kept = rate is not None and rate > best_rate
        return Outcome(candidate, best, kept, figure=rate, best_figure=best_rate, note=note)

    def holds(self, point: Point, rate: float, runs: int = 2) -> bool:
        """Whether ``point`` holds ``rate`` in ``runs`` runs in a row (the defaults, re-checked at the chosen
        point's capacity before the choice is written)."""
        return all(self._held(point, rate, seed=2 + run)[0] for run in range(runs))

    def _held(self, point: Point, rate: float, *, seed: int) -> tuple[bool, str]:
        """One load step at ``rate`` outside the capacity search (a repeat), judged as the search judges its own."""
        report = asyncio.run(run_load(self._url(point), rate=rate, texts=self.texts, route=self.route,
                                      duration=step_seconds(rate, self.duration, self.min_requests),
                                      timeout=5.0, seed=seed))
        return verdict(report, self.p99_ms)

    def recheck_cost(self, rate: float) -> float:
        """Seconds :meth:`holds` may take at ``rate``, a server start included."""
        return 2 * (step_seconds(rate, self.duration, self.min_requests) + 5.0 + 1.0) + 20.0
