"""``padless serve --ray``'s default threads per short-tier replica (pure arithmetic, no cluster)."""

from __future__ import annotations

from padless.ray.tier_priority import short_tier_threads


def test_one_tier_divides_every_cpu_among_its_replicas() -> None:
    assert short_tier_threads(2, 2, 2, tiers=False) == 1
    assert short_tier_threads(2, 2, 1, tiers=False) == 2
    assert short_tier_threads(16, 16, 3, tiers=False) == 5


def test_with_tiers_one_cpu_is_left_to_the_ingress_and_the_long_tier() -> None:
    assert short_tier_threads(2, 2, 1, tiers=True) == 1
    assert short_tier_threads(16, 16, 3, tiers=True) == 5  # 15 // 3
    assert short_tier_threads(16, 16, 1, tiers=True) == 15


def test_never_below_one_thread_nor_above_a_node() -> None:
    assert short_tier_threads(1, 1, 1, tiers=True) == 1  # a single CPU is not left out
    assert short_tier_threads(2, 2, 4, tiers=True) == 1
    assert short_tier_threads(64, 8, 2, tiers=True) == 8  # 63 // 2 = 31, but one replica lives on one 8-CPU node
    assert short_tier_threads(0.5, 1, 1, tiers=False) == 1
