"""``padless serve --ray``: start or join Ray, run padless's Serve application, wait until it is ready, then block
until SIGTERM or SIGINT, drain, and shut Serve down (exit 0).

The drain is padless's: on the signal every ingress replica turns readiness false and answers new requests 503 at
once (it waits on a :class:`~padless.ray.serve.DrainSignal` actor, no polling), lets admitted requests finish within
``--drain-timeout`` and reports back; then Serve and the local Ray cluster are shut down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from padless.cli.common import ensure_default, quiet_libraries
from padless.config import EngineSpec, QueueConfig, ServerConfig
from padless.errors import PadlessError
from padless.ray.cluster import free_port, run_watched, sigterm_held_by_children, stop_leftover_haproxy

if TYPE_CHECKING:
    from padless.ray.serve import ServeOptions

START_TIMEOUT_S = 600.0  # replicas load their models in parallel; a big model on a busy cluster takes minutes
# After a signal, how long Ray's own processes get to exit before padless decides the cluster is still alive (and
# shuts Serve down properly) rather than lost with it (a signal they do not hold, such as SIGHUP to the group).
CLUSTER_EXIT_S = 2.0
SHUTDOWN_GRACE_S = 15.0  # Serve's shutdown beyond the replicas' graceful drain before padless stops waiting


def run_ray_serve(*, engine: EngineSpec, queue: QueueConfig, server: ServerConfig, address: str | None,
                  replicas: int, long_threshold: int, long_replicas: int, long_model: str | None,
                  long_backend: str | None, long_threads: int, long_promote_ms: int, proxy: str,
                  log_level: str) -> None:
    """Serve until a signal, then drain (see the module docstring). ``engine``: the short tier's (the long tier's
    derives from it); options are ``padless serve``'s; ``proxy`` is Serve's front door
    (:func:`padless.ray.front_door.controller_env`)."""
    quiet_libraries()
    from padless.ray.serve import DrainSignal, ServeOptions, serve_app_for
    from padless.ray.serve_router import DRAIN_NAMESPACE

    opts = ServeOptions(engine=engine, replicas=replicas, long_threshold=long_threshold, long_replicas=long_replicas,
                        long_model=long_model, long_backend=long_backend, long_threads=long_threads,
                        long_promote_ms=long_promote_ms, queue=queue, server=server)
    opts, proxy_env, local = _prepare(opts, address, proxy)
    server = opts.server
    stop = threading.Event()
    ray, haproxy_node = _start_cluster(address, local, proxy_env)
    previous = _stop_on_signals(stop)
    drain_name = f"padless-drain-{uuid.uuid4().hex[:8]}"
    drain = DrainSignal.options(name=drain_name, namespace=DRAIN_NAMESPACE).remote()  # type: ignore[attr-defined]
    run = _Run(abandoned=False, early=False)
    shutdown_abandoned = False
    try:
        app = serve_app_for(replace(opts, drain_signal=drain_name))
        run = _serve_until_signal(ray, app, server, proxy_env=proxy_env, log_level=log_level,
                                  long_threshold=long_threshold, drain=drain, stop=stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutdown_abandoned = _shut_down(ray, server, early=run.early, haproxy_node=haproxy_node)
    print("padless serve --ray: stopped", file=sys.stderr, flush=True)
    if run.abandoned or shutdown_abandoned:
        # A thread still inside Serve's start-up or shutdown (on a dead cluster) can hold the interpreter's exit
        # for a minute; everything padless owns is stopped and flushed by now, so leave at once.
        sys.stdout.flush()
        os._exit(0)


class _Run(NamedTuple):
    """How serving ended: ``abandoned``, a Serve call left running in its thread (see :func:`run_ray_serve`'s end);
    ``early``, stopped by a signal before Serve was ready."""

    abandoned: bool
    early: bool


def _prepare(opts: ServeOptions, address: str | None, proxy: str) -> tuple[ServeOptions, dict[str, str] | None, bool]:
    """Check the options and models before Ray starts (building the default model if needed): the options with the
    server's port chosen, Serve's controller environment, and whether the cluster is one this process starts."""
    from padless.ray.cluster import cluster_address
    from padless.ray.front_door import controller_env
    from padless.ray.serve import preflight_for

    opts.validate()  # before minutes of building the default model
    local = cluster_address(address) is None  # a cluster this process starts (and so owns)
    proxy_env = controller_env(proxy, local_cluster=local)
    if opts.server.port == 0:  # "any free port": chosen here, since HAProxy cannot bind port 0, and said when ready
        opts = replace(opts, server=replace(opts.server, port=free_port()))
    if opts.engine.model.task != "embed":  # `default` with --task embed is the embedding package, never built
        ensure_default(opts.engine.model.model)
        if opts.long_model:
            ensure_default(opts.long_model)
    preflight_for(opts)  # impossible options and mismatched models: one line, before Ray starts
    return opts, proxy_env, local


def _start_cluster(address: str | None, local: bool, proxy_env: dict[str, str] | None) -> tuple[Any, str | None]:
    """Start or join Ray: the ``ray`` module, and the node whose leftover HAProxy processes are ours to stop at the
    end (HAProxy on a cluster of our own; else None)."""
    from padless.ray.cluster import init_ray
    from padless.ray.front_door import HAPROXY_ENV

    # A cluster of our own does not die of a signal meant for padless (see sigterm_held_by_children): padless drains.
    with sigterm_held_by_children() if local else contextlib.nullcontext():
        ray = init_ray(address)  # no address: RAY_ADDRESS, else a cluster of our own (never a stale /tmp/ray entry)
    ours = local and (proxy_env or {}).get(HAPROXY_ENV) == "1"
    return ray, ray.get_runtime_context().get_node_id() if ours else None


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop`` (a second Ctrl-C raises KeyboardInterrupt: no waiting for the drain); returns
    the handlers they replace."""
    def on_signal(sig: int, _: FrameType | None) -> None:
        if stop.is_set() and sig == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the drain
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}


def _serve_until_signal(ray: Any, app: Any, server: ServerConfig, *, proxy_env: dict[str, str] | None,
                        log_level: str, long_threshold: int, drain: Any, stop: threading.Event) -> _Run:
    """Start Serve and the application, wait until ready, block until ``stop`` is set, then drain."""
    from ray import serve

    from padless.ray.serve import APP_NAME

    def start() -> None:
        serve.start(http_options={"host": server.host, "port": server.port,
                                  "keep_alive_timeout_s": server.keep_alive_s},
                    logging_config={"log_level": log_level.upper(), "enable_access_log": False},
                    controller_options={"runtime_env": {"env_vars": proxy_env}} if proxy_env else None)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False,
                      logging_config={"log_level": log_level.upper(), "enable_access_log": False})
        except RuntimeError as err:  # a replica's constructor failed (its error is in the log above)
            raise PadlessError(f"the Ray Serve application did not start: {str(err).splitlines()[0]}") from None

    # Started in a thread that a signal does not wait for: Serve's start-up blocks on the cluster, and a cluster
    # lost meanwhile (its processes killed with padless's) left it retrying for a minute at full CPU.
    url = f"http://{server.host}:{server.port}"
    started = run_watched(start, every_s=0.1, stop=stop, name="padless-serve-start")
    if started and _wait_ready(url, server.api_key, stop):
        tiers = "one tier" if not long_threshold else f"short ≤ {long_threshold} tokens, long above"
        print(f"padless serve --ray: ready on {url} ({tiers})", file=sys.stderr, flush=True)
        while not stop.wait(0.05):  # the handler sets it; a short wait so the drain starts within 50 ms
            pass
        print("padless serve --ray: draining", file=sys.stderr, flush=True)
        _drain(ray, drain, server.drain_timeout_s)
        return _Run(abandoned=False, early=False)
    print("padless serve --ray: stopped by a signal before it was ready", file=sys.stderr, flush=True)
    return _Run(abandoned=not started, early=True)


def _shut_down(ray: Any, server: ServerConfig, *, early: bool, haproxy_node: str | None) -> bool:
    """Shut Serve down (bounded; skipped where the local cluster's processes are gone), then Ray and any leftover
    HAProxy of ours. True when Serve's shutdown was abandoned in its thread."""
    from ray import serve

    abandoned = False
    try:
        # Stopped during start-up, Ray's processes may still be on their way out (after a drain they are gone).
        if _local_cluster_lost(ray, wait_s=CLUSTER_EXIT_S if early else 0.0):
            print("padless serve --ray: the local Ray cluster's own processes are gone (killed along with "
                  "padless?); skipping Serve's shutdown", file=sys.stderr, flush=True)
        elif not _within(serve.shutdown, bound := server.drain_timeout_s + SHUTDOWN_GRACE_S):
            abandoned = True
            print(f"padless serve --ray: Serve did not shut down within {bound:.0f}s; stopping Ray",
                  file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        if haproxy_node is not None:
            stop_leftover_haproxy(haproxy_node)
    return abandoned


def _within(work: Callable[[], Any], timeout_s: float) -> bool:
    """Run ``work`` in a daemon thread and wait at most ``timeout_s``: True when it ended in time (its exception
    is re-raised here), False otherwise."""
    expired = threading.Event()
    timer = threading.Timer(timeout_s, expired.set)
    timer.daemon = True
    timer.start()
    try:
        return run_watched(work, every_s=0.1, stop=expired, name="padless-serve-shutdown")
    finally:
        timer.cancel()


def _local_cluster_lost(ray: Any, wait_s: float = 0.0) -> bool:
    """Whether the cluster this process started has lost its own processes (raylet, GCS), waiting up to ``wait_s``
    for them to go; False for a joined cluster, whose processes are not this process's to check.

    After a signal the wait matters: one sent to the whole group that Ray's processes do not hold (they hold SIGINT
    and SIGTERM, see :func:`~padless.ray.cluster.sigterm_held_by_children`; not SIGHUP) reaches them as it reaches
    padless, and they take a moment to exit; judged at once they may still look alive, and Serve's shutdown then
    waits 30 s for a controller that is already going."""
    end = time.monotonic() + wait_s
    while True:
        dead = _own_head_processes_dead(ray)
        if dead is None:
            return False
        if dead:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def _own_head_processes_dead(ray: Any) -> bool | None:
    """Whether our own head node lost a process (None: not ours); private Ray API: no public one works without GCS."""
    try:
        node = ray._private.worker._global_node
        if node is None or not node.is_head():
            return None  # not a cluster this process started
        return bool(node.dead_processes())
    except Exception:  # noqa: BLE001 - Ray's internals moved: assume alive, the bounded shutdown still ends
        return None


def _wait_ready(url: str, api_key: str | None, stop: threading.Event) -> bool:
    """Poll ``/ready`` (every tier has a live replica that answers) until 200 (True), a signal (False), or the start
    timeout."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    end = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=10.0, headers=headers) as client:
        while not stop.is_set():
            try:
                if client.get(f"{url}/ready").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise PadlessError(f"the Ray Serve application was not ready after {START_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
    return False


def _drain(ray: Any, drain: Any, timeout_s: float) -> None:
    """Tell every ingress replica to drain and wait (bounded) until one has reported back.

    The cluster may be gone already (its processes killed along with padless, or a joined cluster lost): that is
    said in one line, and the shutdown goes on rather than ending in a traceback."""
    try:
        ray.get(drain.set.remote(), timeout=10)
        end = time.monotonic() + timeout_s + 5.0
        while time.monotonic() < end:
            if ray.get(drain.drained.remote(), timeout=10) >= 1:
                break
            time.sleep(0.05)
    except ray.exceptions.RayError as err:
        print(f"padless serve --ray: the cluster did not answer the drain ({type(err).__name__}); in-flight "
              "requests may have been lost",
              file=sys.stderr, flush=True)
