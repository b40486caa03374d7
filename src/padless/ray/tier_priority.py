"""How the tiers of ``padless serve --ray`` share the CPUs: the long tier's priority (:class:`Promoter`) and the short
tier's default threads (:func:`short_tier_threads`).

When the tiers' threads together exceed the cores (the default: the short tier divides them, the long tier may use
them all), the long replica runs under Linux's ``SCHED_IDLE``: only on CPU time nobody else wants, so a short batch
that arrives on a shared core runs at once.

Idle time alone has no floor: under sustained short load there is none, and the long requests (which set the
all-request p99 that capacity is judged on) would wait without bound. So once a request has been in the replica for
``promote_after_s`` the whole replica runs at normal priority (the batch already running included: the threads
change class in place) until no request that old is left, then goes back to ``SCHED_IDLE``. "Normal" is
``SCHED_OTHER`` at the process's own nice value, which under Ray is the raylet's ``worker_niceness`` (15 by default,
as for every other Ray worker, the short tier's included). A watchdog thread of normal priority, started before the
replica lowers its own priority, makes the switch. Leaving ``SCHED_IDLE`` needs ``CAP_SYS_NICE`` (or an
``RLIMIT_NICE`` of at least 20 minus that nice value): without it the first promotion fails, is logged once, and the
replica stays in the background.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

log = logging.getLogger(__name__)


def _threads(exclude: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task") if int(t) != exclude]
    except OSError:
        return []


def set_policy(policy: int, exclude: int = 0) -> None:
    """Move every thread of this process but ``exclude`` to ``policy``; threads that end meanwhile are skipped."""
    for tid in _threads(exclude):
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except ProcessLookupError:
            continue


class Promoter:
    """Background priority for one long-tier replica, with promotion of requests that waited too long (see the
    module docstring). :meth:`start` lowers the process; :meth:`enter` / :meth:`leave` bracket each request."""

    def __init__(self, promote_after_s: float) -> None:
        self.promote_after_s = promote_after_s
        self.priority = "normal"
        self.promotions = 0
        self._pending: dict[int, float] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._promoted = False
        self._can_promote = promote_after_s > 0
        self._watchdog_tid = 0

    def start(self) -> str:
        """Start the watchdog (normal priority), then put every other thread of the process, and those they start
        later (threads inherit it), under ``SCHED_IDLE``. Returns what was applied ("idle", "nice+19" where
        ``SCHED_IDLE`` is missing, or "none": a failure only loses the priority, never the replica)."""
        idle = getattr(os, "SCHED_IDLE", None)
        if idle is None:
            self._can_promote = False
            try:
                os.nice(19)
                self.priority = "nice+19"
            except OSError as err:
                log.warning("could not lower the CPU priority of this replica: %s", err)
                self.priority = "none"
            return self.priority
        if self._can_promote:
            started = threading.Event()

            def watch() -> None:
                self._watchdog_tid = threading.get_native_id()
                started.set()
                self._watch()

            threading.Thread(target=watch, name="padless-long-promoter", daemon=True).start()
            started.wait()
        try:
            set_policy(idle, exclude=self._watchdog_tid)
            self.priority = "idle"
        except OSError as err:
            log.warning("could not lower the CPU priority of this replica: %s", err)
            self.priority = "none"
            self._can_promote = False
        return self.priority

    def enter(self) -> int:
        """A request reached the replica; returns its key for :meth:`leave`."""
        key = next(self._ids)
        with self._cond:
            self._pending[key] = time.monotonic()
            if len(self._pending) == 1:
                self._cond.notify()
        return key

    def leave(self, key: int) -> None:
        with self._cond:
            self._pending.pop(key, None)
            self._cond.notify()

    def _watch(self) -> None:
        idle, normal = os.SCHED_IDLE, os.SCHED_OTHER
        with self._cond:
            while self._can_promote:
                now = time.monotonic()
                oldest = min(self._pending.values(), default=None)
                overdue = oldest is not None and now - oldest >= self.promote_after_s
                if overdue and not self._promoted:
                    try:
                        set_policy(normal, exclude=self._watchdog_tid)
                    except PermissionError as err:
                        set_policy(idle, exclude=self._watchdog_tid)  # all or none: never half a replica lifted
                        log.warning("the long tier cannot leave SCHED_IDLE (%s: it needs CAP_SYS_NICE); its "
                                    "requests will wait for idle CPU time however long", err)
                        self._can_promote = False
                        break
                    self._promoted = True
                    self.promotions += 1
                elif not overdue and self._promoted:
                    set_policy(idle, exclude=self._watchdog_tid)
                    self._promoted = False
                if oldest is None:
                    self._cond.wait()
                elif overdue:
                    self._cond.wait(0.01)  # a leave() notifies; the timeout only bounds a missed one
                else:
                    self._cond.wait(oldest + self.promote_after_s - now)

    def describe(self) -> dict[str, object]:
        return {"cpu_priority": self.priority, "promote_after_ms": round(self.promote_after_s * 1000),
                "promotions": self.promotions, "promoted": self._promoted}


def short_tier_threads(cpus: float, node_cpus: int, replicas: int, *, tiers: bool) -> int:
    """Default threads per short-tier (or only-tier) replica: the cluster's ``cpus`` divided among its ``replicas``,
    at most a node's, at least 1; with tiers, one CPU is left out of the division first.

    Why one less with tiers: the ingress (HTTP, tokenizing, routing) and the long tier's borrowed threads run on the
    same cores, and a short batch split over every core waits for its slowest thread, which is then often one that
    shares its core; one thread fewer lowered the short requests' tail latency without raising the all-request one."""
    spare = 1 if tiers and cpus > 1 else 0
    return max(1, min(node_cpus, int((cpus - spare) // replicas)))
