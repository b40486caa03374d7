"""SIGTERM under load: readiness turns 503 at once, new work gets 503, every admitted request still gets its 200, and
the process exits 0 within the drain timeout."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from e2e_support import Server, ametrics, metric

pytestmark = pytest.mark.slow

N = 40
DRAIN_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def drained(server_factory: Callable[..., Server]) -> dict[str, Any]:
    """Load the server, SIGTERM it mid-load, and record everything that happened."""
    # 3 ms per padded token: 40 inputs of ~28 tokens take a few seconds to drain.
    server = server_factory("--drain-timeout", str(DRAIN_TIMEOUT), delay_per_token_s=0.003)
    texts = [f"drain {i} " + "fine words " * 12 for i in range(N)]

    async def scenario() -> tuple[Any, ...]:
        limits = httpx.Limits(max_connections=N + 5)
        async with server.async_client(limits=limits, timeout=60.0) as client, \
                httpx.AsyncClient(base_url=server.url, timeout=5.0) as probe:
            tasks = [asyncio.ensure_future(client.post("/predict", json={"inputs": t})) for t in texts]
            end = time.monotonic() + 20
            while True:  # every request has reached the server: admitted, or already answered
                m = await ametrics(probe)
                if metric(m, "padless_admitted_inputs") + metric(m, "padless_requests_total", route="/predict") >= N:
                    break
                assert time.monotonic() < end, "the requests never all reached the server"
                await asyncio.sleep(0.02)
            pending_at_signal = sum(not t.done() for t in tasks)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            ready_codes: list[int] = []
            late: httpx.Response | None = None
            while not all(t.done() for t in tasks) and time.monotonic() < signalled + DRAIN_TIMEOUT + 5:
                try:
                    ready_codes.append((await probe.get("/ready")).status_code)
                    if late is None:
                        late = await probe.post("/predict", json={"inputs": "arrived during the drain"})
                except httpx.TransportError:
                    break  # the server has stopped listening
                await asyncio.sleep(0.05)
            responses = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
            return pending_at_signal, signalled, ready_codes, late, responses

    pending_at_signal, signalled, ready_codes, late, responses = asyncio.run(scenario())
    try:
        code = server.proc.wait(timeout=DRAIN_TIMEOUT + 10)
    finally:
        exited = time.monotonic()
        server.stop()
    return {"pending_at_signal": pending_at_signal, "signalled": signalled, "exited": exited, "code": code,
            "ready_codes": ready_codes, "late": late, "responses": responses, "logs": server.logs()}


def test_sigterm_drains_admitted_requests_and_exits_0(drained: dict[str, Any]) -> None:
    assert drained["pending_at_signal"] > 0, "everything finished before SIGTERM; the drain had nothing to do"
    responses = drained["responses"]
    errors = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not errors, errors[:3]
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * N, statuses
    for r in responses:
        assert len(r.json()) == 3
    assert drained["code"] == 0, drained["logs"][-3000:]
    assert drained["exited"] - drained["signalled"] < DRAIN_TIMEOUT + 5
    # Readiness turned false at once and stayed false; new work during the drain was refused with 503.
    assert drained["ready_codes"], "no /ready probe landed during the drain"
    assert set(drained["ready_codes"]) == {503}, drained["ready_codes"]
    late = drained["late"]
    assert late is not None and late.status_code == 503, late and late.text
    assert set(late.json()) == {"error", "error_type", "request_id"} and late.json()["error_type"] == "not_ready"
    assert "Traceback" not in drained["logs"]


def test_drain_is_logged(drained: dict[str, Any]) -> None:
    assert "drained in" in drained["logs"]
