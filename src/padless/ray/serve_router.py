"""The ingress side of ``padless serve --ray``: length tiers behind padless's own Service.

:class:`TierRouter` takes the batcher's place in :class:`~padless.server.service.Service` (its ``scorer``, the
:class:`~padless.server.service.Scorer` seam): it admits requests in inputs and tokens before they are tokenized (as
``padless serve`` does), then sends each tokenized input to the short tier (at most ``long_threshold`` tokens) or the
long tier, one handle call per tier per request, and resolves each input's future with its logits row, so a request
with both is split and re-joined in input order by the Service unchanged. Every call has the request's deadline.

Ray's failures become padless's envelope: Serve's ``BackPressureError`` (a tier's ``max_queued_requests``) and a
replica's own :class:`~padless.errors.OverloadedError` are a 429 with ``Retry-After``; a replica that dies under a
request (``ActorDiedError``, ``ActorUnavailableError``) fails that request alone with a 503 "replica lost, retry",
while Serve starts a new replica. :class:`RayService` adds readiness (every tier has a live replica), ``/info`` and
``/metrics`` per tier, and the drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from padless.batcher import Admission
from padless.config import QueueConfig, ServerConfig
from padless.engine import Engine
from padless.errors import BatchFailedError, DeadlineExceededError, OverloadedError, PadlessError, ReplicaLostError
from padless.ray.cluster import import_ray
from padless.ray.front_door import HAPROXY_ENV
from padless.runtime.base import Runtime
from padless.server.metrics import Metrics
from padless.server.service import Service
from padless.tokenize import type_ids_of

log = logging.getLogger(__name__)
TIERS = ("short", "long")
PROBE_TIMEOUT_S = 3.0  # readiness asks each tier for a live replica within this


class TierMetrics:
    """``/metrics`` per tier (label ``tier``): inputs by outcome, call latency, inputs in flight, live replicas,
    and the replicas' own batch counters (summed over every replica seen, a restarted one included)."""

    def __init__(self, metrics: Metrics, tiers: Sequence[str]) -> None:
        r = metrics.registry
        self.inputs = Counter("padless_tier_inputs", "Inputs sent to a tier, by outcome", ["tier", "status"],
                              registry=r)
        self.seconds = Histogram("padless_tier_seconds", "Latency of one tier call (queue + forward)", ["tier"],
                                 buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
                                 registry=r)
        self.in_flight = {t: 0 for t in tiers}
        self.live = {t: 0 for t in tiers}
        self.replicas: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in tiers}
        flight = Gauge("padless_tier_in_flight_inputs", "Inputs sent to a tier and not answered", ["tier"], registry=r)
        live = Gauge("padless_tier_live", "1 if the tier answered the last readiness probe", ["tier"], registry=r)
        sums = {name: Gauge(f"padless_tier_{name}", f"Replica counter {name}, summed over the tier's replicas",
                            ["tier"], registry=r)
                for name in ("batches", "rows", "real_tokens", "padded_tokens", "forward_s", "queue_s", "expired",
                             "promotions")}
        padding = Gauge("padless_tier_padding_fraction", "Padded / computed tokens of the tier's replicas", ["tier"],
                        registry=r)
        for t in tiers:
            flight.labels(t).set_function(partial(self.in_flight.__getitem__, t))
            live.labels(t).set_function(partial(self.live.__getitem__, t))
            for name, gauge in sums.items():
                gauge.labels(t).set_function(partial(self.total, t, name))
            padding.labels(t).set_function(partial(self.padding, t))

    def total(self, tier: str, name: str) -> float:
        return float(sum(stats.get(name, 0) for stats in self.replicas[tier].values()))

    def padding(self, tier: str) -> float:
        padded = self.total(tier, "padded_tokens")
        return 1.0 - self.total(tier, "real_tokens") / padded if padded else 0.0

    def seen(self, tier: str, stats: dict[str, Any]) -> None:
        self.replicas[tier][str(stats.get("replica", "?"))] = stats


@dataclass(eq=False)
class _Call:
    """One handle call: a request's inputs for one tier."""

    tier: str
    rows: list[Sequence[int]]
    futures: list[asyncio.Future[np.ndarray]]
    abandoned: asyncio.Future[None] = field(repr=False)


class TierRouter(Admission):
    """See the module docstring; a :class:`~padless.server.service.Scorer`. Admission (before tokenizing) is
    padless's :class:`~padless.batcher.Admission`, counted as a local batcher counts it."""

    def __init__(self, handles: dict[str, Any], *, long_threshold: int, queue: QueueConfig, max_length: int,
                 metrics: Metrics) -> None:
        self.handles = handles
        self.long_threshold = long_threshold
        self.queue_config = queue
        self.max_length = max_length
        self.metrics = TierMetrics(metrics, list(handles))
        self.healthy = True  # the ingress itself; a tier's health is readiness (and Serve's health checks)
        self.reserved_inputs = 0
        self.reserved_tokens = 0
        self.backends: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queued_inputs(self) -> int:
        return sum(self.metrics.in_flight.values())

    @property
    def queued_tokens(self) -> int:
        return sum(len(row) for task in self._tasks for row in getattr(task, "padless_rows", ()))

    @property
    def idle(self) -> bool:
        return not self._tasks

    # -- routing --------------------------------------------------------------------------------------------------

    def tier_of(self, length: int) -> str:
        return "long" if "long" in self.handles and length > self.long_threshold else "short"

    def submit(self, ids: Sequence[Sequence[int]], *, deadline: float,
               request_id: str) -> list[asyncio.Future[np.ndarray]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[np.ndarray]] = [loop.create_future() for _ in ids]
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(ids):
            groups.setdefault(self.tier_of(len(row)), []).append(i)
        for tier, positions in groups.items():
            call = _Call(tier=tier, rows=[ids[i] for i in positions], futures=[futures[i] for i in positions],
                         abandoned=loop.create_future())
            for f in call.futures:
                f.add_done_callback(partial(_maybe_abandoned, call))
            task = loop.create_task(self._call(call, deadline, request_id), name=f"padless-tier-{tier}")
            task.padless_rows = call.rows  # type: ignore[attr-defined]  # for queued_tokens
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return futures

    async def _call(self, call: _Call, deadline: float, request_id: str) -> None:
        tier, n = call.tier, len(call.rows)
        self.metrics.in_flight[tier] += n
        started = time.monotonic()
        status = "ok"
        try:
            left = deadline - started
            if left <= 0:
                raise DeadlineExceededError("the request's deadline passed before it was sent to a tier")
            wire = [(list(row), type_ids_of(row)) for row in call.rows]
            response = self.handles[tier].score.remote(wire, left, request_id)
            fetch = asyncio.ensure_future(_result_of(response))
            fetch.add_done_callback(_retrieve)  # a fetch cancelled below must not log "exception never retrieved"
            done, _ = await asyncio.wait({fetch, call.abandoned}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                response.cancel()  # Serve cancels the replica's task, and its batcher drops the inputs unrun
                fetch.cancel()
                if call.abandoned.done():  # the request's handler gave up (deadline, client gone): nobody waits
                    status = "cancelled"
                    return
                raise DeadlineExceededError("the request did not complete before its deadline")
            logits, stats = fetch.result()
        except Exception as err:  # every failure resolves this call's futures; the ingress lives on
            error = translate(err, tier)
            status = error.code
            for f in call.futures:
                if not f.done():
                    f.set_exception(error)
            return
        finally:
            self.metrics.in_flight[tier] -= n
            self.metrics.inputs.labels(tier, status).inc(n)
            self.metrics.seconds.labels(tier).observe(time.monotonic() - started)
        self.metrics.seen(tier, stats)
        for f, row in zip(call.futures, logits):
            if not f.done():
                f.set_result(row)

    async def probe(self) -> dict[str, str]:
        """Ask every tier for a live replica (a real 1-token forward) within :data:`PROBE_TIMEOUT_S`; each tier's
        reason if it is not ready ("ok" if it is)."""
        async def one(tier: str) -> str:
            response = self.handles[tier].ping.remote()
            try:
                answer = await asyncio.wait_for(_result_of(response), timeout=PROBE_TIMEOUT_S)
            except asyncio.TimeoutError:
                response.cancel()
                return f"no live {tier} replica"
            except Exception as err:
                cause = getattr(err, "cause", None) or err
                if type(cause).__name__ == "BackPressureError":  # replicas alive but full: live, and busy
                    return "ok"
                return f"the {tier} tier did not answer ({type(cause).__name__})"
            self.backends[tier] = answer["backend"]
            return "ok"

        reasons = dict(zip(self.handles, await asyncio.gather(*(one(t) for t in self.handles))))
        for tier, reason in reasons.items():
            self.metrics.live[tier] = int(reason == "ok")
        return reasons

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _maybe_abandoned(call: _Call, _: object) -> None:
    if not call.abandoned.done() and all(f.cancelled() for f in call.futures):
        call.abandoned.set_result(None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _result_of(response: Any) -> Any:
    return await response


def translate(err: BaseException, tier: str) -> PadlessError:
    """A tier call's failure as the padless error a client gets (one clear line; no Ray text in any body)."""
    ray = import_ray()
    from ray.serve.exceptions import (
        BackPressureError,
        DeploymentUnavailableError,
        ReplicaUnavailableError,
        RequestCancelledError,
    )

    cause = getattr(err, "cause", None) or err  # a RayTaskError carries the replica's own exception as .cause
    if isinstance(cause, BackPressureError):
        return OverloadedError(f"the {tier} tier is at capacity; retry shortly")
    if isinstance(cause, OverloadedError):
        return OverloadedError(str(cause.args[0]) if cause.args else "the server is at capacity; retry shortly")
    if isinstance(cause, DeadlineExceededError):
        return DeadlineExceededError(str(cause.args[0]) if cause.args else "the request's deadline passed")
    lost = (ray.exceptions.RayActorError, ReplicaUnavailableError, DeploymentUnavailableError, RequestCancelledError,
            ray.exceptions.TaskCancelledError)
    if isinstance(cause, lost):
        log.warning("%s tier: replica lost under a request (%s)", tier, type(cause).__name__)
        return ReplicaLostError(f"a {tier} tier replica was lost while running this request; retry")
    if isinstance(cause, PadlessError) and not isinstance(cause, BatchFailedError):
        return type(cause)(str(cause.args[0]) if cause.args else cause.code)  # e.g. too_long: a 4xx it explains
    log.error("%s tier call failed: %s", tier, type(cause).__name__, exc_info=err)
    return BatchFailedError("the model failed on this request")


class RayService(Service):
    """padless's Service with :class:`TierRouter` in place of the local batcher. ``engine`` (a classifier or an
    embedder) holds the tokenizer, labels or embedding settings, and post-processing only: its runtime never runs
    here (:class:`RemoteRuntime`)."""

    def __init__(self, engine: Engine, *, server: ServerConfig, queue: QueueConfig, handles: dict[str, Any],
                 long_threshold: int, drain_signal: str | None = None) -> None:
        super().__init__(engine, server=server, queue=queue)
        self.router = TierRouter(handles, long_threshold=long_threshold, queue=queue,
                                 max_length=engine.max_length, metrics=self.metrics)
        self.long_threshold = long_threshold
        self.drain_signal = drain_signal
        self._drain_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.scorer = self.router
        self.metrics.bind_queue(self.router)
        self.warmed = True  # the tiers warm up in their own constructors; readiness asks them
        if self.drain_signal:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_on_signal())

    async def stop(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
        await super().stop()

    async def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        reasons = await self.router.probe()
        bad = [reason for reason in reasons.values() if reason != "ok"]
        return (False, "; ".join(bad)) if bad else (True, "ok")

    def info(self) -> dict[str, Any]:
        out = super().info()
        short = self.router.backends.get("short")
        if short is not None:
            out["backend"] = short
            out["model_dtype"] = short.get("dtype")
        out["ray"] = {"long_threshold": self.long_threshold, "tiers": dict(self.router.backends),
                      "http_proxy": serve_http_proxy()}
        return out

    async def _drain_on_signal(self) -> None:
        """Wait (no polling) for the ``padless serve --ray`` process's SIGTERM, then drain like ``padless serve``:
        readiness false and new requests 503 at once, admitted ones finish within the drain timeout."""
        ray = import_ray()
        try:
            signal = ray.get_actor(self.drain_signal, namespace=DRAIN_NAMESPACE)
            await signal.wait.remote()
        except asyncio.CancelledError:
            raise
        except Exception:  # no driver signal actor (e.g. `serve run`): Serve's own graceful shutdown applies
            log.info("no drain signal %s; relying on Serve's graceful shutdown", self.drain_signal)
            return
        self.draining = True
        end = time.monotonic() + self.server_config.drain_timeout_s
        started = time.monotonic()
        while (self.in_flight or not self.router.idle) and time.monotonic() < end:
            await asyncio.sleep(0.02)
        log.info("drained in %.2fs (in flight left: %d)", time.monotonic() - started, self.in_flight)
        try:
            await signal.done.remote()
        except Exception:  # the driver went first; nothing left to tell
            pass


DRAIN_NAMESPACE = "padless"


def serve_http_proxy() -> str:
    """Which front door Serve runs in this cluster, as this replica sees it: "haproxy" (HAProxy forwarding to the
    ingress replicas' own HTTP servers) or "python" (Serve's Python proxy actor). Serve's controller hands its
    environment (``serve.start``'s ``controller_options``, see :func:`padless.ray.front_door.controller_env`) to the
    actors it starts, this replica included."""
    return "haproxy" if os.environ.get(HAPROXY_ENV) == "1" else "python"


class RemoteRuntime(Runtime):
    """Stands in for the ingress classifier's runtime: the model runs in the tiers, never here. A Runtime, so the
    shared server code reads what it reads of any runtime (``describe``, ``width_multiple``); the ingress plans no
    batch, and its ``/info`` shows the short tier's backend entry once the tiers have reported."""

    name = "ray-tiers"

    def __init__(self, describe: dict[str, Any]) -> None:
        self._describe = describe

    def forward(self, *_: Any) -> np.ndarray:
        raise RuntimeError("the ingress does not run the model; its tiers do")

    def warmup(self, *_: Any) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)
