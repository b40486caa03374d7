"""The online batcher: a bounded queue of tokenized inputs and one worker that forms token-budget batches.

Contract:

* **Admission** (:meth:`Batcher.admit`) happens before tokenizing and is counted in inputs and tokens (an upper
  bound, ``min(max_length, characters + 2)``, a text pair's both texts; corrected once the real lengths are known).
  Past ``max_queue_inputs`` or ``max_queue_tokens`` it raises :class:`OverloadedError` (HTTP 429) and reserves
  nothing.
* **Batching**: whenever the runtime is free, the worker drops queued items that were cancelled (client gone) or
  are past their deadline (answered 504), then plans the oldest ``lookahead`` items with the engine's pure planner
  and runs the batch that contains the oldest item — similar lengths together, and no item waits behind younger
  ones forever. A lightly loaded queue waits up to ``max_wait_ms`` for more work before running a small batch.
* **Isolation**: the forward pass runs on one dedicated thread, so the event loop (and tokenizing in other
  threads) never waits for it. A batch that raises fails only its own items; an out-of-memory error splits the
  batch and retries the halves; a forward slower than ``forward_timeout_s`` fails its items and marks the batcher
  unhealthy. The worker itself keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from padless.config import QueueConfig
from padless.errors import BatchFailedError, DeadlineExceededError, OverloadedError
from padless.planner import BatchPolicy, plan
from padless.tokenize import as_pair, char_count

if TYPE_CHECKING:
    from padless.engine import Engine

log = logging.getLogger("padless.batcher")

Forward = Callable[[Sequence[Sequence[int]], int], np.ndarray]


class Observer:
    """Metric hooks; the default does nothing."""

    def batch(self, rows: int, padded_tokens: int, real_tokens: int, forward_s: float) -> None: ...

    def dequeued(self, waited_s: float) -> None: ...

    def dropped(self, reason: str, count: int) -> None: ...


@dataclass
class Ticket:
    """Capacity reserved at admission, before tokenizing."""

    inputs: int
    tokens: int
    released: bool = False


@dataclass(eq=False)
class _Item:
    ids: Sequence[int]
    deadline: float
    enqueued: float
    request_id: str
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Admission:
    """Admission counted in inputs and tokens before tokenizing (the module docstring's first point). A base for
    whatever sits after the tokenizer: this batcher, and ``padless serve --ray``'s router to remote tiers.
    Subclasses set ``queue_config``, ``max_length``, ``reserved_inputs`` and ``reserved_tokens``."""

    queue_config: QueueConfig
    max_length: int
    reserved_inputs: int
    reserved_tokens: int

    def admit(self, texts: Sequence[object]) -> Ticket:
        """Reserve room for ``texts`` (texts or text pairs) or raise :class:`OverloadedError`; nothing is tokenized
        yet. A pair's bound is both texts' characters plus its separators (4 covers RoBERTa's, BERT has 3)."""
        tokens = sum(min(self.max_length, char_count(t) + (4 if as_pair(t) else 2)) for t in texts)
        return self.reserve(len(texts), tokens, "the server is at capacity; retry shortly")

    def reserve(self, inputs: int, tokens: int, overloaded: str) -> Ticket:
        """Reserve ``inputs`` and ``tokens`` under the queue limits, or raise :class:`OverloadedError` saying
        ``overloaded``. :meth:`admit` bounds the tokens from characters; a caller that already has token ids (a
        ``padless serve --ray`` tier replica) passes their real count."""
        q = self.queue_config
        if self.reserved_inputs + inputs > q.max_queue_inputs or self.reserved_tokens + tokens > q.max_queue_tokens:
            raise OverloadedError(overloaded)
        self.reserved_inputs += inputs
        self.reserved_tokens += tokens
        return Ticket(inputs=inputs, tokens=tokens)

    def release(self, ticket: Ticket) -> None:
        """Give back what ``admit`` reserved (once; later calls do nothing)."""
        if not ticket.released:
            ticket.released = True
            self.reserved_inputs -= ticket.inputs
            self.reserved_tokens -= ticket.tokens


class Batcher(Admission):
    """See the module docstring. Create inside a running event loop; call :meth:`start`, then :meth:`stop`."""

    def __init__(self, forward: Forward, *, policy: BatchPolicy, queue: QueueConfig, max_length: int | None = None,
                 observer: Observer | None = None) -> None:
        """``policy``: how batches are planned (``Engine.policy``); ``max_length``: the admission bound per input
        (default: the policy's widest batch)."""
        self._forward = forward
        self.policy = policy
        self.queue_config = queue
        self.max_length = policy.width_cap if max_length is None else max_length
        self.observer = observer or Observer()
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="padless-forward")
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self.healthy = True
        self.reserved_inputs = 0  # admitted and not yet answered: tokenizing, queued or in a forward pass
        self.reserved_tokens = 0

    @classmethod
    def for_engine(cls, engine: Engine, *, queue: QueueConfig, observer: Observer | None = None,
                   forward: Forward | None = None) -> Batcher:
        """A batcher that plans served batches as ``engine`` (a classifier or an embedder) plans offline ones: one
        value, :attr:`Engine.policy` (batch limits, token limit, and the runtime's width rounding and per-batch
        price). ``forward`` defaults to ``engine.forward_padded``."""
        return cls(forward or engine.forward_padded, policy=engine.policy, queue=queue, max_length=engine.max_length,
                   observer=observer)

    @property
    def queued_inputs(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return sum(len(item.ids) for item in self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    # -- submission -----------------------------------------------------------------------------------------------

    def submit(self, ids: Sequence[Sequence[int]], *, deadline: float,
               request_id: str) -> list[asyncio.Future[np.ndarray]]:
        """Queue tokenized inputs; each future resolves to that input's logits row (or raises)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for row in ids:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append(_Item(ids=row, deadline=deadline, enqueued=now, request_id=request_id, future=future))
            futures.append(future)
        self._wakeup.set()
        return futures

    # -- the worker -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="padless-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(BatchFailedError("the server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            try:
                items = await self._next_batch()
                if items:
                    await self._execute(items)
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must outlive any bug in one batch
                log.exception("batcher loop error")
                await asyncio.sleep(0.01)

    def _prune(self) -> None:
        now = time.monotonic()
        kept: deque[_Item] = deque()
        cancelled = expired = 0
        for item in self._queue:
            if item.future.done():  # cancelled: by its handler at the deadline, or for a client that went away
                if item.deadline <= now:
                    expired += 1
                else:
                    cancelled += 1
            elif item.deadline <= now:
                item.future.set_exception(DeadlineExceededError("the request's deadline passed before it ran"))
                expired += 1
            else:
                kept.append(item)
        self._queue = kept
        if cancelled:
            self.observer.dropped("cancelled", cancelled)
        if expired:
            self.observer.dropped("expired", expired)

    def _enough_queued(self) -> bool:
        b = self.policy
        if len(self._queue) >= b.max_batch_size:
            return True
        longest = max(len(item.ids) for item in self._queue)
        return longest * len(self._queue) >= b.max_batch_tokens

    async def _next_batch(self) -> list[_Item]:
        max_wait = self.queue_config.max_wait_ms / 1000
        while True:
            self._prune()
            if not self._queue:
                self._wakeup.clear()
                try:  # bounded, so a lost wake-up can never park the worker for good
                    await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            left = self._queue[0].enqueued + max_wait - time.monotonic()
            if left <= 0 or self._enough_queued():
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass
        window = [self._queue[i] for i in range(min(len(self._queue), self.queue_config.lookahead))]
        batches = plan([len(item.ids) for item in window], self.policy)
        chosen = next(b for b in batches if 0 in b.indices)  # the oldest item's batch: no starvation
        picked = [window[i] for i in chosen.indices]
        picked_ids = {id(item) for item in picked}
        self._queue = deque(item for item in self._queue if id(item) not in picked_ids)
        now = time.monotonic()
        for item in picked:
            self.observer.dequeued(now - item.enqueued)
        return picked

    async def _execute(self, items: list[_Item]) -> None:
        self._busy = True
        try:
            await self._forward_and_resolve(items)
        finally:
            self._busy = False

    async def _forward_and_resolve(self, items: list[_Item]) -> None:
        rows = [item.ids for item in items]
        # The planner's width for these rows (rounded as it priced them; an OOM half is re-rounded the same way).
        width = self.policy.width(max(len(r) for r in rows))
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            logits = await asyncio.wait_for(loop.run_in_executor(self._executor, self._forward, rows, width),
                                            timeout=self.queue_config.forward_timeout_s)
        except asyncio.TimeoutError:
            self.healthy = False
            log.error("forward pass exceeded %.1fs for %d rows; marking unhealthy (requests %s)",
                      self.queue_config.forward_timeout_s, len(items), _ids(items))
            self._fail(items, BatchFailedError("the model did not answer in time"))
            return
        except Exception as err:
            if _is_oom(err) and len(items) > 1:
                half = len(items) // 2
                log.warning("out of memory on %d rows x %d tokens; retrying as two halves", len(items), width)
                await self._forward_and_resolve(items[:half])
                await self._forward_and_resolve(items[half:])
                return
            log.error("forward pass failed for requests %s: %s", _ids(items), type(err).__name__, exc_info=err)
            self._fail(items, BatchFailedError("the model failed on this request"))
            return
        elapsed = time.monotonic() - started
        self.observer.batch(len(rows), len(rows) * width, sum(len(r) for r in rows), elapsed)
        for item, row in zip(items, logits):
            if not item.future.done():
                item.future.set_result(row)

    @staticmethod
    def _fail(items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _ids(items: list[_Item]) -> str:
    return ",".join(sorted({item.request_id for item in items}))

