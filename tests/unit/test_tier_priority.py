"""The long tier's CPU priority (``padless.ray.tier_priority.Promoter``): every thread of the replica, those started
before :meth:`start` and after it, runs under ``SCHED_IDLE`` except the watchdog; a request held past
``promote_after_s`` lifts every thread to normal priority until it leaves; without the privilege to leave
``SCHED_IDLE`` the replica stays in the background. Each case runs in a child process (it changes the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")

CHILD = """
import json, os, sys, threading, time
from padless.ray.tier_priority import Promoter

mode, after_s = sys.argv[1], float(sys.argv[2])
if mode == "unprivileged":  # what a process without CAP_SYS_NICE gets when it asks to leave SCHED_IDLE
    real = os.sched_setscheduler
    def refuse(tid, policy, param):
        if policy != os.SCHED_IDLE:
            raise PermissionError(1, "Operation not permitted")
        return real(tid, policy, param)
    os.sched_setscheduler = refuse

ready, release = threading.Event(), threading.Event()
def wait():
    ready.set()
    release.wait()
before = threading.Thread(target=wait)
before.start()
ready.wait()
promoter = Promoter(after_s)
out = {"applied": promoter.start()}

def policy(tid=0):
    return os.sched_getscheduler(tid)

def poll(want, seconds=3.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and policy() != want:
        time.sleep(0.005)
    return policy()

def later():
    out["later"] = policy()
t = threading.Thread(target=later)
t.start()
t.join()
out["main"], out["before"] = policy(), policy(before.native_id)
out["watchdog"] = policy(promoter._watchdog_tid) if promoter._watchdog_tid else None
key = promoter.enter()
time.sleep(0.05)
out["young"] = policy()
out["old"] = poll(os.SCHED_OTHER) if mode == "promote" else (time.sleep(after_s + 0.3) or policy())
out["old_before"] = policy(before.native_id)
promoter.leave(key)
out["left"] = poll(os.SCHED_IDLE)
out["left_before"] = policy(before.native_id)
out["promotions"] = promoter.promotions
release.set()
print(json.dumps(out))
"""


def _child(mode: str, after_s: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(after_s)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _can_leave_idle() -> bool:
    probe = ("import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)); "
             "os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_background_threads_are_idle_and_a_request_held_too_long_lifts_them_until_it_leaves() -> None:
    if not _can_leave_idle():
        pytest.skip("this process may not leave SCHED_IDLE (no CAP_SYS_NICE)")
    idle, normal = os.SCHED_IDLE, os.SCHED_OTHER
    got = _child("promote", 0.2)
    assert got["applied"] == "idle"
    assert (got["main"], got["before"], got["later"]) == (idle, idle, idle)
    assert got["watchdog"] == normal  # it must wake on a busy machine to make the switch
    assert got["young"] == idle  # 50 ms < 200 ms: still in the background
    assert (got["old"], got["old_before"]) == (normal, normal)  # every thread, the running batch's included
    assert (got["left"], got["left_before"]) == (idle, idle)
    assert got["promotions"] == 1
    assert os.sched_getscheduler(0) != idle  # this process is untouched


def test_promote_after_zero_never_lifts_the_replica() -> None:
    got = _child("never", 0.0)
    idle = os.SCHED_IDLE
    assert got["applied"] == "idle" and got["watchdog"] is None
    assert (got["main"], got["before"], got["later"], got["old"], got["left"]) == (idle,) * 5
    assert got["promotions"] == 0


def test_without_the_privilege_the_replica_stays_in_the_background() -> None:
    got = _child("unprivileged", 0.1)
    idle = os.SCHED_IDLE
    assert got["applied"] == "idle"
    assert (got["young"], got["old"], got["old_before"], got["left"]) == (idle,) * 4
    assert got["promotions"] == 0
