"""Faults the CLI can not trigger, driven straight into :class:`padless.batcher.Batcher` with fake forward functions.

* a poisoned row fails its own batch (BatchFailedError, no internals in the message) and nothing else;
* an out-of-memory error splits the batch until it fits, and every item still gets its own answer;
* an input past its deadline is answered DeadlineExceededError without running;
* admission past max_queue_inputs / max_queue_tokens raises OverloadedError and reserves nothing;
* a forward slower than forward_timeout_s fails its batch and marks the batcher unhealthy.

Each test runs its own event loop with ``asyncio.run`` (no pytest-asyncio), bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest

from batcher_support import ForwardStarted
from padless.batcher import Batcher, Observer
from padless.config import QueueConfig
from padless.errors import BatchFailedError, DeadlineExceededError, OverloadedError
from padless.planner import BatchPolicy

POISON = 666
T = TypeVar("T")


class Recorder(Observer):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.drops: list[tuple[str, int]] = []
        self.any_dropped = asyncio.Event()  # the batcher reports drops from its worker, on the test's loop

    def batch(self, rows: int, padded_tokens: int, real_tokens: int, forward_s: float) -> None:
        self.batches.append(rows)

    def dropped(self, reason: str, count: int) -> None:
        self.drops.append((reason, count))
        self.any_dropped.set()


def logits_for(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """A row's logits depend on that row alone, so every future can be checked against its own input."""
    return np.array([[float(sum(r)), float(len(r)), float(r[1])] for r in rows], dtype=np.float32)


def make(forward: Callable[[Sequence[Sequence[int]], int], np.ndarray], *, max_batch_size: int = 4,
         max_batch_tokens: int = 1024, max_wait_ms: float = 20.0, max_queue_inputs: int = 64,
         max_queue_tokens: int = 262_144, forward_timeout_s: float = 5.0,
         observer: Observer | None = None) -> Batcher:
    return Batcher(forward, policy=BatchPolicy(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                                               max_width=64),
                   queue=QueueConfig(max_wait_ms=max_wait_ms, max_queue_inputs=max_queue_inputs,
                                     max_queue_tokens=max_queue_tokens, forward_timeout_s=forward_timeout_s),
                   observer=observer)


def run(main: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout=timeout)

    return asyncio.run(bounded())


def later(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def test_poisoned_batch_fails_only_its_own_items() -> None:
    seen: list[list[tuple[int, ...]]] = []

    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        seen.append([tuple(r) for r in rows])
        if any(POISON in r for r in rows):
            raise ValueError("secret internal detail: poisoned row")
        return logits_for(rows)

    rows = [[101, i, 102] for i in range(1, 13)]  # 12 equal-length rows: three batches of four
    rows[5] = [101, POISON, 102]

    async def main() -> tuple[list[Any], np.ndarray, bool, Recorder]:
        recorder = Recorder()
        batcher = make(forward, max_batch_size=4, observer=recorder)
        batcher.start()
        try:
            outcomes = await asyncio.gather(*batcher.submit(rows, deadline=later(), request_id="r1"),
                                            return_exceptions=True)
            # The worker survived the failure: later work runs as usual.
            after = await asyncio.gather(*batcher.submit([[101, 7, 7, 102]], deadline=later(), request_id="r2"))
            return list(outcomes), after[0], batcher.healthy, recorder
        finally:
            await batcher.stop()

    outcomes, after, healthy, recorder = run(main)
    by_row = {tuple(r): o for r, o in zip(rows, outcomes)}
    poisoned = [b for b in seen if any(POISON in r for r in b)]
    assert len(poisoned) == 1 and len(poisoned[0]) > 1, seen
    for row in poisoned[0]:  # every item that shared the poisoned batch failed, generically
        err = by_row[row]
        assert isinstance(err, BatchFailedError), err
        assert "secret" not in str(err) and "poisoned" not in str(err)
    healthy_rows = [r for b in seen if b not in poisoned for r in b if r in by_row]  # (not the later request)
    assert len(healthy_rows) == len(rows) - len(poisoned[0]) > 0
    for row in healthy_rows:  # every other item got its own logits
        np.testing.assert_array_equal(by_row[row], logits_for([row])[0])
    np.testing.assert_array_equal(after, logits_for([[101, 7, 7, 102]])[0])
    assert healthy
    assert sum(recorder.batches) == len(healthy_rows) + 1  # failed batches are not counted as computed


def test_out_of_memory_splits_the_batch_until_it_fits() -> None:
    calls: list[int] = []

    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        calls.append(len(rows))
        if len(rows) > 2:
            raise RuntimeError(f"CUDA out of memory. Tried to allocate {len(rows)} GiB")
        return logits_for(rows)

    rows = [[101, i, *([5] * (i % 3)), 102] for i in range(1, 9)]

    async def main() -> tuple[list[Any], Recorder]:
        recorder = Recorder()
        batcher = make(forward, max_batch_size=8, observer=recorder)
        batcher.start()
        try:
            outs = await asyncio.gather(*batcher.submit(rows, deadline=later(), request_id="oom"),
                                        return_exceptions=True)
            return list(outs), recorder
        finally:
            await batcher.stop()

    outs, recorder = run(main)
    for row, out in zip(rows, outs):
        assert not isinstance(out, BaseException), out
        np.testing.assert_array_equal(out, logits_for([row])[0])
    assert calls[0] > 2 and max(recorder.batches) <= 2
    assert sum(recorder.batches) == len(rows)


def test_out_of_memory_on_a_single_row_fails_it_and_others_go_on() -> None:
    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        if any(len(r) > 10 for r in rows):
            raise MemoryError()
        return logits_for(rows)

    async def main() -> tuple[Any, Any]:
        batcher = make(forward, max_batch_size=1)
        batcher.start()
        try:
            big = batcher.submit([[101, *range(1, 20), 102]], deadline=later(), request_id="big")
            small = batcher.submit([[101, 3, 102]], deadline=later(), request_id="small")
            return (await asyncio.gather(*big, return_exceptions=True))[0], (await asyncio.gather(*small))[0]
        finally:
            await batcher.stop()

    big, small = run(main)
    assert isinstance(big, BatchFailedError)
    np.testing.assert_array_equal(small, logits_for([[101, 3, 102]])[0])


def test_other_errors_do_not_split() -> None:
    calls: list[int] = []

    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        calls.append(len(rows))
        raise RuntimeError("shape mismatch")

    async def main() -> list[Any]:
        batcher = make(forward, max_batch_size=4)
        batcher.start()
        try:
            futures = batcher.submit([[101, i, 102] for i in range(1, 5)], deadline=later(), request_id="x")
            return list(await asyncio.gather(*futures, return_exceptions=True))
        finally:
            await batcher.stop()

    outs = run(main)
    assert calls == [4]
    assert all(isinstance(o, BatchFailedError) for o in outs)


def test_expired_deadline_is_answered_without_running() -> None:
    ran: list[tuple[int, ...]] = []

    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        ran.extend(tuple(r) for r in rows)
        return logits_for(rows)

    async def main() -> tuple[list[Any], Recorder]:
        recorder = Recorder()
        batcher = make(forward, observer=recorder)
        batcher.start()
        try:
            past = batcher.submit([[101, 1, 102], [101, 2, 2, 102]], deadline=time.monotonic() - 0.01,
                                  request_id="late")
            live = batcher.submit([[101, 3, 102]], deadline=later(), request_id="ok")
            return list(await asyncio.gather(*past, *live, return_exceptions=True)), recorder
        finally:
            await batcher.stop()

    outs, recorder = run(main)
    assert isinstance(outs[0], DeadlineExceededError) and isinstance(outs[1], DeadlineExceededError)
    np.testing.assert_array_equal(outs[2], logits_for([[101, 3, 102]])[0])
    assert ran == [(101, 3, 102)]
    assert recorder.drops == [("expired", 2)]


def test_deadline_passing_behind_a_stalled_forward_is_dropped_unrun() -> None:
    ran: list[tuple[int, ...]] = []

    async def main() -> tuple[Any, Any, float, Recorder]:
        in_forward = ForwardStarted()

        def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
            ran.extend(tuple(r) for r in rows)
            in_forward.set()
            if any(r[1] == 1 for r in rows):
                # The stalled runtime: the thing tested. It must outlast the victim's 0.1 s deadline.
                time.sleep(0.4)
            return logits_for(rows)

        recorder = Recorder()
        batcher = make(forward, max_wait_ms=0, observer=recorder)
        batcher.start()
        try:
            blocker = batcher.submit([[101, 1, 102]], deadline=later(), request_id="blocker")
            await in_forward.wait()  # the blocker is in the forward pass now
            started = time.monotonic()
            victim = batcher.submit([[101, 2, 102]], deadline=started + 0.1, request_id="victim")
            outcome = (await asyncio.gather(*victim, return_exceptions=True))[0]
            waited = time.monotonic() - started
            return (await asyncio.gather(*blocker))[0], outcome, waited, recorder
        finally:
            await batcher.stop()

    blocker, victim, waited, recorder = run(main)
    np.testing.assert_array_equal(blocker, logits_for([[101, 1, 102]])[0])
    assert isinstance(victim, DeadlineExceededError)
    assert waited < 2.0
    assert (101, 2, 102) not in ran
    assert recorder.drops == [("expired", 1)]


def test_cancelled_items_are_dropped_unrun() -> None:
    ran: list[tuple[int, ...]] = []
    release = threading.Event()

    async def main() -> Recorder:
        in_forward = ForwardStarted()

        def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
            ran.extend(tuple(r) for r in rows)
            in_forward.set()
            release.wait(timeout=5)
            return logits_for(rows)

        recorder = Recorder()
        batcher = make(forward, max_wait_ms=0, observer=recorder)
        batcher.start()
        try:
            blocker = batcher.submit([[101, 1, 102]], deadline=later(), request_id="blocker")
            await in_forward.wait()  # the blocker is in the forward pass now
            gone = batcher.submit([[101, 2, 102], [101, 3, 102]], deadline=later(), request_id="gone")
            for f in gone:
                f.cancel()  # what the server does when the client disconnects
            release.set()
            await asyncio.gather(*blocker)
            await asyncio.wait_for(recorder.any_dropped.wait(), 5)  # the worker pruned the cancelled items
            assert batcher.idle
            return recorder
        finally:
            release.set()
            await batcher.stop()

    recorder = run(main)
    assert ran == [(101, 1, 102)]
    assert recorder.drops == [("cancelled", 2)]


def test_admission_beyond_the_queue_limits_is_overloaded() -> None:
    async def main() -> None:
        batcher = make(logits_for_forward, max_queue_inputs=4, max_queue_tokens=100)
        first = batcher.admit(["a", "b", "c"])
        with pytest.raises(OverloadedError):
            batcher.admit(["d", "e"])
        assert (batcher.reserved_inputs, batcher.reserved_tokens) == (3, 9)  # the refused call reserved nothing
        second = batcher.admit(["d"])  # exactly at the limit
        with pytest.raises(OverloadedError):
            batcher.admit(["e"])
        batcher.release(first)
        batcher.release(first)  # releasing twice gives back once
        assert batcher.reserved_inputs == 1
        batcher.release(second)
        assert (batcher.reserved_inputs, batcher.reserved_tokens) == (0, 0)
        # Tokens: an estimate of min(max_length, characters + 2) per text.
        big = batcher.admit(["z" * 1000])  # counts max_length = 64, not 1002
        assert batcher.reserved_tokens == 64
        with pytest.raises(OverloadedError):
            batcher.admit(["y" * 40])  # 64 + 42 > 100
        batcher.release(big)
        batcher.admit(["y" * 40])
        await batcher.stop()

    run(main)


def logits_for_forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
    return logits_for(rows)


def test_slow_forward_times_out_and_marks_unhealthy() -> None:
    release = threading.Event()

    def forward(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        release.wait(timeout=5)
        return logits_for(rows)

    async def main() -> tuple[Any, bool]:
        batcher = make(forward, forward_timeout_s=0.2)
        batcher.start()
        try:
            out = await asyncio.gather(*batcher.submit([[101, 1, 102]], deadline=later(), request_id="stuck"),
                                       return_exceptions=True)
            return out[0], batcher.healthy
        finally:
            release.set()
            await batcher.stop()

    out, healthy = run(main)
    assert isinstance(out, BatchFailedError) and "in time" in str(out)
    assert healthy is False
