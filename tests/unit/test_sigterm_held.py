"""``padless.ray.cluster.sigterm_held_by_children``: processes started inside it (there: the local Ray cluster's)
hold a SIGTERM pending instead of dying of it, and so do their own children; the caller's signal mask is restored,
so padless itself still gets its SIGTERM and drains. Stand-ins: plain Python processes."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytest.importorskip("ray")
from padless.ray.cluster import sigterm_held_by_children  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the signal mask in /proc")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A parent that starts a grandchild, prints its pid and waits: as the raylet starts the workers and replicas.
PARENT = [sys.executable, "-c", "import subprocess, sys, time; "
          "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(c.pid, flush=True); "
          "time.sleep(60)"]


def _blocks_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _alive_after_sigterm(proc: subprocess.Popen[bytes]) -> bool:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return True
    return False


def test_children_started_inside_hold_sigterm_and_the_caller_does_not() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with sigterm_held_by_children():
        held = subprocess.Popen(SLEEPER)
        parent = subprocess.Popen(PARENT, stdout=subprocess.PIPE)
    plain = subprocess.Popen(SLEEPER)
    grandchild = None
    try:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before  # padless itself still gets SIGTERM
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        assert _blocks_sigterm(held.pid) and _blocks_sigterm(parent.pid) and _blocks_sigterm(grandchild)
        assert not _blocks_sigterm(plain.pid)
        assert _alive_after_sigterm(held)  # held pending, not delivered
        assert not _alive_after_sigterm(plain)
        assert held.poll() is None
    finally:
        for proc in (held, parent, plain):
            proc.kill()
            proc.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if grandchild is not None:
            subprocess.run(["kill", "-9", str(grandchild)], check=False, capture_output=True)


def test_the_callers_mask_is_restored_when_the_body_fails() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with pytest.raises(RuntimeError), sigterm_held_by_children():
        assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        raise RuntimeError("ray.init failed")
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
