"""The load generator's report (padless.bench.loadreport): every scheduled request is counted exactly once, in the
outcome it had, and the figures come from the right requests."""

from __future__ import annotations

import json

import pytest

from padless.bench.loadreport import CUT_OFF, Result, RunFacts, build_report, classify
from padless.bench.loadstats import OUTCOMES


def _facts(offsets: list[float], **over: object) -> RunFacts:
    base = dict(predict_url="http://127.0.0.1:1/predict", rate=2.0, duration=3.0, seed=7, inputs_per_request=1,
                timeout=5.0, max_in_flight=10, offsets=offsets, start=100.0, end=104.0, last_done=103.5,
                cpu_used=0.35, peak_in_flight=3, stragglers=0)
    base.update(over)
    return RunFacts(**base)  # type: ignore[arg-type]


def _report(slots, facts, groups=None, keep=False, warnings=()):
    return build_report(slots, facts, n_texts=len(groups) if groups else 4, groups=groups, keep_latencies=keep,
                        warnings=list(warnings), metrics_before=None, metrics_after=None, info=None)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, json.dumps([[{"label": "a", "score": 1.0}]]).encode(), ("ok", None)),
    (200, json.dumps([[{"label": "a"}], [{"label": "b"}]]).encode(), ("bad_response", None)),  # 2 answers for 1
    (200, b"not json", ("bad_response", None)),
    (429, json.dumps({"error": "busy", "error_type": "overloaded"}).encode(), ("rejected_429", "overloaded")),
    (413, json.dumps({"error": "big", "error_type": "payload_too_large"}).encode(), ("client_error_4xx",
                                                                                      "payload_too_large")),
    (503, b"<html>bare proxy page</html>", ("server_error_5xx", None)),
    (302, b"", ("other_status", None)),
])
def test_classify_names_each_answer(status: int, body: bytes, expected: tuple[str, str | None]) -> None:
    assert classify(status, body, n_inputs=1) == expected


def test_every_slot_is_counted_once_in_its_outcome() -> None:
    slots = [
        Result("ok", status=200, latency=0.010, lag=0.001),
        Result("ok", status=200, latency=0.030, lag=0.002),
        Result("rejected_429", status=429, latency=0.002, lag=0.001, error_type="overloaded", retry_after=2.0),
        None,  # never sent: max_in_flight outstanding
        CUT_OFF,  # still outstanding after the drain window
        Result("connection_error", lag=0.0, detail="ClientConnectorError: refused"),
    ]
    report = _report(slots, _facts([0.1, 0.5, 1.2, 1.9, 2.2, 2.9], stragglers=1))
    outcomes = report["outcomes"]
    assert set(outcomes) == set(OUTCOMES)
    assert sum(outcomes.values()) == report["scheduled"] == 6
    assert (outcomes["ok"], outcomes["rejected_429"], outcomes["dropped_client_side"], outcomes["timeout"],
            outcomes["connection_error"]) == (2, 1, 1, 1, 1)
    assert report["sent"] == 5
    assert report["status_codes"] == {"200": 2, "429": 1}
    assert report["error_types"] == {"overloaded": 1}
    assert report["retry_after_s_max"] == 2.0
    assert report["errors_sample"] == ["ClientConnectorError: refused"]
    # Latency of ok requests only; latency_all of every request that got an HTTP answer.
    assert report["latency_ms"]["count"] == 2 and report["latency_ms"]["max"] == pytest.approx(30.0)
    assert report["latency_all_ms"]["count"] == 3
    # The cut-off straggler has no send lag of its own: 4 lags (3 answered, 1 connection error).
    assert report["send_lag_ms"]["max"] == pytest.approx(2.0)
    assert any("still outstanding" in w for w in report["warnings"])
    assert any("were not sent" in w for w in report["warnings"])


def test_window_throughput_and_thirds() -> None:
    slots = [Result("ok", status=200, latency=x, lag=0.0) for x in (0.01, 0.02, 0.03)]
    # The last completion came 6 s after schedule zero: throughput is over 6 s, not the 3 s of sending.
    report = _report(slots, _facts([0.5, 1.5, 2.5], last_done=106.0))
    assert report["window_s"] == pytest.approx(6.0)
    assert report["throughput_rps"] == pytest.approx(0.5)
    assert report["latency_p50_ms_by_third"] == pytest.approx([10.0, 20.0, 30.0])
    assert report["client_cpu_percent"] == pytest.approx(100 * 0.35 / 6.0)
    # Nothing completed: the window runs to the end of the drain.
    empty = _report([None, None, None], _facts([0.5, 1.5, 2.5], last_done=0.0, end=107.0))
    assert empty["window_s"] == pytest.approx(7.0) and empty["throughput_rps"] == 0.0


def test_groups_follow_each_requests_first_text() -> None:
    groups = ["short", "long", "short"]
    slots = [Result("ok", status=200, latency=0.01 * (i + 1), lag=0.0) for i in range(4)] + [None]
    # Two texts per request: request i starts at text 2i mod 3, so its group is short, short, long, short, short.
    report = _report(slots, _facts([0.1, 0.7, 1.3, 1.9, 2.5], inputs_per_request=2), groups=groups, keep=True)
    first_texts = [(2 * i) % 3 for i in range(5)]  # 0, 2, 1, 0, 2
    expected = {"short": sum(1 for t in first_texts if groups[t] == "short"),
                "long": sum(1 for t in first_texts if groups[t] == "long")}
    assert report["requests_by_group"] == expected
    assert report["ok_latencies_s_by_group"]["long"] == pytest.approx([0.03])
    assert report["ok_latencies_s_by_group"]["short"] == pytest.approx([0.01, 0.02, 0.04])
    assert report["throughput_texts_per_s"] == pytest.approx(2 * report["throughput_rps"])


def test_sender_warnings_are_kept_and_not_mutated() -> None:
    given = ["file descriptor limit raised"]
    report = _report([Result("ok", status=200, latency=0.01, lag=0.02)], _facts([0.1]), warnings=given)
    assert report["warnings"][0] == "file descriptor limit raised"
    assert any("started requests late" in w for w in report["warnings"])  # send lag p99 20 ms > 10 ms
    assert given == ["file descriptor limit raised"]
