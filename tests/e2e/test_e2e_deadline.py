"""A stalled runtime: deadlines answer 504 on time and a client that hangs up is dropped, both without running.

The shared slow server spends 2 ms per padded token, so a "blocker" batch of 8 × ~116 tokens keeps the single forward
thread busy for ~1.9 s. A request queued behind it can only finish after the blocker, which makes its deadline
(X-Request-Timeout: 0.3) or its client's disconnect the thing under test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from e2e_support import HOST, Server, ametrics, metric

pytestmark = pytest.mark.slow


def _blocker_texts() -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"blocker {tag} {i} " + "word " * 110 for i in range(8)]


async def _start_blocker(client: httpx.AsyncClient) -> tuple[asyncio.Future[httpx.Response], dict]:
    """Send the blocker and return once its batch is inside the forward pass (all 8 dequeued, queue empty)."""
    before = await ametrics(client)
    blocker = asyncio.ensure_future(client.post("/v1/classify", json={"inputs": _blocker_texts()}))
    end = time.monotonic() + 10
    while True:
        m = await ametrics(client)
        dequeued = metric(m, "padless_stage_seconds_count", stage="queue") - metric(
            before, "padless_stage_seconds_count", stage="queue")
        if dequeued >= 8 and metric(m, "padless_queue_inputs") == 0:
            break
        assert not blocker.done(), "the blocker finished before it could block anything"
        assert time.monotonic() < end, "the blocker never reached the forward pass"
        await asyncio.sleep(0.01)
    return blocker, before


async def _wait_dropped(client: httpx.AsyncClient, before: dict, count: int) -> dict:
    end = time.monotonic() + 10
    while True:
        m = await ametrics(client)
        if metric(m, "padless_dropped_inputs_total") - metric(before, "padless_dropped_inputs_total") >= count:
            return m
        assert time.monotonic() < end, "the dropped-inputs counter never moved"
        await asyncio.sleep(0.05)


def _check_blocker(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    assert [res["error"] for res in r.json()["results"]] == [None] * 8


def test_deadline_expires_with_504_and_the_input_is_dropped(slow_server: Server) -> None:
    victim = f"victim of the deadline {uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[Any, ...]:
        async with slow_server.async_client() as client:
            blocker, before = await _start_blocker(client)
            started = time.monotonic()
            late = await client.post("/predict", json={"inputs": victim}, headers={"X-Request-Timeout": "0.3"})
            elapsed = time.monotonic() - started
            blocker_was_running = not blocker.done()
            done = await asyncio.wait_for(blocker, timeout=30)
            after = await _wait_dropped(client, before, 1)
            again = await client.post("/predict", json={"inputs": victim})
            return late, elapsed, blocker_was_running, done, before, after, again

    late, elapsed, blocker_was_running, done, before, after, again = asyncio.run(scenario())
    assert late.status_code == 504, late.text
    body = late.json()
    assert set(body) == {"error", "error_type", "request_id"} and body["error_type"] == "deadline_exceeded"
    assert 0.25 <= elapsed < 1.5, f"504 after {elapsed:.2f}s for a 0.3 s deadline"
    assert blocker_was_running, "the 504 must come while the runtime is still stalled, not after it"
    _check_blocker(done)
    # The expired input never reached the model: only the blocker's 8 rows were computed, one input was dropped.
    assert metric(after, "padless_batch_size_sum") - metric(before, "padless_batch_size_sum") == 8
    assert metric(after, "padless_dropped_inputs_total") - metric(before, "padless_dropped_inputs_total") == 1
    assert metric(after, "padless_queue_inputs") == 0 and metric(after, "padless_admitted_inputs") == 0
    assert metric(after, "padless_requests_total", route="/predict", status="504") >= 1
    # The server is still up and the same text now succeeds (it was never cached: it never ran).
    assert again.status_code == 200 and len(again.json()) == 3
    with slow_server.client() as c:
        assert c.get("/ready").status_code == 200


@pytest.fixture(scope="module")
def disconnect_outcome(slow_server: Server) -> dict[str, Any]:
    """Queue a request behind the blocker, hang up, let the blocker finish; report what the server did."""
    body = json.dumps({"inputs": f"a client who hangs up {uuid.uuid4().hex[:8]}"}).encode()
    request = (f"POST /predict HTTP/1.1\r\nHost: {HOST}:{slow_server.port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def scenario() -> dict[str, Any]:
        async with slow_server.async_client() as client:
            blocker, before = await _start_blocker(client)
            _reader, writer = await asyncio.open_connection(HOST, slow_server.port)
            try:
                writer.write(request)
                await writer.drain()
                end = time.monotonic() + 5
                while True:  # the victim is queued behind the blocker
                    m = await ametrics(client)
                    if metric(m, "padless_queue_inputs") == 1:
                        break
                    assert time.monotonic() < end, "the victim never reached the queue"
                    await asyncio.sleep(0.01)
            finally:
                writer.close()  # hang up without reading the answer
                await writer.wait_closed()
            blocker_was_running = not blocker.done()
            done = await asyncio.wait_for(blocker, timeout=30)
            end = time.monotonic() + 10
            while True:  # the victim is settled one way or the other: dropped, or run for nobody
                after = await ametrics(client)
                if metric(after, "padless_admitted_inputs") == 0 and metric(after, "padless_queue_inputs") == 0:
                    break
                assert time.monotonic() < end, "the queue never emptied after the hang-up"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # let a prune that is due land in the counters
            after = await ametrics(client)
            again = await client.post("/predict", json={"inputs": "still serving after a hang-up"})
            return {"blocker_was_running": blocker_was_running, "blocker": done, "before": before, "after": after,
                    "again": again}

    return asyncio.run(scenario())


def test_client_disconnect_leaves_the_server_healthy(disconnect_outcome: dict[str, Any]) -> None:
    assert disconnect_outcome["blocker_was_running"]
    _check_blocker(disconnect_outcome["blocker"])
    again = disconnect_outcome["again"]
    assert again.status_code == 200 and len(again.json()) == 3
    after = disconnect_outcome["after"]
    assert metric(after, "padless_queue_inputs") == 0 and metric(after, "padless_admitted_inputs") == 0


def test_client_disconnect_drops_the_queued_input(disconnect_outcome: dict[str, Any]) -> None:
    before, after = disconnect_outcome["before"], disconnect_outcome["after"]
    rows = metric(after, "padless_batch_size_sum") - metric(before, "padless_batch_size_sum")
    dropped = metric(after, "padless_dropped_inputs_total", reason="cancelled") - metric(
        before, "padless_dropped_inputs_total", reason="cancelled")
    assert (dropped, rows) == (1, 8), f"dropped {dropped}, computed {rows} rows (the blocker has 8)"
