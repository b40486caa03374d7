"""Prometheus metrics for the server, in a registry of its own (so tests can build many apps in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from padless.batcher import Observer

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics(Observer):
    """All server metrics; also the batcher's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("padless_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.inputs = Counter("padless_inputs", "Inputs (texts) by outcome", ["status"], registry=r)
        self.queue_inputs = Gauge("padless_queue_inputs", "Inputs waiting in the batch queue", registry=r)
        self.queue_tokens = Gauge("padless_queue_tokens", "Tokens waiting in the batch queue", registry=r)
        self.reserved_inputs = Gauge("padless_admitted_inputs", "Inputs admitted and not yet answered", registry=r)
        self.batch_size = Histogram("padless_batch_size", "Rows per forward pass", buckets=_ROW_BUCKETS, registry=r)
        self.batch_tokens = Histogram("padless_batch_tokens", "Padded tokens (rows x longest) per forward pass",
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.real_tokens = Counter("padless_batch_real_tokens", "Real tokens computed", registry=r)
        self.padded_tokens = Counter("padless_batch_padded_tokens", "Tokens computed, padding included", registry=r)
        self.padding = Gauge("padless_padding_fraction", "Padded / computed tokens since start", registry=r)
        self.stage = Histogram("padless_stage_seconds", "Latency of each stage", ["stage"], buckets=_LATENCY_BUCKETS,
                               registry=r)
        self.cache_hits = Counter("padless_cache_hits", "Inputs answered from the result cache", registry=r)
        self.cache_misses = Counter("padless_cache_misses", "Inputs not in the result cache", registry=r)
        self.dropped_counter = Counter("padless_dropped_inputs", "Queued inputs dropped before running", ["reason"],
                                       registry=r)
        self._real = 0
        self._padded = 0

    def bind_queue(self, batcher: Any) -> None:
        self.queue_inputs.set_function(lambda: batcher.queued_inputs)
        self.queue_tokens.set_function(lambda: batcher.queued_tokens)
        self.reserved_inputs.set_function(lambda: batcher.reserved_inputs)

    # Observer hooks, called by the batcher on the event loop.
    def batch(self, rows: int, padded_tokens: int, real_tokens: int, forward_s: float) -> None:
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.real_tokens.inc(real_tokens)
        self.padded_tokens.inc(padded_tokens)
        self._real += real_tokens
        self._padded += padded_tokens
        self.padding.set(1 - self._real / self._padded if self._padded else 0.0)
        self.stage.labels("forward").observe(forward_s)

    def dequeued(self, waited_s: float) -> None:
        self.stage.labels("queue").observe(waited_s)

    def dropped(self, reason: str, count: int) -> None:
        self.dropped_counter.labels(reason).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
