"""``padless.ray.cluster.stop_leftover_haproxy``: after a local cluster died at once (its raylet killed, so its
workers could not clean up), the HAProxy processes Serve started for its node are stopped, found by their per-node
config file; nobody else's are touched. Stand-ins: Python processes whose ``argv[0]`` is ``haproxy``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")
from padless.ray.cluster import _running, stop_leftover_haproxy  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="found through Linux's /proc")


def _fake_haproxy(node: str) -> subprocess.Popen[bytes]:
    # `exec -a` names the process haproxy; Python ignores the arguments after its -c program, as HAProxy's own.
    cmd = (f'exec -a haproxy {sys.executable} -c "import time; time.sleep(120)" -db '
           f"-f /tmp/haproxy-serve/{node}/haproxy.cfg -dR")
    return subprocess.Popen(["bash", "-c", cmd])


def _named_haproxy(pid: int) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().startswith(b"haproxy\0")


def test_only_the_nodes_own_haproxy_processes_are_stopped() -> None:
    ours = [_fake_haproxy("aa11"), _fake_haproxy("aa11")]
    other = _fake_haproxy("bb22")
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and not all(_named_haproxy(p.pid) for p in [*ours, other]):
            time.sleep(0.05)  # until each has exec'd
        found = stop_leftover_haproxy("aa11", grace_s=5.0)
        assert sorted(found) == sorted(p.pid for p in ours)
        assert [p.wait(timeout=5) for p in ours] == [-15, -15]  # SIGTERM was enough
        assert other.poll() is None and _running(other.pid)
        assert stop_leftover_haproxy("cc33") == []
    finally:
        for p in [*ours, other]:
            if p.poll() is None:
                p.kill()
                p.wait()
