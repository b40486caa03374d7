"""The open-loop load generator against a tiny stand-in server (Starlette + uvicorn in a background thread).

The stand-in obeys directives carried in the texts themselves (``sleep:0.6``, ``status:429``, ``bad``), so the
expected outcome of every scheduled request is known in advance and the counts can be checked exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from padless.bench import capacity
from padless.bench.capacity import find_capacity
from padless.bench.loadstats import latency_summary
from padless.bench.loadtest import (
    OUTCOMES,
    check_loopback,
    parse_prometheus,
    percentile,
    poisson_schedule,
    render_capacity,
    render_report,
    run_load,
    server_stats,
)

ERROR_TYPES = {413: "payload_too_large", 429: "overloaded", 503: "unavailable"}


class StandIn:
    """A fake padless server: ``/predict`` (one result list per input), ``/metrics`` and ``/info``.

    ``delay``: seconds every request sleeps. ``service_time``: if set, requests are served one at a time, each
    taking that long (a single worker with a queue, so it has a real capacity of ``1/service_time`` req/s).
    Every served request counts as one batch of its inputs; a text's token count is its word count + 2.
    """

    def __init__(self, delay: float = 0.0, service_time: float = 0.0) -> None:
        self.delay = delay
        self.service_time = service_time
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.peak = 0
        self.served = 0
        self.bad_bodies = 0
        # Non-zero starting totals stand for traffic before the test window: the report must difference them.
        self.batches, self.rows, self.real, self.padded, self.batch_tokens = 7, 30, 500, 900, 900
        self._lock: asyncio.Lock | None = None

    @staticmethod
    def tokens(text: str) -> int:
        return len(text.split()) + 2

    def _error(self, code: int) -> Response:
        headers = {"Retry-After": "1"} if code == 429 else None
        body = {"error": f"stand-in {code}", "error_type": ERROR_TYPES.get(code, "other"), "request_id": "x"}
        return JSONResponse(body, status_code=code, headers=headers)

    async def predict(self, request: Request) -> Response:
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            body = await request.json()
            inputs = body.get("inputs")  # TEI's batch form: [[text], ...]
            well_formed = isinstance(inputs, list) and inputs and all(
                isinstance(t, list) and len(t) == 1 and isinstance(t[0], str) for t in inputs)
            texts = [t[0] for t in inputs] if well_formed else None
            if (texts is None or body.get("raw_scores") is not False or body.get("truncate") is not True):
                self.bad_bodies += 1
                return self._error(422)
            first = texts[0]
            if first.startswith("status:"):
                return self._error(int(first.split(":")[1]))
            if first.startswith("sleep:"):
                await asyncio.sleep(float(first.split(":")[1]))
            if first == "bad":
                return JSONResponse([[{"label": "x", "score": 1.0}]] * (len(texts) + 1))
            await asyncio.sleep(self.delay)
            if self.service_time:
                if self._lock is None:
                    self._lock = asyncio.Lock()
                async with self._lock:
                    # Work for a client that already gave up would pollute the next measurement.
                    if await request.is_disconnected():
                        return Response(status_code=499)
                    await asyncio.sleep(self.service_time)
            lengths = [self.tokens(t) for t in texts]
            self.batches += 1
            self.rows += len(texts)
            self.real += sum(lengths)
            self.padded += len(texts) * max(lengths)
            self.batch_tokens += len(texts) * max(lengths)
            self.served += 1
            return JSONResponse([[{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.1}]
                                 for _ in texts])
        finally:
            self.in_flight -= 1

    async def embed(self, request: Request) -> Response:
        """TEI's ``/embed`` form: ``{"inputs": [text, ...], "truncate": true}`` → one vector per text."""
        body = await request.json()
        inputs = body.get("inputs")
        if not (isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs)
                and body.get("truncate") is True and set(body) == {"inputs", "truncate"}):
            self.bad_bodies += 1
            return self._error(422)
        self.served += 1
        self.rows += len(inputs)
        return JSONResponse([[0.5, 0.5] for _ in inputs])

    async def metrics(self, request: Request) -> Response:
        text = (
            "# HELP padless_batch_size Rows per batch.\n# TYPE padless_batch_size histogram\n"
            f'padless_batch_size_bucket{{le="8.0"}} {self.batches}\n'
            f'padless_batch_size_bucket{{le="+Inf"}} {self.batches}\n'
            f"padless_batch_size_sum {self.rows}\npadless_batch_size_count {self.batches}\n"
            "# TYPE padless_batch_tokens histogram\n"
            f"padless_batch_tokens_sum {self.batch_tokens}\npadless_batch_tokens_count {self.batches}\n"
            "# TYPE padless_batch_real_tokens counter\n"
            f"padless_batch_real_tokens_total {self.real}\npadless_batch_real_tokens_created 1.7e9\n"
            "# TYPE padless_batch_padded_tokens counter\n"
            f"padless_batch_padded_tokens_total {self.padded}\n"
        )
        return PlainTextResponse(text)

    async def info(self, request: Request) -> Response:
        return JSONResponse({"model": "stand-in", "max_batch_tokens": 4096})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/predict", self.predict, methods=["POST"]),
                                 Route("/embed", self.embed, methods=["POST"]),
                                 Route("/metrics", self.metrics), Route("/info", self.info)])


@contextlib.contextmanager
def serve(stand_in: StandIn) -> Iterator[str]:
    """Run the stand-in on 127.0.0.1 (a free port bound here, so there is no race) and yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # ws="none": importing websockets' legacy module warns, and warnings are errors here.
    config = uvicorn.Config(stand_in.app(), log_level="warning", access_log=False, lifespan="off", ws="none",
                            loop="asyncio", timeout_graceful_shutdown=3, backlog=2048)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="stand-in-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "stand-in server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "stand-in server thread did not stop"


def outcome_total(report: dict[str, Any]) -> int:
    assert set(report["outcomes"]) == set(OUTCOMES)
    return sum(report["outcomes"].values())


# --------------------------------------------------------------------------------------------------------------------
# Pure helpers


def test_percentile_nearest_rank_on_known_values() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted on purpose
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    # Ten values: p99 is the maximum and p50 the 5th, as nearest rank says (no interpolation).
    ten = [0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070, 0.080, 0.090, 1.0]
    assert percentile(ten, 50) == 0.050
    assert percentile(ten, 90) == 0.090
    assert percentile(ten, 99) == 1.0
    with pytest.raises(ValueError):
        percentile(ten, 0)
    summary = latency_summary(ten)
    assert summary["count"] == 10
    assert summary["p50"] == pytest.approx(50.0) and summary["p99"] == pytest.approx(1000.0)
    assert summary["max"] == pytest.approx(1000.0) and summary["mean"] == pytest.approx(145.0)


def test_poisson_schedule_is_seeded_and_has_the_rate() -> None:
    a = poisson_schedule(200.0, 10.0, seed=3)
    assert a == poisson_schedule(200.0, 10.0, seed=3)
    assert a != poisson_schedule(200.0, 10.0, seed=4)
    assert a == sorted(a) and 0 < a[0] and a[-1] < 10.0
    assert abs(len(a) - 2000) < 5 * math.sqrt(2000)  # Poisson count: mean 2000, sd ~45
    gaps = [b - a_ for a_, b in zip(a, a[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.1)
    # Exponential gaps: the standard deviation equals the mean (a uniform spacing would have none).
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert sd == pytest.approx(mean, rel=0.15)
    with pytest.raises(ValueError):
        poisson_schedule(0, 1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.9.8.7/predict", "http://localhost:1",
                                 "http://LOCALHOST:1/", "http://[::1]:8000", "https://127.0.0.1"])
def test_loopback_urls_are_accepted(url: str) -> None:
    check_loopback(url)


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.1:8000", "http://192.168.1.5/predict",
                                 "http://[2001:db8::1]:8000", "http://127.0.0.1.nip.io", "http://localhost.example.com",
                                 "http://0.0.0.0:8000", "ftp://127.0.0.1", "127.0.0.1:8000", "http://:80", "not a url"])
def test_non_loopback_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_loopback(url)
    with pytest.raises(ValueError):
        asyncio.run(run_load(url, rate=10, duration=0.1, texts=["x"]))
    with pytest.raises(ValueError):
        asyncio.run(find_capacity(url, texts=["x"], duration=0.1, budget_s=1))


PROM_BEFORE = """\
# HELP padless_batch_size Rows per batch.
# TYPE padless_batch_size histogram
padless_batch_size_bucket{le="1.0",model="a"} 3.0
padless_batch_size_bucket{le="+Inf",model="a"} 10.0
padless_batch_size_sum{model="a"} 25.0
padless_batch_size_count{model="a"} 10.0
padless_batch_size_sum{model="b b} \\"q\\""} 5.0
padless_batch_size_count{model="b b} \\"q\\""} 2.0
padless_batch_size_created{model="a"} 1.7e+09
# TYPE padless_batch_tokens histogram
padless_batch_tokens_sum 1000.0
padless_batch_tokens_count 12.0
# TYPE padless_batch_real_tokens counter
padless_batch_real_tokens_total 600.0
padless_batch_real_tokens_created 1.7e+09
padless_batch_padded_tokens_total 1000.0
process_cpu_seconds_total 1.5 1700000000000
some_gauge NaN
garbage line without a number
"""

PROM_AFTER = """\
padless_batch_size_sum{model="a"} 85.0
padless_batch_size_count{model="a"} 20.0
padless_batch_size_sum{model="b b} \\"q\\""} 5.0
padless_batch_size_count{model="b b} \\"q\\""} 2.0
padless_batch_tokens_sum 5000.0
padless_batch_tokens_count 22.0
padless_batch_real_tokens_total 3600.0
padless_batch_padded_tokens_total 5000.0
# EOF
"""


def test_metrics_parsing_on_a_fixed_sample() -> None:
    before = parse_prometheus(PROM_BEFORE)
    assert before["padless_batch_size_sum"] == 30.0  # summed over the two label sets
    assert before["padless_batch_size_count"] == 12.0
    assert "padless_batch_size_bucket" not in before
    assert before["padless_batch_real_tokens_total"] == 600.0
    assert before["process_cpu_seconds_total"] == 1.5  # the timestamp is not the value
    assert math.isnan(before["some_gauge"])
    assert "garbage" not in before
    stats = server_stats(before, parse_prometheus(PROM_AFTER))
    assert stats is not None
    assert stats["batches"] == 10.0 and stats["rows"] == 60.0
    assert stats["mean_batch_size"] == pytest.approx(6.0)
    assert stats["mean_batch_tokens"] == pytest.approx(400.0)
    assert stats["real_tokens"] == 3000.0 and stats["padded_tokens"] == 4000.0
    assert stats["padding_fraction"] == pytest.approx(0.25)
    # A server without padless metrics gives no server section; a counter that went down (restart) no figure.
    assert server_stats({}, {"process_cpu_seconds_total": 2.0}) is None
    restarted = server_stats(parse_prometheus(PROM_AFTER), before)
    assert restarted is not None and restarted["padding_fraction"] is None and restarted["batches"] is None


def _ray_exposition(short: tuple[int, int, int, int], long: tuple[int, int, int, int]) -> str:
    """What padless serve --ray's ingress exposes: its own batch metrics idle at zero, and per-tier replica counters
    (batches, rows, real tokens, padded tokens)."""
    lines = ["padless_batch_size_sum 0.0", "padless_batch_size_count 0.0", "padless_batch_tokens_sum 0.0",
             "padless_batch_tokens_count 0.0", "padless_batch_real_tokens_total 0.0",
             "padless_batch_padded_tokens_total 0.0"]
    for tier, values in (("short", short), ("long", long)):
        for name, value in zip(("batches", "rows", "real_tokens", "padded_tokens"), values):
            lines.append(f'padless_tier_{name}{{tier="{tier}"}} {float(value)}')
    return "\n".join(lines) + "\n"


def test_server_stats_of_a_ray_server_come_from_its_tiers() -> None:
    before = parse_prometheus(_ray_exposition((10, 20, 400, 500), (2, 2, 900, 1000)))
    after = parse_prometheus(_ray_exposition((40, 100, 2400, 3000), (6, 8, 3900, 5000)))
    stats = server_stats(before, after)
    assert stats is not None
    # Both tiers summed over the window: 30 + 4 batches, 80 + 6 rows, 2000 + 3000 real of 2500 + 4000 padded.
    assert stats["batches"] == 34.0 and stats["rows"] == 86.0
    assert stats["mean_batch_size"] == pytest.approx(86 / 34)
    assert stats["mean_batch_tokens"] == pytest.approx(6500 / 34)
    assert stats["real_tokens"] == 5000.0 and stats["padded_tokens"] == 6500.0
    assert stats["padding_fraction"] == pytest.approx(1 - 5000 / 6500)


# --------------------------------------------------------------------------------------------------------------------
# Against the stand-in server


def test_every_scheduled_request_has_exactly_one_outcome() -> None:
    texts = ["good one", "good two words", "status:429", "status:503", "sleep:1.5", "status:413", "bad"]
    expected_by_text = {"good one": "ok", "good two words": "ok", "status:429": "rejected_429",
                        "status:503": "server_error_5xx", "sleep:1.5": "timeout", "status:413": "client_error_4xx",
                        "bad": "bad_response"}
    rate, duration, seed = 40.0, 1.0, 5
    n = len(poisson_schedule(rate, duration, seed))
    expected = dict.fromkeys(OUTCOMES, 0)
    for i in range(n):
        expected[expected_by_text[texts[i % len(texts)]]] += 1
    stand_in = StandIn()
    with serve(stand_in) as url:
        report = asyncio.run(run_load(url, rate=rate, duration=duration, texts=texts, timeout=0.6, seed=seed))
    assert report["scheduled"] == n == report["sent"]
    assert outcome_total(report) == n
    assert report["outcomes"] == expected
    assert stand_in.bad_bodies == 0 and len(stand_in.arrivals) == n
    codes = report["status_codes"]
    assert codes["429"] == expected["rejected_429"] and codes["503"] == expected["server_error_5xx"]
    assert codes["413"] == expected["client_error_4xx"]
    assert codes["200"] == expected["ok"] + expected["bad_response"]
    assert sum(codes.values()) == n - expected["timeout"]
    assert report["error_types"]["overloaded"] == expected["rejected_429"]
    assert report["retry_after_s_max"] == 1.0
    assert report["latency_ms"]["count"] == expected["ok"]
    assert report["latency_all_ms"]["count"] == n - expected["timeout"]
    assert report["latency_ms"]["p99"] <= report["latency_all_ms"]["max"]
    assert report["throughput_rps"] == pytest.approx(expected["ok"] / report["window_s"])
    assert report["server_info"] == {"model": "stand-in", "max_batch_tokens": 4096}
    # Rendering works on a real report and shows the non-zero outcomes.
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_report(report))
    text = console.export_text()
    for word in ("offered rate", "rejected_429", "server_error_5xx", "timeout", "p99", "padding fraction"):
        assert word in text



def test_the_embed_route_sends_teis_embed_form() -> None:
    """``route="/embed"`` posts ``{"inputs": [text, ...]}`` and counts one vector per text as ok."""
    stand_in = StandIn()
    with serve(stand_in) as url:
        report = asyncio.run(run_load(url, rate=30.0, duration=0.5, texts=["a", "b c", "d e f"], seed=1,
                                      inputs_per_request=2, route="/embed"))
    assert report["scheduled"] > 0 and report["outcomes"]["ok"] == report["scheduled"]
    assert stand_in.bad_bodies == 0 and stand_in.served == report["scheduled"]
    assert report["url"].endswith("/embed")
    with pytest.raises(ValueError, match="route must be one of"):
        asyncio.run(run_load(url, rate=1.0, duration=0.1, texts=["a"], route="/v1/embeddings"))


def test_latency_is_reported_per_group_of_texts() -> None:
    texts = ["quick", "sleep:0.3", "quick again"]
    groups = ["short", "long", "short"]
    rate, duration, seed = 30.0, 1.0, 2
    n = len(poisson_schedule(rate, duration, seed))
    long_requests = sum(1 for i in range(n) if i % 3 == 1)
    with serve(StandIn()) as url:
        report = asyncio.run(run_load(url, rate=rate, duration=duration, texts=texts, groups=groups, seed=seed,
                                      keep_latencies=True))
    assert report["requests_by_group"] == {"long": long_requests, "short": n - long_requests}
    by_group = report["latency_ms_by_group"]
    assert by_group["long"]["count"] == long_requests and by_group["short"]["count"] == n - long_requests
    assert by_group["long"]["p50"] >= 300 > by_group["short"]["p99"]  # the sleeping texts are the long group
    # keep_latencies: the raw values behind each group's summary, in seconds.
    raw = report["ok_latencies_s_by_group"]
    for group, values in raw.items():
        assert len(values) == by_group[group]["count"]
        assert max(values) * 1000.0 == by_group[group]["max"] and min(values) > 0
    assert "ok_latencies_s_by_group" not in asyncio.run(
        run_load("http://127.0.0.1:9", rate=5, duration=0.2, texts=texts, groups=groups, timeout=0.5))
    with pytest.raises(ValueError, match="one group per text"):
        asyncio.run(run_load("http://127.0.0.1:9", rate=1, duration=1, texts=texts, groups=["short"]))

def test_open_loop_does_not_wait_for_slow_responses() -> None:
    rate, duration, seed = 20.0, 1.0, 0
    offsets = poisson_schedule(rate, duration, seed)
    stand_in = StandIn(delay=0.5)
    with serve(stand_in) as url:
        started = time.monotonic()
        report = asyncio.run(run_load(url, rate=rate, duration=duration, texts=["a b c"], timeout=5.0, seed=seed))
        elapsed = time.monotonic() - started
    n = len(offsets)
    assert 10 <= n <= 30
    assert report["outcomes"]["ok"] == n == outcome_total(report)
    # All sent within about the schedule's span, not one after another (which would take n × 0.5 s).
    spread = stand_in.arrivals[-1] - stand_in.arrivals[0]
    assert spread <= offsets[-1] - offsets[0] + 0.5
    assert stand_in.peak >= 5 and report["peak_in_flight"] >= 5
    assert elapsed < duration + 0.5 + 1.5  # the run, one 0.5 s service, and slack for a busy machine; serial: ~n/2 s
    lat = report["latency_ms"]
    assert 500 <= lat["p50"] < 1000 and lat["p99"] < 1500
    assert report["window_s"] == pytest.approx(offsets[-1] + 0.5, abs=0.5)


def test_server_metrics_are_differenced_over_the_run() -> None:
    texts = ["one", "two words", "three words here", "a much longer text with eight words", "x y"]
    rate, duration, seed, k = 30.0, 0.6, 2, 2
    n = len(poisson_schedule(rate, duration, seed))
    real = padded = 0
    for i in range(n):
        lengths = [StandIn.tokens(texts[(i * k + j) % len(texts)]) for j in range(k)]
        real += sum(lengths)
        padded += k * max(lengths)
    stand_in = StandIn()
    with serve(stand_in) as url:
        report = asyncio.run(run_load(url + "/predict", rate=rate, duration=duration, texts=texts,
                                      inputs_per_request=k, timeout=5.0, seed=seed))
    assert report["outcomes"]["ok"] == n and stand_in.bad_bodies == 0
    assert report["url"].endswith("/predict") and not report["url"].endswith("/predict/predict")
    assert report["throughput_texts_per_s"] == pytest.approx(2 * report["throughput_rps"])
    server = report["server"]
    assert server["batches"] == n and server["rows"] == k * n
    assert server["mean_batch_size"] == pytest.approx(k)
    assert server["real_tokens"] == real and server["padded_tokens"] == padded
    assert server["padding_fraction"] == pytest.approx(1 - real / padded)
    assert server["mean_batch_tokens"] == pytest.approx(padded / n)


def test_concurrency_cap_counts_dropped_requests() -> None:
    rate, duration, seed = 20.0, 0.5, 1
    n = len(poisson_schedule(rate, duration, seed))
    stand_in = StandIn(delay=0.5)
    with serve(stand_in) as url:
        report = asyncio.run(run_load(url, rate=rate, duration=duration, texts=["t"], timeout=5.0, seed=seed,
                                      max_in_flight=2))
    assert outcome_total(report) == n
    assert report["outcomes"]["ok"] + report["outcomes"]["dropped_client_side"] == n
    assert report["outcomes"]["dropped_client_side"] >= 1 and report["sent"] == report["outcomes"]["ok"]
    assert report["peak_in_flight"] <= 2 and stand_in.peak <= 2
    assert any("max_in_flight" in w for w in report["warnings"])


def test_connection_errors_are_counted() -> None:
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rate, duration = 20.0, 0.3
    n = len(poisson_schedule(rate, duration, 0))
    report = asyncio.run(run_load(f"http://127.0.0.1:{port}", rate=rate, duration=duration, texts=["x"], timeout=2.0))
    assert report["outcomes"]["connection_error"] == n == outcome_total(report)
    assert report["server"] is None and report["server_info"] is None
    assert report["latency_ms"]["p99"] is None and report["throughput_rps"] == 0
    assert report["errors_sample"]


# --------------------------------------------------------------------------------------------------------------------
# Capacity search


def _fake_run_load(capacity: float, calls: list[float], shed: bool = False) -> Any:
    async def fake(url: str, *, rate: float, duration: float, **_: Any) -> dict[str, Any]:
        calls.append(rate)
        over = rate > capacity
        outcomes = dict.fromkeys(OUTCOMES, 0)
        outcomes["rejected_429" if over and shed else "ok"] = 10
        p99 = 400.0 if over and not shed else 50.0
        return {"outcomes": outcomes, "latency_ms": {"p99": p99}, "throughput_rps": min(rate, capacity)}
    return fake


@pytest.mark.parametrize("shed", [False, True])
def test_find_capacity_grows_then_bisects(monkeypatch: pytest.MonkeyPatch, shed: bool) -> None:
    calls: list[float] = []
    monkeypatch.setattr(capacity, "run_load", _fake_run_load(37.0, calls, shed))
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=5, duration=0.01, timeout=0.01,
                                       settle_s=0, bisect_steps=2, budget_s=60))
    assert calls[:4] == [5, 10, 20, 40]
    assert calls[4] == pytest.approx(math.sqrt(20 * 40)) and calls[5] == pytest.approx(math.sqrt(calls[4] * 40))
    assert result["rate"] == pytest.approx(calls[5]) and result["failed_rate"] == 40
    assert result["rate"] <= 37 and result["stopped_by"] == "bracketed" and len(result["trials"]) == 6
    assert result["report"]["latency_ms"]["p99"] == 50.0


def test_find_capacity_shrinks_and_respects_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(capacity, "run_load", _fake_run_load(3.0, calls))
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=10, duration=0.01, timeout=0.01,
                                       settle_s=0, bisect_steps=1, budget_s=60))
    assert calls == [10, 5, 2.5, pytest.approx(math.sqrt(2.5 * 5))]
    assert result["rate"] == 2.5 and result["failed_rate"] == pytest.approx(math.sqrt(12.5))
    # Never passes: stops at min_rate.
    calls.clear()
    monkeypatch.setattr(capacity, "run_load", _fake_run_load(0.0, calls))
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=4, min_rate=1, duration=0.01,
                                       timeout=0.01, settle_s=0, budget_s=60))
    assert calls == [4, 2, 1] and result["rate"] is None and result["stopped_by"] == "min_rate"
    # Always passes: stops at max_rate.
    calls.clear()
    monkeypatch.setattr(capacity, "run_load", _fake_run_load(1e9, calls))
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=10, max_rate=30, duration=0.01,
                                       timeout=0.01, settle_s=0, budget_s=60))
    assert calls == [10, 20, 30] and result["rate"] == 30 and result["stopped_by"] == "max_rate"
    # A budget too small for even one run starts none.
    calls.clear()
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], duration=10, budget_s=5))
    assert calls == [] and result["rate"] is None and result["stopped_by"] == "budget"
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_capacity(result))
    assert "no rate held the limit" in console.export_text()


def test_find_capacity_stretches_low_rate_runs_to_min_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    durations: dict[float, float] = {}
    fake = _fake_run_load(37.0, [])

    async def recording(url: str, *, rate: float, duration: float, **kw: Any) -> dict[str, Any]:
        durations[rate] = duration
        return await fake(url, rate=rate, duration=duration, **kw)

    monkeypatch.setattr(capacity, "run_load", recording)
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=5, duration=2.0, timeout=0.01,
                                       settle_s=0, bisect_steps=0, budget_s=1000, min_requests=100))
    # 100 requests take 20 s at 5/s and 10 s at 10/s; from 50/s on the 2 s floor already holds 100.
    assert durations[5] == pytest.approx(20.0) and durations[10] == pytest.approx(10.0)
    assert durations[40] == pytest.approx(2.5) and sorted(durations) == [5, 10, 20, 40]
    assert capacity.step_seconds(80, 2.0, 100) == pytest.approx(2.0)
    assert result["rate"] == 20 and result["failed_rate"] == 40
    # The budget check uses the stretched length: 20 s + timeout does not fit in 15 s, so nothing runs.
    durations.clear()
    result = asyncio.run(find_capacity("http://127.0.0.1:1", texts=["x"], start_rate=5, duration=2.0, timeout=0.01,
                                       settle_s=0, budget_s=15, min_requests=100))
    assert durations == {} and result["stopped_by"] == "budget"


def test_find_capacity_against_a_single_worker_server() -> None:
    # One request at a time, 40 ms each: about 25 req/s before the queue grows without bound.
    stand_in = StandIn(service_time=0.04)
    budget = 8.0
    with serve(stand_in) as url:
        started = time.monotonic()
        result = asyncio.run(find_capacity(url, texts=["some words"], p99_limit_ms=300, duration=0.5, start_rate=10,
                                           timeout=0.5, settle_s=0.2, bisect_steps=1, budget_s=budget))
        elapsed = time.monotonic() - started
    assert elapsed <= budget + 1.0 and result["elapsed_s"] <= budget + 1.0
    assert result["rate"] is not None and result["rate"] < 80
    assert result["failed_rate"] is not None and result["failed_rate"] <= 80
    report = result["report"]
    assert report["outcomes"]["ok"] == report["scheduled"] and report["latency_ms"]["p99"] <= 300
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_capacity(result))
    assert "capacity" in console.export_text()


def _report(p99: float, thirds: list[float | None]) -> dict[str, Any]:
    outcomes = dict.fromkeys(OUTCOMES, 0)
    outcomes["ok"] = 300
    return {"outcomes": outcomes, "latency_ms": {"p99": p99}, "latency_p50_ms_by_third": thirds}


def test_a_run_whose_queue_grows_fails_even_under_the_p99_limit() -> None:
    # Limit 200 ms: a climb must be over 2x and over 25 ms to count as a growing queue.
    assert capacity.verdict(_report(150, [20, 30, 90]), 200) == (
        False, "did not keep up: median latency rose from 20.0 ms (first third) to 90.0 ms (last third)")
    assert capacity.verdict(_report(150, [10, 15, 21]), 200)[0]  # doubled, but by 11 ms: jitter on an idle server
    assert capacity.verdict(_report(150, [50, 60, 95]), 200)[0]  # up 45 ms, but not doubled
    assert capacity.verdict(_report(150, [20, None, None]), 200)[0]  # nothing to compare with
    assert capacity.verdict(_report(250, [20, 20, 20]), 200) == (False, "p99 250.0 ms > 200 ms")


def test_medians_by_third_climb_only_when_the_server_falls_behind() -> None:
    # One request at a time, 50 ms each (20 req/s). 60 req/s for 3 s: a queue that grows to the end, each request
    # waiting ~33 ms more than the one before, so the last third's median is ~5x the first's, less any delay common to
    # all requests (one fresh-clone run started every request ~1 s late).
    with serve(StandIn(service_time=0.05)) as url:
        over = asyncio.run(run_load(url, rate=60, duration=3.0, texts=["a b"], timeout=20.0, seed=1))
        under = asyncio.run(run_load(url, rate=5, duration=3.0, texts=["a b"], timeout=10.0, seed=1))
    first, middle, last = over["latency_p50_ms_by_third"]
    assert first < middle < last and last > 2 * first
    assert over["outcomes"]["ok"] == over["scheduled"]
    # A generous p99 limit passes the overloaded run on p99 alone; the climb fails it.
    passed, reason = capacity.verdict(over, p99_limit_ms=20_000)
    assert not passed and reason.startswith("did not keep up")
    low = [m for m in under["latency_p50_ms_by_third"] if m is not None]
    assert len(low) == 3 and max(low) < 200 and capacity.verdict(under, p99_limit_ms=500)[0]
