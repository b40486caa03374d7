"""Fixtures of the component tests that more than one module uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from ray_support import DELAY


@pytest.fixture(scope="module")


def ray_cluster() -> Iterator[Any]:
    """A multi-node Ray cluster on this machine, one per test module: a head with no CPUs and two 1-CPU worker
    nodes. The fault tests use the deterministic dummy backend, slowed per token (``DELAY``, set before the nodes
    start so their workers inherit it), so that a node can be removed, or the driver SIGKILLed, mid-run."""
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.get(DELAY)
    os.environ[DELAY] = "0.0003"  # only the dummy backend reads it; its workers are started by the nodes below
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    # The in-process CLI runs below join this connection (init_ray is a no-op once Ray is up), and they check that
    # padless's stderr is one line; Ray's own processes' log lines, forwarded to a driver's stderr, are not
    # padless's (a CI machine's nearly full disk made every raylet print "over 95% full" into those checks).
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if saved is None:
            os.environ.pop(DELAY, None)
        else:
            os.environ[DELAY] = saved
