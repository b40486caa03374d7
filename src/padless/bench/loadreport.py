"""What one run of the load generator (:func:`padless.bench.loadtest.run_load`) adds up to: each answer's outcome
(:func:`classify`) and the run's report (:func:`build_report`). Pure: no network, no clock; the sending loop
passes in what it measured.

Contract: every scheduled request is counted in exactly one outcome of :data:`~padless.bench.loadstats.OUTCOMES`
(``sent`` plus ``dropped_client_side`` is ``scheduled``), so a run never loses a request from its report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from padless.bench.loadstats import OUTCOMES, latency_summary, percentile, server_stats


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def classify(status: int, body: bytes, n_inputs: int) -> tuple[str, str | None]:
    """Outcome name and, for error bodies, the server's ``error_type``."""
    if status == 200:
        parsed = _json_or_none(body)
        good = isinstance(parsed, list) and len(parsed) == n_inputs and all(isinstance(r, list) for r in parsed)
        return ("ok" if good else "bad_response"), None
    parsed = _json_or_none(body)
    error_type = str(parsed["error_type"]) if isinstance(parsed, dict) and parsed.get("error_type") is not None \
        else None
    if status == 429:
        return "rejected_429", error_type
    if 400 <= status < 500:
        return "client_error_4xx", error_type
    if 500 <= status < 600:
        return "server_error_5xx", error_type
    return "other_status", error_type


class Result:
    """What one request task produced; kept tiny since a long run makes tens of thousands. ``lag`` is None for a
    straggler cancelled after the drain window (it is counted as a timeout and nothing else)."""

    __slots__ = ("outcome", "status", "latency", "lag", "error_type", "retry_after", "detail")

    def __init__(self, outcome: str, *, status: int | None = None, latency: float | None = None,
                 lag: float | None = 0.0, error_type: str | None = None, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        self.outcome = outcome
        self.status = status
        self.latency = latency
        self.lag = lag
        self.error_type = error_type
        self.retry_after = retry_after
        self.detail = detail


CUT_OFF = Result("timeout", lag=None)  # a straggler still outstanding after the drain window


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What the sending loop measured besides each request's :class:`Result` (times on the event loop's clock)."""

    predict_url: str
    rate: float
    duration: float
    seed: int
    inputs_per_request: int
    timeout: float
    max_in_flight: int
    offsets: Sequence[float]  # each request's send time after ``start``
    start: float  # schedule zero
    end: float  # after the last straggler was waited for
    last_done: float  # the last completion; 0.0 if nothing completed
    cpu_used: float  # this process's CPU seconds over the run
    peak_in_flight: int
    stragglers: int  # cancelled after the drain window


def build_report(slots: Sequence[Result | None], facts: RunFacts, *, n_texts: int, groups: Sequence[str] | None,
                 keep_latencies: bool, warnings: list[str], metrics_before: dict[str, float] | None,
                 metrics_after: dict[str, float] | None, info: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON-ready report of :func:`~padless.bench.loadtest.run_load` (its docstring lists the keys) from one
    slot per scheduled request, in schedule order: a :class:`Result`, :data:`CUT_OFF`, or None for a request that
    was never sent (``max_in_flight`` outstanding). ``warnings`` already holds the sender's own; this adds the
    measurement's."""
    k = facts.inputs_per_request
    tally = _Tally()
    for i, result in enumerate(slots):
        tally.add(result, None if groups is None else groups[(i * k) % n_texts],
                  min(2, int(3 * facts.offsets[i] / facts.duration)))
    outcomes = tally.outcomes
    # Throughput over the span the work really took: dividing by ``duration`` alone would overstate a server that
    # finished its backlog long after the last send.
    window = max(facts.duration, (facts.last_done or facts.end) - facts.start)
    ok = outcomes["ok"]
    lag_ms = sorted(x * 1000.0 for x in tally.lags)
    lag_summary = {"p50": percentile(lag_ms, 50), "p99": percentile(lag_ms, 99), "max": lag_ms[-1] if lag_ms else None}
    cpu_percent = 100.0 * facts.cpu_used / window if window > 0 else None
    server = server_stats(metrics_before, metrics_after) if metrics_before is not None and metrics_after else None

    grouped: dict[str, Any] = {} if groups is None else {
        "latency_ms_by_group": {g: latency_summary(v) for g, v in sorted(tally.by_group.items())},
        "requests_by_group": dict(sorted(tally.group_counts.items())),
    }
    if groups is not None and keep_latencies:
        grouped["ok_latencies_s_by_group"] = {g: list(v) for g, v in sorted(tally.by_group.items())}
    scheduled = len(facts.offsets)
    return {
        **grouped,
        "url": facts.predict_url,
        "offered_rate": float(facts.rate),
        "duration_s": float(facts.duration),
        "seed": facts.seed,
        "inputs_per_request": k,
        "timeout_s": float(facts.timeout),
        "max_in_flight": facts.max_in_flight,
        "scheduled": scheduled,
        "scheduled_rate": scheduled / facts.duration,
        "sent": scheduled - outcomes["dropped_client_side"],
        "outcomes": outcomes,
        "status_codes": {str(code): n for code, n in sorted(tally.status_codes.items())},
        "error_types": dict(tally.error_types.most_common()),
        "retry_after_s_max": tally.retry_after_max,
        "window_s": window,
        "throughput_rps": ok / window,
        "throughput_texts_per_s": ok * k / window,
        "latency_ms": latency_summary(tally.ok_latencies),
        "latency_all_ms": latency_summary(tally.all_latencies),
        "latency_p50_ms_by_third": [latency_summary(part)["p50"] for part in tally.thirds],
        "send_lag_ms": lag_summary,
        "client_cpu_percent": cpu_percent,
        "peak_in_flight": facts.peak_in_flight,
        "server": server,
        "server_info": info,
        "warnings": [*warnings, *_measurement_warnings(lag_summary["p99"], cpu_percent, facts, outcomes)],
        "errors_sample": tally.errors_sample,
    }


@dataclass
class _Tally:
    """Each request's slot added up: outcome counts, status codes, error types, latencies (every answered request,
    the ok ones, and the ok ones by group and by third of the schedule), send lags, and a sample of client errors."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    status_codes: Counter[int] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)
    ok_latencies: list[float] = field(default_factory=list)
    all_latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    retry_after_max: float | None = None
    errors_sample: list[str] = field(default_factory=list)
    by_group: dict[str, list[float]] = field(default_factory=dict)
    group_counts: Counter[str] = field(default_factory=Counter)
    # ok latencies by the third of the schedule a request was sent in
    thirds: list[list[float]] = field(default_factory=lambda: [[], [], []])

    def add(self, result: Result | None, group: str | None, third: int) -> None:
        """One scheduled request: its slot, the group of its first text (None without groups), and the third of the
        schedule it was due in."""
        if group is not None:
            self.group_counts[group] += 1
            self.by_group.setdefault(group, [])
        if result is None:
            self.outcomes["dropped_client_side"] += 1
            return
        self.outcomes[result.outcome] += 1
        if result.lag is not None:
            self.lags.append(result.lag)
        if result.status is not None:
            self.status_codes[result.status] += 1
        if result.latency is not None:
            self.all_latencies.append(result.latency)
            if result.outcome == "ok":
                self.ok_latencies.append(result.latency)
                self.thirds[third].append(result.latency)
                if group is not None:
                    self.by_group[group].append(result.latency)
        if result.error_type:
            self.error_types[result.error_type] += 1
        if result.retry_after is not None:
            self.retry_after_max = max(self.retry_after_max or 0.0, result.retry_after)
        if result.detail and result.detail not in self.errors_sample and len(self.errors_sample) < 5:
            self.errors_sample.append(result.detail)


def _measurement_warnings(lag_p99: float | None, cpu_percent: float | None, facts: RunFacts,
                          outcomes: dict[str, int]) -> list[str]:
    """Caveats about the measurement itself: a late client, a busy client, stragglers cut off, requests not sent."""
    warnings = []
    if lag_p99 is not None and lag_p99 > 10.0:
        warnings.append(f"the load generator started requests late (send lag p99 {lag_p99:.1f} ms); "
                        "latencies include that client-side delay, and the offered rate may not have been met")
    if cpu_percent is not None and cpu_percent > 90.0:
        warnings.append(f"this process used {cpu_percent:.0f}% of a CPU core; the client may have limited the load")
    if facts.stragglers:
        warnings.append(f"{facts.stragglers} request(s) were still outstanding {facts.timeout:g} s after the last "
                        "send and were cancelled (counted as timeouts)")
    if outcomes["dropped_client_side"]:
        warnings.append(f"{outcomes['dropped_client_side']} request(s) were not sent: "
                        f"max_in_flight={facts.max_in_flight} requests were already outstanding")
    return warnings
