"""``padless bench serve``: padless's server against the server a user would write, in one run, one machine.

Steps, all on the same workload (:func:`padless.bench.workload.make_workload`) and loopback only:

1. offline throughput of :meth:`Classifier.run` on the workload (the engine's ceiling), measured first, per backend;
2. start ``padless serve`` (once per backend: ``padless`` is torch fp32, ``padless-<backend>`` the others) and the
   baseline (:mod:`padless.bench.baseline_server`: FastAPI calling
   ``transformers.pipeline`` per request) as separate processes on free ports;
3. for each, the highest Poisson rate that holds p99 ≤ ``p99_limit_ms`` with no errors (:func:`find_capacity`);
4. padless saturated (offered well above its capacity, at most ``SATURATION_IN_FLIGHT`` requests outstanding,
   latency bound lifted): achieved texts/s vs offline;
5. both at a common rate (half the baseline's capacity): p50/p99;
6. padless at 1 request/s (``LOW_RATE_SECONDS``) and at 50% of its capacity: p99 ratio.

Every run at a rate holds at least ``min_requests`` requests (a low rate runs longer), so each p99 comes from enough
requests to mean something.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from padless.bench.capacity import find_capacity, step_seconds
from padless.bench.loadtest import run_load
from padless.bench.offline import _machine, padless_config_name
from padless.bench.workload import make_workload
from padless.config import SERVING_STREAMS

SATURATION_IN_FLIGHT = 256
SATURATION_SECONDS = 15.0  # so that filling the queue at the start and draining it at the end are a small part
LOW_RATE_SECONDS = 60.0  # the 1 request/s run: 60 requests, so its p99 is not one request's luck


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], path: str, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def _start(cmd: list[str], url: str, ready_path: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        _wait_ready(url, proc, ready_path)
    except BaseException:
        # Not ready, or the benchmark itself stopped (SystemExit on SIGTERM): the caller has no handle to stop it.
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    lat = report.get("latency_ms") or {}
    return {"offered_rate": report.get("offered_rate"), "throughput_rps": report.get("throughput_rps"),
            "throughput_texts_per_s": report.get("throughput_texts_per_s"), "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"), "max_ms": lat.get("max"), "outcomes": report.get("outcomes"),
            "server": report.get("server")}


def run_serve_bench(model_dir: str, *, mix: str = "realistic", n: int = 400, seed: int = 0,
                    p99_limit_ms: float = 200.0, duration: float = 8.0, capacity_budget_s: float = 240.0,
                    out_dir: Path | None = None, server_args: list[str] | None = None,
                    log: Any = None, backends: list[str] | None = None, min_requests: int = 400) -> dict[str, Any]:
    """Run the steps in the module docstring and return (and optionally write) the results."""
    from padless.engine import Classifier
    from padless.server.run import serving_backend

    say = log or (lambda msg: None)
    backends = list(backends or ["torch"])
    offline_by: dict[str, float] = {}
    texts: list[str] = []
    for backend in backends:
        # The engine the server will run: for ``auto`` that is what ``padless serve`` resolves it to.
        clf = Classifier(model_dir, backend=serving_backend(model_dir, backend), streams=SERVING_STREAMS)
        texts = texts or make_workload(clf.encoder.tokenizer, mix, n, seed)
        clf.run(texts[:16])
        started = time.perf_counter()
        clf.with_options().run(texts)
        offline_by[backend] = n / (time.perf_counter() - started)
        say(f"offline Classifier.run, {backend}: {offline_by[backend]:.1f} texts/s")
        del clf
    offline = offline_by[backends[0]]

    out = Path(out_dir) if out_dir else Path("bench-results")
    out.mkdir(parents=True, exist_ok=True)

    def length(rate: float) -> float:
        return step_seconds(rate, duration, min_requests)

    result: dict[str, Any] = {"benchmark": "serve", "model": model_dir, "machine": _machine(), "mix": mix, "n": n,
                              "seed": seed,
                              "p99_limit_ms": p99_limit_ms, "duration_s": duration, "min_requests": min_requests,
                              "saturation_in_flight": SATURATION_IN_FLIGHT,
                              "offline_texts_per_s": offline, "offline_texts_per_s_by_backend": offline_by,
                              "servers": {}}
    names = {b: padless_config_name(b) for b in backends}
    servers = {
        # The result cache is off: the load cycles through a fixed workload, and answering repeats from the cache
        # would measure the cache, not the batching (the baseline has none).
        names[b]: ([sys.executable, "-m", "padless.cli.main", "serve", "--model", model_dir, "--backend", b,
                    "--log-level", "warning", "--cache-size", "0", *(server_args or [])], "/ready")
        for b in backends
    }
    servers["pipeline-server"] = ([sys.executable, "-m", "padless.bench.baseline_server", model_dir], "/health")
    offline_of = {names[b]: offline_by[b] for b in backends}
    # Every server started is stopped in the finally, whatever stops the run (a failed step, Ctrl-C, a SIGTERM turned
    # into SystemExit by the CLI): the padless servers keep running while the baseline's is measured, so a stop
    # during that step must reach them too.
    running: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name, (cmd, ready_path) in servers.items():
            port = _free_port()
            url = urls[name] = f"http://127.0.0.1:{port}"
            full = [*cmd, str(port)] if name == "pipeline-server" else [*cmd, "--port", str(port)]
            running.append(_start(full, url, ready_path, out / f"{name}.log"))
            say(f"{name}: finding the highest rate with p99 <= {p99_limit_ms:.0f} ms …")
            cap = asyncio.run(find_capacity(url, texts=texts, p99_limit_ms=p99_limit_ms, duration=duration,
                                            start_rate=20.0, budget_s=capacity_budget_s, seed=seed,
                                            min_requests=min_requests))
            entry: dict[str, Any] = {"capacity_rps": cap["rate"], "capacity_trials": cap["trials"],
                                     "at_capacity": _summary(cap["report"]) if cap.get("report") else None}
            say(f"{name}: capacity {cap['rate']} req/s")
            if name in offline_of:
                own = offline_of[name]
                # Offered well above capacity, but at most SATURATION_IN_FLIGHT outstanding (the rest are counted as
                # dropped client-side): with thousands of open connections the load generator, on the same cores,
                # slowed itself and the server. Enough are outstanding that the server's queue holds a few batches'
                # worth to sort by length, as a saturated server's queue does.
                sat = asyncio.run(run_load(url, rate=max(2 * own, 50.0), duration=max(SATURATION_SECONDS, duration),
                                           texts=texts, timeout=60.0, seed=seed + 1,
                                           max_in_flight=SATURATION_IN_FLIGHT))
                entry["saturated"] = _summary(sat)
                entry["saturated_vs_offline"] = (sat["throughput_texts_per_s"] or 0) / own
                low = asyncio.run(run_load(url, rate=1.0, duration=max(LOW_RATE_SECONDS, duration), texts=texts,
                                           seed=seed + 2))
                entry["at_1rps"] = _summary(low)
                if cap["rate"]:
                    half = asyncio.run(run_load(url, rate=cap["rate"] / 2, duration=length(cap["rate"] / 2),
                                                texts=texts, seed=seed + 3))
                    entry["at_half_capacity"] = _summary(half)
            entry["url_port"] = port
            result["servers"][name] = entry
        base_cap = result["servers"]["pipeline-server"]["capacity_rps"] or 1.0
        common = base_cap / 2
        result["common_rate_rps"] = common
        for name, entry in result["servers"].items():
            rep = asyncio.run(run_load(urls[name], rate=common, duration=length(common), texts=texts,
                                       seed=seed + 4))
            entry["at_common_rate"] = _summary(rep)
    finally:
        for proc in running:
            _stop(proc)
    b = result["servers"]["pipeline-server"]
    result["ratios"] = {}
    for name in offline_of:
        p = result["servers"][name]
        suffix = "" if name == "padless" else f"[{name.removeprefix('padless-')}]"
        result["ratios"].update({
            f"capacity_padless{suffix}_vs_pipeline_server": (p["capacity_rps"] or 0) / (b["capacity_rps"]
                                                                                        or float("inf")),
            f"saturated_vs_offline{suffix}": p.get("saturated_vs_offline"),
            f"p99_half_capacity_vs_1rps{suffix}": ((p.get("at_half_capacity") or {}).get("p99_ms") or 0)
            / ((p.get("at_1rps") or {}).get("p99_ms") or float("inf")),
        })
    (out / "bench-serve.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
