"""``padless serve --ray``: the real CLI, a local Ray cluster, Ray Serve replicas in length tiers.

Two servers, each started once for this module: the tiny BERT on torch (values checked against a local
:class:`~padless.Classifier` on the same model, within 1e-4), and the dummy backend with a fixed cost per padded
token for overload, the tier-latency bound, a replica killed under load, and the drain on SIGTERM. A few fast tests
check, without a cluster, how Ray's failures become padless's errors and which options are refused.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from e2e_support import Server, alive, metric, parse_metrics, softmax
from ray_serve_support import replica_processes, start_ray_server, stop_ray_server

# Ray Serve's own config models (imported by the fast tests, in this process) still use pydantic's V1-style
# `Field(update_type=...)`; that is Ray's deprecation to fix, not padless's.
pytestmark = [pytest.mark.ray,
              pytest.mark.filterwarnings("ignore:Using extra keyword arguments on .Field. is deprecated"
                                         ":DeprecationWarning")]

LABELS = ["negative", "neutral", "positive"]
THRESHOLD = 8  # the torch server's long tier takes inputs of more than 8 tokens
SHORT = "a fine film"  # 5 tokens with [CLS] and [SEP]
LONG = "a long and winding review of a film that goes on and on about nothing at all"


def _envelope(r: httpx.Response, status: int, kind: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type", "request_id"} and body["error_type"] == kind, body
    assert r.headers["x-request-id"] == body["request_id"]  # one id, the proxy's and padless's
    assert "Traceback" not in r.text


# -- without a cluster: errors and refusals --------------------------------------------------------------------------

def test_ray_failures_become_padless_errors() -> None:
    import ray
    from ray.serve.exceptions import BackPressureError

    from padless.errors import BatchFailedError, DeadlineExceededError, OverloadedError, ReplicaLostError, status_for
    from padless.ray.serve_router import translate

    def remote(cause: Exception) -> Exception:  # as the ingress receives a replica's exception
        return ray.exceptions.RayTaskError("score", "Traceback (most recent call last): secret", cause)\
            .as_instanceof_cause()

    cases = [
        (BackPressureError(num_queued_requests=8, max_queued_requests=8), OverloadedError, 429,
         "the short tier is at capacity; retry shortly"),
        (remote(OverloadedError("the short tier is at capacity; retry shortly")), OverloadedError, 429,
         "the short tier is at capacity; retry shortly"),
        (remote(DeadlineExceededError("the request did not complete before its deadline")), DeadlineExceededError,
         504, "the request did not complete before its deadline"),
        (ray.exceptions.ActorDiedError(), ReplicaLostError, 503,
         "a short tier replica was lost while running this request; retry"),
        (ray.exceptions.ActorUnavailableError("gone", b"x" * 16), ReplicaLostError, 503,
         "a short tier replica was lost while running this request; retry"),
        (remote(ValueError("secret detail")), BatchFailedError, 500, "the model failed on this request"),
    ]
    for err, cls, status, message in cases:
        got = translate(err, "short")
        assert type(got) is cls and status_for(got) == status and str(got) == message, (err, got)
    assert translate(ray.exceptions.ActorDiedError(), "long").code == "replica_lost"


def test_impossible_options_are_refused_before_anything_starts(tiny_model_dir: Path, tmp_path: Path) -> None:
    import ray

    from padless.errors import ConfigError
    from padless.ray.serve import build_app, serve_app

    model = str(tiny_model_dir)
    needs_tiers = "--long-model, --long-backend and --long-threads need --long-threshold"
    refused: list[tuple[str, dict[str, Any]]] = [
        (needs_tiers, dict(long_model=model)),
        (needs_tiers, dict(long_threads=2)),
        ("long-threads must be 0 (every CPU of a node) or positive, got -1", dict(long_threshold=8, long_threads=-1)),
        ("long-threshold (600) must be below the token limit (512)", dict(long_threshold=600)),
        ("long-threshold (16) must be below the token limit (16)", dict(long_threshold=16, max_length=16)),
        ("replicas must be at least 1", dict(replicas=0)),
        ("long-promote-ms must be 0 (never) or positive, got -5", dict(long_threshold=8, long_promote_ms=-5)),
    ]
    for message, options in refused:
        with pytest.raises(ConfigError, match=re.escape(message)):
            serve_app(model, backend="dummy", **options)
    other = tmp_path / "other-labels"
    other.mkdir()
    for f in tiny_model_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = (other / "config.json").read_text().replace('"neutral"', '"mixed"')
    (other / "config.json").write_text(config)
    with pytest.raises(ConfigError, match="has other labels"):
        serve_app(model, backend="dummy", long_threshold=8, long_model=str(other))
    with pytest.raises(ConfigError, match="unknown serve_app option 'nope'"):
        build_app({"model": model, "nope": "1"})
    with pytest.raises(ConfigError, match="replicas must be an integer"):
        build_app({"model": model, "replicas": "two"})
    # `serve run padless.ray.serve:build_app model=DIR ...`: an application, built without a cluster
    app = build_app({"model": model, "backend": "dummy", "replicas": "2", "long-threshold": "8",
                     "long-promote-ms": "50"})
    assert type(app).__name__ == "Application"
    assert not ray.is_initialized()


def test_ray_proxy_refusals_and_choices(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from padless.cli.main import main
    from padless.errors import ConfigError
    from padless.ray.front_door import controller_env

    for args, words in ((["--ray-proxy", "haproxy"], "--ray-proxy need --ray"),
                        (["--long-promote-ms", "50"], "--long-promote-ms and --ray-proxy need --ray"),
                        (["--ray", "--ray-proxy", "nginx"], "--ray-proxy must be one of auto, haproxy, python")):
        monkeypatch.setattr(sys, "argv", ["padless", "serve", "--model", str(tiny_model_dir), "--backend", "dummy",
                                          *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    local = controller_env("auto", local_cluster=True)
    assert local is not None and local["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # a local cluster's HAProxy listens on ports of its own, so two on one machine do not collide
    ports = {local["RAY_SERVE_HAPROXY_STATS_PORT"], local["RAY_SERVE_HAPROXY_METRICS_PORT"],
             local["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"], local["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"]}
    assert len(ports) == 4 and not ports & {"8404", "9101", "8500", "9500"}
    assert controller_env("auto", local_cluster=False) is None  # a joined cluster keeps its own setting
    assert controller_env("python", local_cluster=True) == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    assert controller_env("haproxy", local_cluster=False) == {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    with pytest.raises(ConfigError):
        controller_env("", local_cluster=True)
    assert not ray.is_initialized()  # refused before any cluster started


@pytest.mark.slow
def test_serve_python_proxy(tiny_model_dir: Path, tmp_path: Path, local_probs: Callable[..., np.ndarray]) -> None:
    """``--ray-proxy python``: Serve's own proxy actor in front, the same answers, envelopes and one request id."""
    server = start_ray_server(tiny_model_dir, tmp_path / "python-proxy", "--max-length", "16", "--long-threshold",
                              str(THRESHOLD), "--cache-size", "0", "--ray-proxy", "python", backend="torch")
    try:
        with server.client() as client:
            info = client.get("/info").json()
            r = client.post("/predict", json={"inputs": [[SHORT], [LONG]]})
            refused = client.post("/predict", json={"inputs": LONG, "truncate": False})
    finally:
        assert stop_ray_server(server) == 0
    assert info["ray"]["http_proxy"] == "python"
    assert r.status_code == 200, r.text
    for scores, text in zip(r.json(), (SHORT, LONG)):
        _check(scores, local_probs(text))
    _envelope(refused, 422, "too_long")


# -- start-up ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_group_signal_during_start_up_ends_the_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`timeout` or `kill -- -PGID` signal the whole group. Caught while Serve is starting (Ray's own processes
    used to die with padless, and it retried the dead cluster for a minute at full CPU; now they hold the SIGTERM
    and padless stops them), padless must end promptly, in one line, leaving none of its processes behind."""
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADLESS_", "RAY_"))}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "PADLESS_CACHE": str(tmp_path / "cache")})
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "padless.cli.main", "serve", "--ray", "--model",
                                 str(tiny_model_dir), "--backend", "dummy", "--port", "0", "--long-threshold", "8",
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while "Started Serve" not in log.read_text(errors="replace") and time.monotonic() < end:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGTERM)  # the replicas are still loading: not ready yet
        signalled = time.monotonic()
        proc.wait(timeout=60)
        took = time.monotonic() - signalled
        text = log.read_text(errors="replace")
        assert took < 30, (took, text[-2000:])
        assert "padless serve --ray: stopped" in text, text[-3000:]
        # padless's own lines carry no traceback. Ray's actors' logs come through prefixed "(Name pid=N)": stopped
        # while Serve is deploying, its HAProxy manager may log a reload cut short by the shutdown (seen once).
        own = [line for line in text.split("Started Serve")[-1].splitlines() if not _RAY_LOG_LINE.match(line)]
        assert not any("Traceback" in line for line in own), "\n".join(own)[-3000:]
        # Ray's workers run in sessions of their own and exit when they find their raylet gone (padless's
        # ray.shutdown stops it); one that was still starting (importing Ray on a busy machine) notices late: it
        # took over 3 s once in a full `make test` run, whose processes share the 2 cores.
        left = alive(started)
        settle_end = time.monotonic() + LEFTOVER_EXIT_S
        while left and time.monotonic() < settle_end:
            time.sleep(0.2)
            left = alive(started)
        assert not left, [" ".join(p.cmdline())[:200] for p in left]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


_RAY_LOG_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\([A-Za-z_:.]+ pid=\d+")  # Ray's "(Actor pid=N)" prefix, maybe coloured
LEFTOVER_EXIT_S = 15.0  # how long the processes a stopped server started get to exit on their own


# -- the tiny model on torch, two tiers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_ray_server(tiny_model_dir, tmp_path_factory.mktemp("ray-torch"), "--max-length", "16",
                              "--max-inputs-per-request", "8", "--max-body-bytes", "20000",
                              "--long-threshold", str(THRESHOLD), "--cache-size", "0", backend="torch")
    yield server
    stop_ray_server(server)


@pytest.fixture(scope="module")
def local_probs(tiny_model_dir: Path) -> Callable[..., np.ndarray]:
    """Probabilities from padless's own Classifier in this process (torch, the same limits), one item alone."""
    from padless import Classifier

    clf = Classifier(str(tiny_model_dir), backend="torch", max_length=16)

    def probs(item: Any) -> np.ndarray:
        logits, errors = clf.logits([item])
        assert errors == [None]
        return softmax(logits[0].astype(np.float64))

    return probs


def _check(scores: list[Any], probs: np.ndarray, k: int | None = None) -> None:
    order = sorted(range(len(LABELS)), key=lambda i: -probs[i])[: k or len(LABELS)]
    got = [(s["label"], s["score"]) if isinstance(s, dict) else (s.label, s.score) for s in scores]
    assert [label for label, _ in got] == [LABELS[i] for i in order]
    assert [score for _, score in got] == pytest.approx([float(probs[i]) for i in order], abs=1e-4)


@pytest.mark.slow
def test_inference_client_against_the_ray_ingress(torch_server: Server, local_probs: Callable[..., np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import InferenceClient

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with InferenceClient(base_url=torch_server.url, timeout=30) as client:
        for text in (SHORT, LONG):  # one goes to each tier
            _check(client.text_classification(text), local_probs(text))
            _check(client.text_classification(text, top_k=2), local_probs(text), k=2)


@pytest.mark.slow
def test_a_request_with_both_tiers_is_split_and_rejoined_in_order(torch_server: Server,
                                                                  local_probs: Callable[..., np.ndarray]) -> None:
    items: list[Any] = [LONG, SHORT, (SHORT, "and a second text"), "ok", f"{LONG} again", ("x", "y")]
    body = [[i] if isinstance(i, str) else list(i) for i in items]
    with torch_server.client() as client:
        before = parse_metrics(client.get("/metrics").text)
        r = client.post("/predict", json={"inputs": body})
        classify = client.post("/v1/classify", json={"inputs": [LONG, "", SHORT], "top_k": 0})
        after = parse_metrics(client.get("/metrics").text)
    assert r.status_code == 200, r.text
    assert len(r.json()) == len(items)
    for scores, item in zip(r.json(), items):
        _check(scores, local_probs(item))
    long_row, empty, short_row = classify.json()["results"]
    assert long_row["tokens"] == 16 and short_row["tokens"] == 5  # the long one cut at --max-length
    _check(long_row["scores"], local_probs(LONG))
    _check(short_row["scores"], local_probs(SHORT))
    assert empty["error"]["type"] == "empty_input"
    sent = {t: metric(after, "padless_tier_inputs_total", tier=t, status="ok")
            - metric(before, "padless_tier_inputs_total", tier=t, status="ok") for t in ("short", "long")}
    assert sent == {"short": 4, "long": 4}  # (SHORT, pair) is 11 tokens: long; ("x", "y") is 5: short
    assert metric(after, "padless_tier_batches", tier="long") > 0
    assert ("padless_tier_promotions", (("tier", "long"),)) in after  # lifts of the long tier out of SCHED_IDLE


@pytest.mark.slow
def test_same_routes_limits_and_envelopes_as_padless_serve(torch_server: Server) -> None:
    with torch_server.client() as client:
        three = client.post("/predict", json={"inputs": ["a", "b", "c"]})
        empty = client.post("/v1/classify", json={"inputs": []})
        many = client.post("/v1/classify", json={"inputs": ["x"] * 9})
        big = client.post("/predict", content=b'{"inputs": "' + b"a" * 30000 + b'"}')
        refused = client.post("/predict", json={"inputs": LONG, "truncate": False})
        info = client.get("/info").json()
        ready = [client.get(p) for p in ("/ready", "/", "/ping")]
        health = client.get("/health")
        tokens = client.post("/tokenize", json={"inputs": SHORT})
    _envelope(three, 422, "validation_error")
    _envelope(empty, 422, "validation_error")
    _envelope(many, 422, "input_error")
    _envelope(big, 413, "payload_too_large")
    _envelope(refused, 422, "too_long")
    for r in ready:
        assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert health.json() == {"status": "ok"}
    assert [t["text"] for t in tokens.json()[0]] == ["[CLS]", "a", "fine", "film", "[SEP]"]
    assert info["labels"] == LABELS and info["max_input_length"] == 16 and info["max_client_batch_size"] == 8
    assert info["backend"]["backend"] == "torch"
    assert info["ray"]["long_threshold"] == THRESHOLD and set(info["ray"]["tiers"]) == {"short", "long"}
    assert info["ray"]["http_proxy"] == "haproxy"  # the default on a cluster padless starts
    # Default threads: the long replica may use every CPU of the node; the one short replica takes them less one
    # (left to the ingress and the long tier), at least one.
    tiers = info["ray"]["tiers"]
    assert tiers["short"]["threads"] == max(1, tiers["long"]["threads"] - 1), tiers
    # sharing the cores, the long tier runs only on CPU time the short one leaves
    assert (tiers["short"]["cpu_priority"], tiers["long"]["cpu_priority"]) == ("normal", "idle"), tiers
    # ... until one of its requests has waited --long-promote-ms (default 100)
    assert tiers["long"]["promote_after_ms"] == 100 and "promote_after_ms" not in tiers["short"], tiers


# -- the dummy backend: fixed cost per token, two short replicas, one long ---------------------------------------------

DELAY = 0.002  # s per padded token: a 4-row batch of 12-token texts costs ~0.1 s, far above scheduling noise
DUMMY_THRESHOLD = 32
QUEUE = 48  # inputs the ingress admits at once (the closed loops below stay under it)
SHORT_TEXT = "short words " * 5  # 12 tokens
LONG_TEXT = "long words " * 100  # 202 tokens: a 4-row batch costs ~1.6 s
PROBES, PROBE_S = 5, 8.0  # the tier-routing test's alternating alone / mixed windows


@pytest.fixture(scope="module")
def dummy_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_ray_server(tiny_model_dir, tmp_path_factory.mktemp("ray-dummy"), "--max-length", "256",
                              "--long-threshold", str(DUMMY_THRESHOLD), "--replicas", "2", "--long-replicas", "1",
                              "--request-timeout", "15", "--drain-timeout", "20", "--cache-size", "0",
                              "--max-wait-ms", "2", "--max-queue-inputs", str(QUEUE), delay_per_token_s=DELAY)
    yield server
    stop_ray_server(server)


@pytest.mark.slow
def test_two_servers_on_one_machine_each_answer_for_themselves(torch_server: Server, dummy_server: Server) -> None:
    """Started while the torch server runs (this is the dummy server's first test): from its first answer on, every
    request to its port reaches its own application. Serve's HAProxy falls back to Serve's proxy actor until it lists
    the new ingress replica, and that actor's fixed port 8500 (bound with SO_REUSEPORT) was the other cluster's too:
    a fresh clone's test run once measured the torch server under the dummy server's name."""
    for server, backend in ((dummy_server, "dummy"), (torch_server, "torch")):
        with server.client() as client:
            seen = {client.get("/info").json()["backend"]["backend"] for _ in range(20)}
        assert seen == {backend}, (server.url, seen)
    # The window is short and not always hit, so the cause is checked too: each front door's backup route (Serve's
    # fallback proxy) is a port of its own, not Ray's fixed 8500.
    backups = {server.url: _haproxy_backup_port(server) for server in (dummy_server, torch_server)}
    assert len(set(backups.values())) == 2 and 8500 not in backups.values(), backups


def _haproxy_backup_port(server: Server) -> int:
    """The port of the ``backup`` server in the config of the HAProxy that listens on ``server``'s port."""
    port = server.url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] != "haproxy" or "-f" not in cmd:
            continue
        config = Path(cmd[cmd.index("-f") + 1]).read_text()
        if re.search(rf"^\s*bind \S*:{port}\s*$", config, re.M):
            backup = re.search(r"^\s*server \S+ \S+:(\d+) .*\bbackup\b", config, re.M)
            assert backup, config
            return int(backup.group(1))
    raise AssertionError(f"no HAProxy listens on {port}")


async def _closed_loop(client: httpx.AsyncClient, text: str, workers: int, until: float,
                       out: list[tuple[Any, float]]) -> None:
    """``workers`` clients, each sending its next request when the last is answered, until ``until``."""
    async def worker(w: int) -> None:
        i = 0
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                r = await client.post("/predict", json={"inputs": f"{text} {w} {i}"})
                out.append((r, time.monotonic() - started))
            except httpx.HTTPError as err:  # a hang or a dropped connection: reported, never swallowed
                out.append((err, time.monotonic() - started))
            i += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))


def _p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99))


@pytest.mark.slow
def test_long_inputs_do_not_slow_the_short_tier(dummy_server: Server) -> None:
    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        async with dummy_server.async_client(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
            await _closed_loop(client, SHORT_TEXT, 4, time.monotonic() + 2, [])  # warm every connection
            alone: list[Any] = []
            mixed: list[Any] = []
            longs: list[Any] = []
            # Alternating windows, pooled: a p99 is its slowest few samples, so one window each would compare two
            # handfuls taken at different moments of a busy 2-core machine; five of each, interleaved, compare
            # ~1,800 samples a side under the same drift (three gave 1.03-1.13x here, too close to the bound).
            for _ in range(PROBES):
                await _closed_loop(client, SHORT_TEXT, 4, time.monotonic() + PROBE_S, alone)
                until = time.monotonic() + PROBE_S
                await asyncio.gather(_closed_loop(client, SHORT_TEXT, 4, until, mixed),
                                     _closed_loop(client, LONG_TEXT, 4, until, longs))
            return alone, mixed, longs

    alone, mixed, longs = asyncio.run(run())
    if _p99([s for _, s in mixed]) > 1.2 * _p99([s for _, s in alone]):
        # Inconclusive near the bound (seen 1.03-1.13x here): measure as much again and judge all of it together.
        more = asyncio.run(run())
        alone, mixed, longs = alone + more[0], mixed + more[1], longs + more[2]
    for results in (alone, mixed, longs):
        assert results and all(isinstance(r, httpx.Response) and r.status_code == 200 for r, _ in results), \
            [r if not isinstance(r, httpx.Response) else r.text for r, _ in results][:3]
    assert len(longs) >= 8, "the long load hardly ran"
    p99_alone = _p99([s for _, s in alone])
    p99_mixed = _p99([s for _, s in mixed])
    long_median = statistics.median(s for _, s in longs)
    print(f"short p99 alone {p99_alone * 1e3:.0f} ms, with long load {p99_mixed * 1e3:.0f} ms "
          f"({len(alone)}/{len(mixed)} requests; {p99_mixed / p99_alone:.2f}x); long median {long_median * 1e3:.0f} ms "
          f"({len(longs)})")
    # Sharing a queue, nearly every short input would wait behind part of a ~1.6 s long batch, so its p99 would be
    # over a second. In its own tier it waits for none: the p99 grows only by the CPU the ingress and Ray spend on
    # the long requests. The bound: at most 20%.
    assert long_median > 4 * p99_alone
    assert p99_mixed <= 1.2 * p99_alone, (p99_alone, p99_mixed)


@pytest.mark.slow
def test_a_burst_is_shed_with_padless_429s(dummy_server: Server) -> None:
    async def run() -> tuple[list[Any], httpx.Response]:
        async with dummy_server.async_client(timeout=40, limits=httpx.Limits(max_connections=300)) as client:
            async def one(i: int) -> Any:
                try:
                    return await client.post("/predict", json={"inputs": f"{SHORT_TEXT} burst {i}"})
                except httpx.HTTPError as err:
                    return err

            results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), timeout=60)
            return results, await client.post("/predict", json={"inputs": "after the burst"})

    results, after = asyncio.run(run())
    lost = [r for r in results if not isinstance(r, httpx.Response)]
    assert not lost, lost[:3]
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 429} and codes.count(200) >= QUEUE // 2 and codes.count(429) > 0, sorted(codes)
    for r in results:
        if r.status_code == 429:
            _envelope(r, 429, "overloaded")
            assert int(r.headers["retry-after"]) >= 1
        else:
            assert sorted(s["label"] for s in r.json()) == LABELS  # one input, every label
    assert after.status_code == 200, after.text


@pytest.mark.slow
def test_a_replica_killed_under_load_fails_only_its_requests(dummy_server: Server) -> None:
    async def run(victim: psutil.Process) -> tuple[list[Any], httpx.Response]:
        async with dummy_server.async_client(timeout=40, limits=httpx.Limits(max_connections=64)) as client:
            results: list[Any] = []
            until = time.monotonic() + 10
            load = asyncio.gather(_closed_loop(client, SHORT_TEXT, 8, until, results),
                                  _closed_loop(client, LONG_TEXT, 2, until, results))
            await asyncio.sleep(3)
            victim.kill()  # SIGKILL: a crash, no goodbye
            await asyncio.wait_for(load, timeout=60)  # none hangs: each ends within its 15 s deadline
            end = time.monotonic() + 60
            while True:  # Serve replaces the replica; the service answers 200 again
                after = await client.post("/predict", json={"inputs": "after the crash"})
                if after.status_code == 200 and len(replica_processes(dummy_server, "PadlessTier_short")) == 2:
                    return results, after
                assert time.monotonic() < end, after.text
                await asyncio.sleep(0.5)

    # A kill can land while the victim holds nothing (seen once: 447 answers, all 200), which proves nothing about
    # in-flight requests; so up to three kills, each checked in full, until one cuts requests short.
    failed: list[Any] = []
    for _ in range(3):
        victims = replica_processes(dummy_server, "PadlessTier_short")
        assert len(victims) == 2, victims
        results, after = asyncio.run(run(victims[0]))
        lost = [r for r, _ in results if not isinstance(r, httpx.Response)]
        assert not lost, lost[:3]
        codes = [r.status_code for r, _ in results]
        print("after the kill:", {c: codes.count(c) for c in sorted(set(codes))},
              f"slowest {max(s for _, s in results):.1f} s")
        assert set(codes) <= {200, 429, 503, 504}, sorted(set(codes))
        assert codes.count(200) > len(codes) // 2
        codes_of = {429: "overloaded", 503: "replica_lost", 504: "deadline_exceeded"}
        for r in (r for r, _ in results if r.status_code != 200):
            _envelope(r, r.status_code, codes_of[r.status_code])
        failed += [r for r, _ in results if r.status_code == 503]  # replica_lost: cut short by the kill
        assert max(s for _, s in results) < 15 + 5
        assert len(after.json()) == 3
        assert victims[0].pid not in [p.pid for p in replica_processes(dummy_server, "PadlessTier_short")]
        if failed:
            break
    assert failed, "no request was in flight on a killed replica, in three kills"


@pytest.mark.slow
def test_sigterm_drains_and_exits_0(dummy_server: Server) -> None:
    """Last in the module: it stops the dummy server. The SIGTERM goes to the whole process group (as `timeout` and
    `kill -- -PGID` send it), so it reaches the local cluster's GCS and raylet too: they hold it, and padless drains
    as when it alone is signalled (docker, Kubernetes). Without that they died at once, the drain could not reach
    the ingress (readiness stayed 200), and padless said the cluster was gone."""
    async def run() -> tuple[list[Any], list[int], httpx.Response | None, float]:
        async with dummy_server.async_client(timeout=40, limits=httpx.Limits(max_connections=64)) as client, \
                httpx.AsyncClient(base_url=dummy_server.url, timeout=5) as probe:
            tasks = [asyncio.ensure_future(client.post("/predict", json={"inputs": f"{LONG_TEXT} {i}"}))
                     for i in range(6)]
            await asyncio.sleep(1.0)  # admitted: the long tier is busy with them for several seconds
            assert not all(t.done() for t in tasks)
            os.killpg(dummy_server.proc.pid, signal.SIGTERM)  # padless leads its own group (start_new_session)
            signalled = time.monotonic()
            ready: list[tuple[float, int]] = []  # (seconds after the signal, status)
            late = None
            while not all(t.done() for t in tasks) and time.monotonic() < signalled + 25:
                try:
                    sent = time.monotonic() - signalled
                    ready.append((sent, (await probe.get("/ready")).status_code))
                    if late is None and ready[-1][1] == 503:
                        late = await probe.post("/predict", json={"inputs": "arrived during the drain"})
                except httpx.TransportError:
                    break
                await asyncio.sleep(0.1)
            return list(await asyncio.gather(*tasks, return_exceptions=True)), ready, late, signalled

    responses, ready, late, signalled = asyncio.run(run())
    code = dummy_server.proc.wait(timeout=60)
    assert code == 0, dummy_server.logs()[-3000:]
    assert time.monotonic() - signalled < 20 + 30
    assert [r.status_code if isinstance(r, httpx.Response) else r for r in responses] == [200] * 6
    # The signal reaches the ingress through a Ray actor (tens of ms); from then on readiness stays false.
    settled = [status for sent, status in ready if sent >= 0.5]
    assert settled and set(settled) == {503}, ready
    assert all(status == 503 for _, status in ready[ready.index(next(p for p in ready if p[1] == 503)):]), ready
    assert late is not None
    _envelope(late, 503, "not_ready")
    logs = dummy_server.logs()
    assert "stopped" in logs, logs[-3000:]
    assert "did not answer the drain" not in logs and "processes are gone" not in logs, logs[-3000:]
