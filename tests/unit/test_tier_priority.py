"""The long tier's CPU priority (``padless.ray.serve_tier.run_in_background``): every thread of the replica, those
started before the call and after it, runs under ``SCHED_IDLE`` (checked in a child process: it cannot be undone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json, os, threading
from padless.ray.serve_tier import run_in_background

ready, release = threading.Event(), threading.Event()
def wait():
    ready.set()
    release.wait()
before = threading.Thread(target=wait)
before.start()
ready.wait()
applied = run_in_background()
policies = {}
def record():
    policies["after"] = os.sched_getscheduler(0)
after = threading.Thread(target=record)
after.start()
after.join()
policies["main"] = os.sched_getscheduler(0)
policies["before"] = os.sched_getscheduler(before.native_id)
release.set()
print(json.dumps({"applied": applied, **policies}))
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_every_thread_runs_in_the_background_including_later_ones() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"applied": "idle", "main": os.SCHED_IDLE, "before": os.SCHED_IDLE, "after": os.SCHED_IDLE}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # this process is untouched
