"""Connecting to Ray: one place that starts or joins a cluster the way padless wants it (no telemetry, no dashboard)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
    address = cluster_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False,
                              "address": address or "local"}
    if kwargs["address"] == "local" and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise PadlessError(f"cannot start or join Ray at {address or 'a new local cluster'}: {err}") from err
    return ray


@contextlib.contextmanager
def sigterm_held_by_children() -> Iterator[None]:
    """Block SIGTERM in this thread while the body runs, so that the processes it starts (a local cluster's GCS and
    raylet, and through them every worker and replica: a blocked signal is inherited across fork and exec) hold a
    SIGTERM pending instead of dying of it. Ray does the same for SIGINT in every process it starts.

    Why: a SIGTERM sent to the whole process group (``kill -- -PGID``, ``timeout``) reached the GCS and raylet as it
    reached padless, and they died at once: padless's drain could not reach the ingress. Held, it reaches padless
    alone among them; padless drains and then stops the cluster itself (``ray.shutdown`` sends SIGTERM and, a second
    later, SIGKILL). Serve's HAProxy sets its own signal mask and does not hold it, so a SIGTERM to every process
    of a service (systemd's default ``KillMode=control-group``) still cuts its connections: use ``KillMode=mixed``.
    A no-op where ``pthread_sigmask`` is missing (Windows)."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    previous = block(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def cluster_address(address: str | None) -> str | None:
    """The cluster :func:`init_ray` joins for ``address``: it, else ``RAY_ADDRESS``; None = it starts a local one."""
    return address or os.environ.get("RAY_ADDRESS") or None


def free_port() -> int:
    """A TCP port free on every interface of this machine now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def biggest_node_cpus() -> int | None:
    """The CPUs of the cluster's biggest live node (an actor's threads cannot span nodes)."""
    import ray

    sizes = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(sizes) if sizes and max(sizes) > 0 else None


def run_watched(work: Callable[[], Any], *, every_s: float, tick: Callable[[], Any] | None = None,
                stop: threading.Event | None = None, name: str = "padless-ray") -> bool:
    """Run ``work`` (a Ray call that may block for long) in a daemon thread, calling ``tick`` every ``every_s``
    (a failing tick is ignored: it only reports). True once ``work`` ended (its exception is re-raised here); False
    when ``stop`` was set first, leaving the thread to end with the process."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(err)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive() and not (stop is not None and stop.is_set()):
        thread.join(every_s)
        if tick is not None:
            try:
                tick()
            except Exception:  # noqa: BLE001, S110 - a missed progress update is not a failure of the work
                pass
    if failure:
        raise failure[0]
    return not thread.is_alive()


def stop_leftover_haproxy(node_id: str, grace_s: float = 2.0) -> list[int]:
    """Stop the HAProxy processes that Ray Serve started for ``node_id`` (the head node of a local cluster this
    process started) and that outlived the cluster; the PIDs found.

    Serve's HAProxy manager actor stops its HAProxy when Serve shuts down, but when the actor itself dies at once (the
    raylet killed, by a signal its processes do not hold, and its workers exit without cleaning up) HAProxy is left
    running, holding the server's port. Serve gives each node's HAProxy its own config file,
    ``…/<node_id>/haproxy.cfg``, and that is how they are found here (as Ray itself recognises its own); SIGTERM,
    then SIGKILL after ``grace_s``. Linux only (``/proc``); elsewhere nothing is found."""
    marker = f"/{node_id}/haproxy.cfg"
    found: list[int] = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if args and os.path.basename(args[0]) == "haproxy" and any(a.endswith(marker) for a in args):
            found.append(int(entry))
    _terminate(found, grace_s)
    return found


def _terminate(pids: list[int], grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(_running(pid) for pid in pids):
            time.sleep(0.05)
        pids = [pid for pid in pids if _running(pid)]
        if not pids:
            return


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited one its parent has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
