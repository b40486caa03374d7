"""Connecting to Ray: one place that starts or joins a cluster the way padless wants it (no telemetry, no dashboard)."""

from __future__ import annotations

import os
from typing import Any

from padless.errors import PadlessError


def import_ray() -> Any:
    """Import ray with usage statistics off (Ray would otherwise report them to a web service), or say how to get it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as err:  # the optional extra is missing
        raise PadlessError("--ray needs Ray: pip install 'padless[ray]'") from err
    return ray


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` ("auto" = the one ``ray start`` began on this machine), or start a local one;
    a no-op when Ray is already initialised in this process.

    Without an address, ``RAY_ADDRESS`` is honoured (``ray job submit`` and KubeRay set it); otherwise a new local
    cluster is started, never whatever ``/tmp/ray`` last recorded: a plain ``ray.init()`` would try to join that, and a
    stale entry left by a killed cluster stalls start-up for a minute and then fails.
    ``num_cpus`` applies only to a local cluster started here (Ray sizes a joined cluster itself).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False,
                              "address": address or "local"}
    if kwargs["address"] == "local" and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise PadlessError(f"cannot start or join Ray at {address or 'a new local cluster'}: {err}") from err
    return ray
