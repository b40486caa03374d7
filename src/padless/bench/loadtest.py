"""An open-loop HTTP load generator for a padless server (the capacity search on top of it is
:mod:`padless.bench.capacity`; each answer's outcome and the run's report are :mod:`padless.bench.loadreport`'s).

Why open loop: a closed-loop client (N workers, each waiting for its answer before sending the next request) slows
down exactly when the server does, so a struggling server is offered *less* load and its tail latency looks fine
("coordinated omission"). Here every request has a send time fixed in advance from a Poisson process (exponential
gaps, seeded), it is sent at that time whether or not earlier requests have finished, and its latency is measured
from that *scheduled* time to the end of the response. A server that falls behind therefore shows it in the
percentiles, and so does a client that falls behind (its lateness is also reported on its own, as ``send_lag_ms``).

Safety: this tool only ever talks to loopback addresses (127.0.0.0/8, ``localhost``, ``::1``); any other host is
refused with :class:`ValueError` before a socket is opened. Proxies from the environment are ignored and redirects are
not followed, so traffic cannot be bounced elsewhere either.

Cost: the generator usually shares the machine with the server it measures, so every millisecond of client CPU is
taken from the server. Requests go out through aiohttp, whose compiled HTTP parser costs a fraction of httpx's client
CPU per request.

Public API: :func:`run_load`, :func:`render_report` (plus the small helpers
:func:`poisson_schedule`, :func:`percentile`, :func:`parse_prometheus`, :func:`server_stats`, :func:`check_loopback`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from padless.bench.loadreport import CUT_OFF, Result, RunFacts, build_report, classify
from padless.bench.loadstats import (
    OUTCOMES,
    parse_prometheus,
    percentile,
    render_capacity,
    render_report,
    server_stats,
)

__all__ = [
    "OUTCOMES",
    "check_loopback",
    "parse_prometheus",
    "percentile",
    "poisson_schedule",
    "render_capacity",
    "render_report",
    "run_load",
    "server_stats",
]


_LOOPBACK_NAMES = frozenset({"localhost"})

_asyncio_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+; 3.10 falls back to asyncio.wait_for


# --------------------------------------------------------------------------------------------------------------------
# Small pure helpers


def check_loopback(url: str) -> httpx.URL:
    """Parse ``url`` and return it, or raise :class:`ValueError` unless it is http(s) to a loopback host.

    Accepted hosts: ``localhost``, any address in 127.0.0.0/8, ``::1`` (and IPv4-mapped ``::ffff:127.x.y.z``).
    Names are not resolved: a name other than ``localhost`` is refused even if it happens to point at loopback,
    because resolution can change between this check and the connection.
    """
    try:
        parsed = httpx.URL(url)
    except Exception as exc:  # httpx raises InvalidURL, but a malformed URL must read as a refusal either way
        raise ValueError(f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"refusing {url!r}: only http:// and https:// URLs are supported")
    host = parsed.host.lower()
    if not host:
        raise ValueError(f"refusing {url!r}: no host")
    if host in _LOOPBACK_NAMES:
        return parsed
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"refusing {url!r}: the load generator only targets loopback hosts "
                         "(127.0.0.0/8, localhost, ::1)") from None
    mapped = getattr(address, "ipv4_mapped", None)
    if address.is_loopback or (mapped is not None and mapped.is_loopback):
        return parsed
    raise ValueError(f"refusing {url!r}: {host} is not a loopback address; the load generator only targets "
                     "127.0.0.0/8, localhost and ::1")


# The routes the load generator drives: TEI's classify batch form, or TEI's /embed (a list of texts).
ROUTES = ("/predict", "/embed")


def _split_url(url: str, route: str = "/predict") -> tuple[str, str]:
    """``(base, route_url)``: ``url`` may be the server root (``http://127.0.0.1:8000``) or its ``route``."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
    parsed = check_loopback(url)
    text = str(parsed.copy_with(query=None, fragment=None)).rstrip("/")
    if text.endswith(route):
        return text[: -len(route)], text
    return text, text + route


def poisson_schedule(rate: float, duration: float, seed: int = 0) -> list[float]:
    """Send offsets in seconds (sorted, all ``< duration``) of a Poisson process with ``rate`` arrivals per second.

    Gaps are exponential with mean ``1/rate`` drawn from ``random.Random(seed)``, so a seed always gives the same
    schedule. The count is itself random (mean ``rate·duration``), as real independent arrivals are.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number, got {rate}")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive number, got {duration}")
    rng = random.Random(seed)
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


# --------------------------------------------------------------------------------------------------------------------
# The load run


def _raise_fd_limit(needed: int) -> str | None:
    """Raise the soft open-files limit towards ``needed``; a warning string if it stays too low.

    Each in-flight HTTP/1.1 request holds its own socket; running out of descriptors would show up as connection
    errors and be blamed on the server.
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to adjust
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < needed:
        return (f"open-files limit {target} is below max_in_flight + headroom ({needed}); "
                "high concurrency may fail with client-side connection errors")
    return None


async def _fetch_text(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5.0), allow_redirects=False) as response:
            if response.status != 200:
                return None
            return (await response.read()).decode("utf-8", "replace")
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def _fetch_metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    text = await _fetch_text(session, base + "/metrics")
    return parse_prometheus(text) if text is not None else None


async def _fetch_info(session: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    text = await _fetch_text(session, base + "/info")
    if text is None:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


async def run_load(
    url: str,
    *,
    rate: float,
    duration: float,
    texts: list[str],
    inputs_per_request: int = 1,
    timeout: float = 30.0,
    seed: int = 0,
    max_in_flight: int = 2000,
    headers: dict[str, str] | None = None,
    groups: list[str] | None = None,
    keep_latencies: bool = False,
    route: str = "/predict",
) -> dict[str, Any]:
    """Offer ``rate`` requests/s of Poisson arrivals to ``POST {url}/predict`` for ``duration`` seconds (``route``
    ``/embed``: TEI's embed form, ``{"inputs": [text, ...], "truncate": true}``, to ``{url}/embed``).

    ``url`` is the server root (``http://127.0.0.1:8000``) or its ``/predict`` URL; it must be a loopback address
    (:class:`ValueError` otherwise). Each request carries ``inputs_per_request`` texts taken in order from ``texts``,
    cycling, as TEI's batch form ``[[text], ...]`` (so the answer is one list per text on TEI, padless and the
    baseline server alike; bare strings would mean a text pair there), with ``raw_scores=false, truncate=true``.
    Send times come from :func:`poisson_schedule` with ``seed``; each request is fired at its time regardless of
    earlier ones, unless ``max_in_flight`` are outstanding, in which case it is counted as ``dropped_client_side``.
    A request gets ``timeout`` seconds from being sent; after the last send the run waits at most ``timeout`` more for
    stragglers, which then count as timeouts. Nothing is retried (a 429 is an outcome, not a reason to resend).

    Returns a JSON-ready report:

    * ``url``, ``offered_rate`` (the ``rate`` asked for), ``duration_s``, ``seed``, ``inputs_per_request``,
      ``timeout_s``, ``max_in_flight``;
    * ``scheduled`` (requests in the schedule), ``scheduled_rate`` (``scheduled / duration``: the Poisson draw's own
      rate), ``sent``;
    * ``outcomes``: count per name in :data:`OUTCOMES`, summing to ``scheduled``; ``status_codes``: HTTP status
      (as a string) → count; ``error_types``: the error bodies' ``error_type`` → count; ``retry_after_s_max``;
    * ``window_s``: from the first scheduled send to the last completion (at least ``duration``), the span that
      throughput is measured over; ``throughput_rps`` and ``throughput_texts_per_s``: successful requests and texts
      per second over that window;
    * ``latency_ms``: ``count, mean, p50, p90, p99, max`` of successful (``ok``) requests, from scheduled send to the
      end of the response; ``latency_all_ms``: the same over every request that got any HTTP response;
    * ``latency_p50_ms_by_third``: the median latency of the ok requests scheduled in each third of the run, in
      order (None for a third without one): a server that does not keep up builds a queue, and its medians climb;
    * ``send_lag_ms``: ``p50, p99, max`` of how late the client started each request against its schedule (large
      values mean the load generator itself was the bottleneck); ``client_cpu_percent``: this process's CPU time
      over the window (all threads); ``peak_in_flight``;
    * ``server``: :func:`server_stats` of ``/metrics`` before and after the run, or ``None`` if unavailable;
      ``server_info``: the ``/info`` JSON or ``None``;
    * ``warnings``: human-readable caveats about the measurement itself;
    * ``errors_sample``: up to 5 distinct client-side exception messages;
    * with ``groups`` (one name per text, e.g. "short"/"long"): ``latency_ms_by_group``, the ``latency_ms`` summary
      of the ok requests whose first text is in each group, and ``requests_by_group``, every scheduled request's
      group counted (so a tier's tail can be read apart from the rest of the traffic); with ``keep_latencies`` too,
      ``ok_latencies_s_by_group``: every ok request's latency in seconds, per group, so runs can be pooled
      (:func:`~padless.bench.loadstats.latency_summary` of a pooled list).
    """
    _check_load_args(texts, inputs_per_request, timeout, max_in_flight, groups)
    base, predict_url = _split_url(url, route)  # refuses non-loopback before anything is opened
    offsets = poisson_schedule(rate, duration, seed)
    warnings: list[str] = []
    fd_warning = _raise_fd_limit(max_in_flight + 64)
    if fd_warning:
        warnings.append(fd_warning)
    request_headers = {"content-type": "application/json", **(headers or {})}
    # One connection per in-flight request (HTTP/1.1); the pool must never be what limits concurrency, or requests
    # would queue invisibly inside the client. trust_env=False: an HTTP(S)_PROXY variable must not reroute traffic
    # off the loopback interface; redirects are not followed for the same reason.
    connector = aiohttp.TCPConnector(limit=max_in_flight, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, headers=request_headers, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=None)) as client:
        metrics_before = await _fetch_metrics(client, base)
        info = await _fetch_info(client, base)
        sender = _Sender(client, predict_url, texts, inputs_per_request, timeout, embed=route == "/embed")
        sent = await sender.send_all(offsets, max_in_flight)
        metrics_after = await _fetch_metrics(client, base)

    facts = RunFacts(predict_url=predict_url, rate=rate, duration=duration, seed=seed,
                     inputs_per_request=inputs_per_request, timeout=timeout, max_in_flight=max_in_flight,
                     offsets=offsets, start=sent.start, end=sent.end, last_done=sent.last_done,
                     cpu_used=sent.cpu_used, peak_in_flight=sent.peak_in_flight, stragglers=sent.stragglers)
    return build_report(sent.slots, facts, n_texts=len(texts), groups=groups, keep_latencies=keep_latencies,
                        warnings=warnings, metrics_before=metrics_before, metrics_after=metrics_after, info=info)


def _check_load_args(texts: list[str], inputs_per_request: int, timeout: float, max_in_flight: int,
                     groups: list[str] | None) -> None:
    if not texts:
        raise ValueError("texts must not be empty")
    if inputs_per_request < 1:
        raise ValueError(f"inputs_per_request must be at least 1, got {inputs_per_request}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number, got {timeout}")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    if groups is not None and len(groups) != len(texts):
        raise ValueError(f"groups must name one group per text: {len(groups)} for {len(texts)} texts")


@dataclass(frozen=True)
class _Sent:
    """What sending a run's schedule produced: one slot per scheduled request (see
    :func:`~padless.bench.loadreport.build_report`) and the times and counts of :class:`RunFacts`."""

    slots: list[Result | None]
    start: float
    end: float
    last_done: float
    cpu_used: float
    peak_in_flight: int
    stragglers: int


class _Sender:
    """Sends one run's requests through one client session, each at its scheduled time."""

    def __init__(self, client: aiohttp.ClientSession, predict_url: str, texts: list[str], inputs_per_request: int,
                 timeout: float, *, embed: bool = False) -> None:
        self.client, self.predict_url, self.texts, self.n_texts = client, predict_url, texts, len(texts)
        self.inputs_per_request, self.timeout, self.embed = inputs_per_request, timeout, embed
        self.loop = asyncio.get_running_loop()
        self.bodies: dict[int, bytes] = {}

    def body_for(self, i: int) -> bytes:
        # Request i carries texts i·k … i·k+k−1 (mod n); there are at most n distinct bodies, so they are encoded
        # once and reused: JSON encoding in the send path would steal CPU from the schedule at high rates.
        n_texts = self.n_texts
        start = (i * self.inputs_per_request) % n_texts
        body = self.bodies.get(start)
        if body is None:
            chosen = [self.texts[(start + j) % n_texts] for j in range(self.inputs_per_request)]
            payload: dict[str, Any] = ({"inputs": chosen, "truncate": True} if self.embed else
                                       {"inputs": [[text] for text in chosen], "raw_scores": False, "truncate": True})
            body = self.bodies[start] = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return body

    async def post(self, body: bytes) -> tuple[int, bytes, str | None]:
        async with self.client.post(self.predict_url, data=body, allow_redirects=False) as response:
            return response.status, await response.read(), response.headers.get("retry-after")

    async def one(self, i: int, scheduled: float) -> Result:
        """Request ``i``, due at ``scheduled`` (the loop's clock): its outcome, latency from the schedule and lag."""
        lag = self.loop.time() - scheduled
        try:
            # One total deadline per request (connect, send and the whole response), so a server trickling bytes
            # cannot hold a request beyond ``timeout``. asyncio.timeout (3.11+) avoids the extra task per request that
            # wait_for costs.
            if _asyncio_timeout is not None:
                async with _asyncio_timeout(self.timeout):
                    status, body, retry_header = await self.post(self.body_for(i))
            else:
                status, body, retry_header = await asyncio.wait_for(self.post(self.body_for(i)), self.timeout)
        except asyncio.TimeoutError:
            return Result("timeout", lag=lag)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            return Result("connection_error", lag=lag, detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any other failure is counted, never lost
            return Result("client_exception", lag=lag, detail=f"{type(exc).__name__}: {exc}")
        latency = self.loop.time() - scheduled
        outcome, error_type = classify(status, body, self.inputs_per_request)
        retry_after: float | None = None
        if status == 429:
            try:
                retry_after = float(retry_header or "")
            except ValueError:
                retry_after = None
        return Result(outcome, status=status, latency=latency, lag=lag, error_type=error_type,
                      retry_after=retry_after)

    async def send_all(self, offsets: list[float], max_in_flight: int) -> _Sent:
        """Fire every request at its offset, unless ``max_in_flight`` are outstanding (then it is dropped), and wait
        up to ``timeout`` for stragglers after the last send, cancelling the rest."""
        loop = self.loop
        tasks: list[asyncio.Task[Result] | None] = []  # None: dropped client-side
        in_flight: set[asyncio.Task[Result]] = set()
        peak = 0
        last_done = [0.0]

        def finished(task: asyncio.Task[Result]) -> None:
            in_flight.discard(task)
            last_done[0] = max(last_done[0], loop.time())

        cpu_start = time.process_time()
        start = loop.time() + 0.01  # a few ms of slack so the first send is not already late
        for i, offset in enumerate(offsets):
            scheduled = start + offset
            delay = scheduled - loop.time()
            # When behind schedule, still yield once so already-created requests get to run; the lateness is
            # charged to latency (measured from ``scheduled``) and shows in send_lag_ms.
            await asyncio.sleep(delay if delay > 0 else 0)
            if len(in_flight) >= max_in_flight:
                tasks.append(None)
                continue
            task = asyncio.create_task(self.one(i, scheduled))
            task.add_done_callback(finished)
            in_flight.add(task)
            tasks.append(task)
            peak = max(peak, len(in_flight))

        stragglers = 0
        if in_flight:
            _, pending = await asyncio.wait(set(in_flight), timeout=self.timeout)
            stragglers = len(pending)
            for task in pending:
                task.cancel()
            # Wait for the cancellations to land so no task outlives the client it uses.
            await asyncio.gather(*pending, return_exceptions=True)
        end = loop.time()
        cpu_used = time.process_time() - cpu_start
        slots = [None if task is None else CUT_OFF if task.cancelled() else task.result() for task in tasks]
        return _Sent(slots=slots, start=start, end=end, last_done=last_done[0], cpu_used=cpu_used,
                     peak_in_flight=peak, stragglers=stragglers)
