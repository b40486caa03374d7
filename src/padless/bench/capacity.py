"""Capacity search: the highest Poisson rate a server holds under a p99 bound, by repeated :func:`run_load` runs."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from padless.bench.loadtest import check_loopback, run_load


def step_seconds(rate: float, duration: float, min_requests: int) -> float:
    """How long a load step at ``rate`` runs: ``duration``, stretched so that it holds ``min_requests`` requests."""
    return max(duration, min_requests / rate)


# A run "kept up" unless the median latency of its last third is over KEEP_UP_FACTOR times its first third's *and*
# higher by more than KEEP_UP_SHARE of the p99 limit (so a jitter from 10 to 21 ms on an idle server is no failure).
KEEP_UP_FACTOR = 2.0
KEEP_UP_SHARE = 0.125


def _verdict(report: dict[str, Any], p99_limit_ms: float) -> tuple[bool, str]:
    """Whether a run held the limit, and why not. Any non-ok outcome fails: a 429 or a timeout is not capacity.

    So does a run whose queue was still growing at its end (its median latency climbing from the first third to the
    last, see the constants above): a short run at a rate the server cannot sustain can end before the backlog
    reaches the p99 limit, and would otherwise pass at a rate whose p99 a longer run puts at seconds (``padless bench
    ray`` saw a capacity of 56.6 req/s from 8 s steps at which 28 s of the same load had a p99 of 1.5 s)."""
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
) -> dict[str, Any]:
    """The highest offered rate (requests/s) at which a :func:`run_load` of ``duration`` s held p99 ≤ ``p99_limit_ms``
    with every request ``ok`` (no 429, no error, no timeout, nothing dropped) and without a queue still growing at
    its end (see ``_verdict``).

    Search: from ``start_rate``, multiply by ``growth`` while runs pass (up to ``max_rate``); if the first run fails,
    divide instead (down to ``min_rate``). Once a passing and a failing rate bracket the capacity, ``bisect_steps``
    geometric midpoints refine it. A run is only started if it can finish within ``budget_s`` from the start even in
    the worst case (its duration + ``timeout`` plus ``settle_s``), so the whole search is bounded by ``budget_s`` (plus
    a few metrics requests); ``timeout`` defaults low because a request slower than that has failed any sensible p99
    limit anyway. Every run uses the same ``seed``, so rates are compared on the same arrival pattern shape.
    ``min_requests`` stretches a run at a low rate to ``min_requests / rate`` seconds: the p99 of 80 requests is
    their single slowest, so a short run at a low rate passes or fails on one request.

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
    started = time.monotonic()

    def length(rate: float) -> float:
        return step_seconds(rate, duration, min_requests)

    trials: list[dict[str, Any]] = []
    best_rate: float | None = None
    best_report: dict[str, Any] | None = None
    fail_rate: float | None = None

    async def trial(rate: float) -> bool | None:
        """Run one load at ``rate``; None when the budget does not allow it."""
        nonlocal best_rate, best_report, fail_rate
        worst_trial = length(rate) + timeout + settle_s + 1.0  # + 1 s for the /metrics and /info requests
        if time.monotonic() - started + worst_trial > budget_s:
            return None
        if trials:
            await asyncio.sleep(settle_s)  # let the server finish anything left from the previous run
        report = await run_load(url, rate=rate, duration=length(rate), texts=texts,
                                inputs_per_request=inputs_per_request, timeout=timeout, seed=seed,
                                max_in_flight=max_in_flight, headers=headers)
        passed, reason = _verdict(report, p99_limit_ms)
        trials.append({"rate": rate, "passed": passed, "reason": reason, "p99_ms": report["latency_ms"]["p99"],
                       "throughput_rps": report["throughput_rps"], "requests": report.get("scheduled")})
        if passed and (best_rate is None or rate > best_rate):
            best_rate, best_report = rate, report
        if not passed and (fail_rate is None or rate < fail_rate):
            fail_rate = rate
        return passed

    stopped_by = "bracketed"
    rate = start_rate
    first = await trial(rate)
    if first is None:
        stopped_by = "budget"
    elif first:
        # Grow until a failure brackets the capacity.
        while fail_rate is None:
            if rate >= max_rate:
                stopped_by = "max_rate"
                break
            rate = min(rate * growth, max_rate)
            if await trial(rate) is None:
                stopped_by = "budget"
                break
    else:
        # Even the start rate failed: shrink until something passes.
        while best_rate is None:
            if rate <= min_rate:
                stopped_by = "min_rate"
                break
            rate = max(rate / growth, min_rate)
            if await trial(rate) is None:
                stopped_by = "budget"
                break
    if best_rate is not None and fail_rate is not None and stopped_by == "bracketed":
        for _ in range(bisect_steps):
            # Geometric midpoint: capacity is searched on a ratio scale, matching the geometric growth.
            mid = math.sqrt(best_rate * fail_rate)
            if await trial(mid) is None:
                stopped_by = "budget"
                break

    return {
        "rate": best_rate,
        "report": best_report,
        "p99_limit_ms": p99_limit_ms,
        "failed_rate": fail_rate,
        "stopped_by": stopped_by,
        "elapsed_s": time.monotonic() - started,
        "trials": trials,
    }
