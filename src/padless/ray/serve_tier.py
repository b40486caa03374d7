"""One length tier of ``padless serve --ray``: a Ray Serve deployment whose replicas each hold a model and padless's
own token-budget :class:`~padless.batcher.Batcher` (not ``@serve.batch``).

The ingress sends each tier only token ids (it tokenized once) and the time left before the request's deadline; a
replica admits them in inputs and tokens (past its queue limits: :class:`~padless.errors.OverloadedError`, a 429 at
the ingress), queues them with every other request that reached it, and returns one logits row per input plus its
running batch counters (the ingress turns those into ``/metrics`` per tier). Serve restarts a replica that dies or
whose :meth:`TierReplica.check_health` raises (a forward pass stuck past ``--forward-timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from padless.batcher import Batcher, Observer
from padless.config import EngineSpec, QueueConfig
from padless.errors import DeadlineExceededError, TooLongError
from padless.ray.tier_priority import Promoter
from padless.tokenize import PairIds

log = logging.getLogger(__name__)

# What travels to a tier for one input: its token ids and, for a text pair, each token's segment.
WireRow = tuple[list[int], list[int] | None]


@dataclass(frozen=True, kw_only=True)
class TierSettings:
    """What a tier replica loads and how it batches (everything a replica needs is in here, no globals)."""

    name: str  # "short" or "long"
    # What a replica runs, whole: its model a resolved local folder; streams SERVING_STREAMS (serve_app sets it).
    engine: EngineSpec
    queue: QueueConfig
    spin: bool = True  # False when the tiers' threads share cores: an idle pool must not spin on a lent core
    background: bool = False  # run only on CPU time nobody else wants (the long tier's, when it shares the cores)
    promote_after_s: float = 0.0  # with background: a request this old lifts the replica to normal priority; 0: never


@dataclass
class TierStats(Observer):
    """Running batch counters of one replica (the batcher's observer); sent back with every answer."""

    replica: str = ""
    batches: int = 0
    rows: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_s: float = 0.0
    queue_s: float = 0.0
    expired: int = 0  # queued inputs dropped unrun: cancelled or past their deadline
    promotions: int = 0  # times a background replica was lifted to normal priority (padless.ray.tier_priority)

    def batch(self, rows: int, padded_tokens: int, real_tokens: int, forward_s: float) -> None:
        self.batches += 1
        self.rows += rows
        self.real_tokens += real_tokens
        self.padded_tokens += padded_tokens
        self.forward_s += forward_s

    def dequeued(self, waited_s: float) -> None:
        self.queue_s += waited_s

    def dropped(self, reason: str, count: int) -> None:
        self.expired += count


class TierReplica:
    """A Ray Serve replica of one tier (wrapped by ``serve.deployment`` in :mod:`padless.ray.serve`)."""

    async def __init__(self, settings: TierSettings) -> None:  # type: ignore[misc]  # Serve awaits it
        from transformers.utils import logging as hf_logging

        from padless.tasks import load_engine

        hf_logging.set_verbosity_error()
        self.settings = settings
        # Before the runtime starts its threads: they inherit it.
        self.promoter = Promoter(settings.promote_after_s) if settings.background else None
        if self.promoter is not None:
            self.promoter.start()
        self.engine = load_engine(settings.engine, serving=True,
                                  runtime_options=None if settings.spin else {"spin": False})
        # Warm up before Serve routes anything here: the constructor's end is what makes this replica "running".
        await asyncio.get_running_loop().run_in_executor(None, self.engine.runtime.warmup)
        self.stats = TierStats(replica=uuid.uuid4().hex[:8])
        self.batcher = Batcher.for_engine(self.engine, queue=settings.queue, observer=self.stats)
        self.batcher.start()
        self.last_success = time.monotonic()
        log.info("%s tier replica %s ready: %s", settings.name, self.stats.replica, self.engine.runtime.describe())

    async def score(self, wire: list[WireRow], timeout_s: float, request_id: str) -> tuple[np.ndarray, dict]:
        """Logits rows (input order) for ``wire``, within ``timeout_s``; and this replica's counters."""
        if timeout_s <= 0:
            raise DeadlineExceededError("the request's deadline passed before it reached a replica")
        rows: list[list[int]] = [ids if types is None else PairIds(ids, types) for ids, types in wire]
        longest = max(len(r) for r in rows)
        if longest > self.engine.max_length:  # serve_app refuses a tier model with a lower limit; kept as a guard
            raise TooLongError(f"an input of {longest} tokens is over the {self.settings.name} tier's "
                                  f"limit of {self.engine.max_length}")
        # Admission as padless serve's, with the real lengths (tokenized at the ingress) instead of a bound.
        ticket = self.batcher.reserve(len(rows), sum(len(r) for r in rows),
                                      f"the {self.settings.name} tier is at capacity; retry shortly")
        key = self.promoter.enter() if self.promoter is not None else None
        try:
            futures = self.batcher.submit(rows, deadline=time.monotonic() + timeout_s, request_id=request_id)
            try:
                logits = await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout_s)
            except asyncio.TimeoutError:
                raise DeadlineExceededError("the request did not complete before its deadline") from None
            finally:  # cancelled by the ingress (deadline, client gone) or failed: the batcher drops the rest unrun
                for f in futures:
                    f.cancel()
        finally:
            self.batcher.release(ticket)
            if key is not None and self.promoter is not None:
                self.promoter.leave(key)
        self.last_success = time.monotonic()
        if self.promoter is not None:
            self.stats.promotions = self.promoter.promotions
        return np.stack(logits).astype(np.float32), asdict(self.stats)

    async def ping(self) -> dict[str, Any]:
        """Readiness: the worker is healthy and (unless it answered in the last 5 s) a 1-token forward answers."""
        if not self.batcher.healthy:
            raise RuntimeError(f"the {self.settings.name} tier's model worker is unhealthy")
        if time.monotonic() - self.last_success >= 5.0:
            futures = self.batcher.submit([[self.engine.encoder.pad_id]], deadline=time.monotonic() + 5.0,
                                          request_id="readiness")
            await asyncio.wait_for(asyncio.gather(*futures), timeout=5.0)
            self.last_success = time.monotonic()
        return {"replica": self.stats.replica, "max_length": self.engine.max_length,
                "backend": {**self.engine.describe_backend(),
                            **(self.promoter.describe() if self.promoter is not None else {"cpu_priority": "normal"})}}

    def check_health(self) -> None:
        """Serve's health check: a replica whose forward pass got stuck is replaced."""
        if not self.batcher.healthy:
            raise RuntimeError(f"the {self.settings.name} tier's model worker is unhealthy")

