"""The load report reads the metric names padless's servers really export: `padless serve`'s registry
(padless.server.metrics) and `padless serve --ray`'s per-tier gauges (padless.ray.serve_router.TierMetrics), rendered
by prometheus-client as a scrape would see them. The other loadstats tests use hand-written expositions, which would
go on passing if a server renamed a metric while the bench silently lost its server-side figures."""

from __future__ import annotations

import pytest

from padless.bench.loadstats import parse_prometheus, server_stats
from padless.ray.serve_router import TIERS, TierMetrics
from padless.server.metrics import Metrics


def _scrape(metrics: Metrics) -> dict[str, float]:
    return parse_prometheus(metrics.render().decode())


def test_report_reads_padless_serves_batch_metrics() -> None:
    metrics = Metrics()
    metrics.batch(rows=1, padded_tokens=8, real_tokens=8, forward_s=0.01)  # before the window: differenced away
    before = _scrape(metrics)
    metrics.batch(rows=4, padded_tokens=40, real_tokens=30, forward_s=0.01)
    metrics.batch(rows=2, padded_tokens=20, real_tokens=20, forward_s=0.01)
    stats = server_stats(before, _scrape(metrics))
    assert stats is not None
    assert (stats["batches"], stats["rows"]) == (2.0, 6.0)
    assert stats["mean_batch_size"] == pytest.approx(3.0)
    assert stats["mean_batch_tokens"] == pytest.approx(30.0)
    assert (stats["real_tokens"], stats["padded_tokens"]) == (50.0, 60.0)
    assert stats["padding_fraction"] == pytest.approx(1 - 50 / 60)


def test_report_reads_the_ray_ingress_tier_counters_not_its_idle_batch_metrics() -> None:
    metrics = Metrics()  # the ingress's own registry: its batch metrics stay at zero, it batches nothing
    tiers = TierMetrics(metrics, TIERS)
    tiers.seen("short", {"replica": "a", "batches": 1, "rows": 2, "real_tokens": 20, "padded_tokens": 24})
    before = _scrape(metrics)
    # Replicas report running totals with every answer: the window's figures are the difference, over both tiers.
    tiers.seen("short", {"replica": "a", "batches": 5, "rows": 14, "real_tokens": 300, "padded_tokens": 360})
    tiers.seen("long", {"replica": "b", "batches": 2, "rows": 2, "real_tokens": 900, "padded_tokens": 1000})
    stats = server_stats(before, _scrape(metrics))
    assert stats is not None
    assert (stats["batches"], stats["rows"]) == (6.0, 14.0)
    assert stats["mean_batch_size"] == pytest.approx(14 / 6)
    assert (stats["real_tokens"], stats["padded_tokens"]) == (1180.0, 1336.0)
    assert stats["padding_fraction"] == pytest.approx(1 - 1180 / 1336)
