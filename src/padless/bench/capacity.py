"""Capacity search: the highest Poisson rate a server holds under a p99 bound, by repeated :func:`run_load` runs."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from padless.bench.loadtest import check_loopback, run_load


def step_seconds(rate: float, duration: float, min_requests: int) -> float:
    """How long a load step at ``rate`` runs: ``duration``, stretched so that it holds ``min_requests`` requests."""
    return max(duration, min_requests / rate)


# A run "kept up" unless the median latency of its last third is over KEEP_UP_FACTOR times its first third's *and*
# higher by more than KEEP_UP_SHARE of the p99 limit (so a jitter from 10 to 21 ms on an idle server is no failure).
KEEP_UP_FACTOR = 2.0
KEEP_UP_SHARE = 0.125


def verdict(report: dict[str, Any], p99_limit_ms: float) -> tuple[bool, str]:
    """Whether a run held the limit, and why not. Any non-ok outcome fails: a 429 or a timeout is not capacity.

    So does a run whose queue was still growing at its end (its median latency climbing from the first third to the
    last, see the constants above): a short run at a rate the server cannot sustain can end before the backlog
    reaches the p99 limit, and would otherwise pass at a rate whose p99 a longer run puts at seconds."""
    bad = {k: v for k, v in report["outcomes"].items() if k != "ok" and v}
    if bad:
        return False, "non-ok outcomes: " + ", ".join(f"{k}={v}" for k, v in bad.items())
    p99 = report["latency_ms"]["p99"]
    if p99 is None:
        return False, "no successful requests"
    if p99 > p99_limit_ms:
        return False, f"p99 {p99:.1f} ms > {p99_limit_ms:g} ms"
    first, _, last = report.get("latency_p50_ms_by_third") or (None, None, None)
    if first is not None and last is not None and last > KEEP_UP_FACTOR * first and \
            last - first > KEEP_UP_SHARE * p99_limit_ms:
        return False, f"did not keep up: median latency rose from {first:.1f} ms (first third) to {last:.1f} ms " \
                      "(last third)"
    return True, f"p99 {p99:.1f} ms"


async def find_capacity(
    url: str,
    *,
    texts: list[str],
    p99_limit_ms: float = 200.0,
    duration: float = 10.0,
    start_rate: float = 10.0,
    max_rate: float = 5000.0,
    min_rate: float = 0.5,
    growth: float = 2.0,
    bisect_steps: int = 2,
    budget_s: float = 180.0,
    inputs_per_request: int = 1,
    timeout: float = 5.0,
    seed: int = 0,
    max_in_flight: int = 2000,
    headers: dict[str, str] | None = None,
    settle_s: float = 0.5,
    min_requests: int = 0,
    route: str = "/predict",
) -> dict[str, Any]:
    """The highest offered rate (requests/s) at which a :func:`run_load` of ``duration`` s held p99 ≤ ``p99_limit_ms``
    with every request ``ok`` (no 429, no error, no timeout, nothing dropped) and without a queue still growing at
    its end (see ``verdict``).

    Search: from ``start_rate``, multiply by ``growth`` while runs pass (up to ``max_rate``); if the first run fails,
    divide instead (down to ``min_rate``). Once a passing and a failing rate bracket the capacity, ``bisect_steps``
    geometric midpoints refine it. A run is only started if it can finish within ``budget_s`` from the start even in
    the worst case (its duration + ``timeout`` plus ``settle_s``), so the whole search is bounded by ``budget_s`` (plus
    a few metrics requests); ``timeout`` defaults low because a request slower than that has failed any sensible p99
    limit anyway. Every run uses the same ``seed``, so rates are compared on the same arrival pattern shape.
    ``min_requests`` stretches a run at a low rate to ``min_requests / rate`` seconds: the p99 of 80 requests is
    their single slowest, so a short run at a low rate passes or fails on one request. ``route``: what each request
    is (:func:`run_load`).

    Returns ``rate`` (``None`` if no run passed), ``report`` (the :func:`run_load` report at ``rate``, or ``None``),
    ``p99_limit_ms``, ``failed_rate`` (lowest failing rate seen above ``rate``, or ``None``), ``stopped_by``
    (``"bracketed"``, ``"max_rate"``, ``"min_rate"`` or ``"budget"``), ``elapsed_s`` and ``trials`` (one dict per run:
    ``rate, passed, reason, p99_ms, throughput_rps``).
    """
    if growth <= 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    if not 0 < min_rate <= start_rate <= max_rate:
        raise ValueError("need 0 < min_rate <= start_rate <= max_rate")
    if bisect_steps < 0:
        raise ValueError("bisect_steps must be non-negative")
    check_loopback(url)
    search = _Search(url, budget_s=budget_s, settle_s=settle_s, p99_limit_ms=p99_limit_ms, timeout=timeout,
                     length=lambda rate: step_seconds(rate, duration, min_requests),
                     load={"texts": texts, "inputs_per_request": inputs_per_request, "timeout": timeout, "seed": seed,
                           "max_in_flight": max_in_flight, "headers": headers, "route": route})
    stopped_by = await search.bracket(start_rate, growth, min_rate, max_rate)
    if stopped_by == "bracketed":
        stopped_by = await search.bisect(bisect_steps)
    return {
        "rate": search.best_rate,
        "report": search.best_report,
        "p99_limit_ms": p99_limit_ms,
        "failed_rate": search.fail_rate,
        "stopped_by": stopped_by,
        "elapsed_s": time.monotonic() - search.started,
        "trials": search.trials,
    }


class _Search:
    """One capacity search's runs so far: the trials, the best passing rate (and its report), the lowest failing
    rate."""

    def __init__(self, url: str, *, budget_s: float, settle_s: float, p99_limit_ms: float, timeout: float,
                 length: Callable[[float], float], load: dict[str, Any]) -> None:
        self.url, self.budget_s, self.settle_s, self.p99_limit_ms = url, budget_s, settle_s, p99_limit_ms
        self.timeout, self.length, self.load = timeout, length, load
        self.started = time.monotonic()
        self.trials: list[dict[str, Any]] = []
        self.best_rate: float | None = None
        self.best_report: dict[str, Any] | None = None
        self.fail_rate: float | None = None

    async def trial(self, rate: float) -> bool | None:
        """Run one load at ``rate``; None when the budget does not allow it."""
        # + 1 s for the /metrics and /info requests
        worst_trial = self.length(rate) + self.timeout + self.settle_s + 1.0
        if time.monotonic() - self.started + worst_trial > self.budget_s:
            return None
        if self.trials:
            await asyncio.sleep(self.settle_s)  # let the server finish anything left from the previous run
        report = await run_load(self.url, rate=rate, duration=self.length(rate), **self.load)
        passed, reason = verdict(report, self.p99_limit_ms)
        self.trials.append({"rate": rate, "passed": passed, "reason": reason, "p99_ms": report["latency_ms"]["p99"],
                            "throughput_rps": report["throughput_rps"], "requests": report.get("scheduled")})
        if passed and (self.best_rate is None or rate > self.best_rate):
            self.best_rate, self.best_report = rate, report
        if not passed and (self.fail_rate is None or rate < self.fail_rate):
            self.fail_rate = rate
        return passed

    async def bracket(self, rate: float, growth: float, min_rate: float, max_rate: float) -> str:
        """From ``rate``, grow while runs pass or shrink while they fail, until a passing and a failing rate bracket
        the capacity (``"bracketed"``) or a limit or the budget stops the search (its name)."""
        first = await self.trial(rate)
        if first is None:
            return "budget"
        if first:
            # Grow until a failure brackets the capacity.
            while self.fail_rate is None:
                if rate >= max_rate:
                    return "max_rate"
                rate = min(rate * growth, max_rate)
                if await self.trial(rate) is None:
                    return "budget"
        else:
            # Even the start rate failed: shrink until something passes.
            while self.best_rate is None:
                if rate <= min_rate:
                    return "min_rate"
                rate = max(rate / growth, min_rate)
                if await self.trial(rate) is None:
                    return "budget"
        return "bracketed"

    async def bisect(self, steps: int) -> str:
        """Refine a bracketed capacity by ``steps`` midpoints; ``"bracketed"``, or ``"budget"`` if it ran out."""
        if self.best_rate is None or self.fail_rate is None:
            return "bracketed"
        for _ in range(steps):
            # Geometric midpoint: capacity is searched on a ratio scale, matching the geometric growth.
            mid = math.sqrt(self.best_rate * self.fail_rate)
            if await self.trial(mid) is None:
                return "budget"
        return "bracketed"
