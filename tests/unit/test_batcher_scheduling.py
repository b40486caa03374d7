"""The batcher's batch formation: the oldest item always runs next, with similar lengths; accounting returns to zero."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from batcher_support import ForwardStarted
from padless.batcher import Batcher
from padless.config import QueueConfig
from padless.planner import BatchPolicy


def _run(coro):  # no pytest-asyncio here: each test drives its own loop
    return asyncio.run(coro)


def test_oldest_first_and_similar_lengths_together() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    async def main() -> None:
        in_forward = ForwardStarted()

        def forward(rows, width):
            in_forward.set()
            gate.wait(5)  # hold the first batch so the rest queue up behind it
            seen.append([len(r) for r in rows])
            return np.zeros((len(rows), 2), dtype=np.float32)

        b = Batcher(forward, policy=BatchPolicy(max_batch_tokens=600, max_batch_size=8, max_width=512),
                    queue=QueueConfig(max_wait_ms=0))
        b.start()
        deadline = time.monotonic() + 10
        first = b.submit([[1] * 4], deadline=deadline, request_id="first")
        await in_forward.wait()  # the worker took `first` alone and holds it in forward
        lengths = [300, 5, 5, 290, 6, 5, 5, 310]
        futures = [f for n in lengths for f in b.submit([[1] * n], deadline=deadline, request_id=str(n))]
        gate.set()
        await asyncio.wait_for(asyncio.gather(*first, *futures), timeout=10)
        await b.stop()

    _run(main())
    assert seen[0] == [4]
    # The oldest queued item (300 tokens) runs next, with the other long ones; 600-token budget → 2 rows of ~300.
    assert max(seen[1]) >= 300 and min(seen[1]) >= 290
    later = [n for batch in seen[2:] for n in batch]
    short = [n for n in later if n < 10]
    assert sorted(short) == [5, 5, 5, 5, 6]
    assert any(len(batch) >= 4 and max(batch) < 10 for batch in seen[2:])  # the short ones share a batch
    assert sorted(n for batch in seen for n in batch) == sorted([4, *[300, 5, 5, 290, 6, 5, 5, 310]])


def test_admission_accounting_returns_to_zero() -> None:
    def forward(rows, width):
        return np.ones((len(rows), 3), dtype=np.float32)

    async def main() -> tuple[int, int, list[np.ndarray]]:
        b = Batcher(forward, policy=BatchPolicy(max_batch_tokens=8192, max_batch_size=128, max_width=512),
                    queue=QueueConfig(max_queue_inputs=10, max_queue_tokens=10_000))
        b.start()
        ticket = b.admit(["hello there", "a"])
        assert (b.reserved_inputs, b.reserved_tokens) == (2, (11 + 2) + (1 + 2))
        rows = await asyncio.gather(*b.submit([[1, 2, 3], [1, 2]], deadline=time.monotonic() + 5, request_id="r"))
        b.release(ticket)
        b.release(ticket)  # a second release is a no-op
        await b.stop()
        return b.reserved_inputs, b.reserved_tokens, list(rows)

    inputs, tokens, rows = _run(main())
    assert (inputs, tokens) == (0, 0)
    assert [r.tolist() for r in rows] == [[1.0, 1.0, 1.0]] * 2


def test_served_batches_get_the_planners_rounded_width() -> None:
    widths: list[tuple[int, int]] = []

    def forward(rows, width):
        widths.append((max(len(r) for r in rows), width))
        return np.zeros((len(rows), 2), dtype=np.float32)

    async def main() -> None:
        b = Batcher(forward, policy=BatchPolicy(max_batch_tokens=4096, max_batch_size=8, max_width=100,
                                                width_multiple=16), queue=QueueConfig(max_wait_ms=0))
        b.start()
        deadline = time.monotonic() + 10
        for n in (3, 16, 17, 99):
            await asyncio.wait_for(asyncio.gather(*b.submit([[1] * n], deadline=deadline, request_id=str(n))), 10)
        await b.stop()

    _run(main())
    # Rounded up to a multiple of 16, but never past the model's limit (99 → 100, not 112).
    assert widths == [(3, 16), (16, 16), (17, 32), (99, 100)]


def test_the_runtimes_price_of_a_call_decides_how_much_rides_along() -> None:
    def first_batch_after_a_held_one(batch_overhead_tokens: int) -> list[int]:
        seen: list[list[int]] = []
        gate = threading.Event()

        async def main() -> None:
            in_forward = ForwardStarted()

            def forward(rows, width):
                in_forward.set()
                gate.wait(5)
                seen.append([len(r) for r in rows])
                return np.zeros((len(rows), 2), dtype=np.float32)

            policy = BatchPolicy(max_batch_tokens=600, max_batch_size=8, max_width=512,
                                 batch_overhead_tokens=batch_overhead_tokens)
            b = Batcher(forward, policy=policy, queue=QueueConfig(max_wait_ms=0))
            b.start()
            deadline = time.monotonic() + 10
            first = b.submit([[1] * 4], deadline=deadline, request_id="first")
            await in_forward.wait()  # the worker took `first` alone and holds it in forward
            futures = [f for n in [40, 5, 5, 5, 5] for f in b.submit([[1] * n], deadline=deadline, request_id=str(n))]
            gate.set()
            await asyncio.wait_for(asyncio.gather(*first, *futures), timeout=10)
            await b.stop()

        _run(main())
        return seen[1]

    # A CPU's price (32): padding four 5-token texts to 40 costs more than a second call, so the oldest runs alone.
    assert first_batch_after_a_held_one(32) == [40]
    # A GPU's (2048): one call for all five is cheaper than two.
    assert sorted(first_batch_after_a_held_one(2048)) == [5, 5, 5, 5, 40]


def test_a_batcher_for_a_classifier_plans_with_the_classifiers_own_settings() -> None:
    from types import SimpleNamespace

    def padded(rows, width):
        return np.zeros((len(rows), 2), dtype=np.float32)

    def wrapped(rows, width):
        return padded(rows, width)

    # Stands in for a Classifier: what a served batch is planned and run with (its policy, one value).
    policy = BatchPolicy(max_batch_tokens=1000, max_batch_size=5, max_width=77, width_multiple=8,
                         batch_overhead_tokens=2048)
    clf = SimpleNamespace(forward_padded=padded, policy=policy, max_length=77)
    queue = QueueConfig(max_wait_ms=1.0)

    async def main() -> tuple[Batcher, Batcher]:
        return (Batcher.for_engine(clf, queue=queue),  # type: ignore[arg-type]
                Batcher.for_engine(clf, queue=queue, forward=wrapped))  # type: ignore[arg-type]

    plain, own = _run(main())
    assert plain._forward is padded and own._forward is wrapped
    for b in (plain, own):
        assert b.policy is clf.policy and b.queue_config is queue
        assert b.max_length == 77
