"""``padless bench serve``: padless's server against the server a user would write, in one run, one machine.

Steps, all on the same workload (:func:`padless.bench.workload.make_workload`) and loopback only:

1. offline throughput of the served engine's outputs on the workload (the engine's ceiling), measured first, per
   backend;
2. start ``padless serve`` (once per backend: ``padless`` is torch fp32, ``padless-<backend>`` the others) and the
   baseline (a classifier: :mod:`padless.bench.baseline_server`, FastAPI calling ``transformers.pipeline`` per
   request; an embedding model, ``task="embed"``: :mod:`padless.bench.baseline_embed_server`, FastAPI calling
   ``SentenceTransformer.encode`` per request, both driven at ``/embed``) as separate processes on free ports;
3. for each, the highest Poisson rate that holds p99 ≤ ``p99_limit_ms`` with no errors (:func:`find_capacity`);
4. padless saturated (offered well above its capacity, at most ``SATURATION_IN_FLIGHT`` requests outstanding,
   latency bound lifted): achieved texts/s vs offline;
5. both at a common rate (half the baseline's capacity): p50/p99;
6. padless at 1 request/s (``LOW_RATE_SECONDS``) and at 50% of its capacity: p99 ratio.

Every run at a rate holds at least ``min_requests`` requests (a low rate runs longer), so each p99 comes from enough
requests to mean something. Each request carries ``inputs_per_request`` texts (rates are requests/s; throughputs
texts/s).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from padless.bench.capacity import find_capacity, step_seconds
from padless.bench.loadstats import run_summary
from padless.bench.loadtest import run_load
from padless.bench.offline_configs import padless_config_name
from padless.bench.servers import free_port, start_server, stop_server
from padless.bench.workload import make_workload
from padless.config import SERVING_STREAMS
from padless.machine import describe

SATURATION_IN_FLIGHT = 256
SATURATION_SECONDS = 15.0  # so that filling the queue at the start and draining it at the end are a small part
LOW_RATE_SECONDS = 60.0  # the 1 request/s run: 60 requests, so its p99 is not one request's luck
BASELINES = {"classify": "pipeline-server", "embed": "st-server"}
BASELINE = BASELINES["classify"]


def run_serve_bench(model_dir: str, *, mix: str = "realistic", n: int = 400, seed: int = 0,
                    p99_limit_ms: float = 200.0, duration: float = 8.0, capacity_budget_s: float = 240.0,
                    out_dir: Path | None = None, server_args: list[str] | None = None,
                    log: Any = None, backends: list[str] | None = None, min_requests: int = 400,
                    task: str = "classify", inputs_per_request: int = 1) -> dict[str, Any]:
    """Run the steps in the module docstring and return (and optionally write) the results."""
    say = log or (lambda msg: None)
    backends = list(backends or ["torch"])
    baseline = BASELINES[task]
    load: dict[str, Any] = {"route": "/embed" if task == "embed" else "/predict",
                            "inputs_per_request": inputs_per_request}
    offline_by, texts = _offline_rates(model_dir, backends, mix, n, seed, say, task)
    out = Path(out_dir) if out_dir else Path("bench-results")
    out.mkdir(parents=True, exist_ok=True)

    def length(rate: float) -> float:
        return step_seconds(rate, duration, min_requests)

    result: dict[str, Any] = {"benchmark": "serve", "model": model_dir, "task": task, "baseline": baseline,
                              "inputs_per_request": inputs_per_request, "machine": describe(), "mix": mix, "n": n,
                              "seed": seed,
                              "p99_limit_ms": p99_limit_ms, "duration_s": duration, "min_requests": min_requests,
                              "saturation_in_flight": SATURATION_IN_FLIGHT,
                              "offline_texts_per_s": offline_by[backends[0]],
                              "offline_texts_per_s_by_backend": offline_by, "servers": {}}
    servers = _server_commands(model_dir, backends, server_args, task)
    offline_of = {padless_config_name(b): offline_by[b] for b in backends}
    # Every server started is stopped in the finally, whatever stops the run (a failed step, Ctrl-C, a SIGTERM turned
    # into SystemExit by the CLI): the padless servers keep running while the baseline's is measured, so a stop
    # during that step must reach them too.
    running: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name, (cmd, ready_path) in servers.items():
            port = free_port()
            url = urls[name] = f"http://127.0.0.1:{port}"
            full = [*cmd, str(port)] if name == baseline else [*cmd, "--port", str(port)]
            running.append(start_server(full, url, ready_path, out / f"{name}.log"))
            say(f"{name}: finding the highest rate with p99 <= {p99_limit_ms:.0f} ms …")
            cap = asyncio.run(find_capacity(url, texts=texts, p99_limit_ms=p99_limit_ms, duration=duration,
                                            start_rate=20.0 / inputs_per_request, budget_s=capacity_budget_s,
                                            seed=seed, min_requests=min_requests, **load))
            entry: dict[str, Any] = {"capacity_rps": cap["rate"], "capacity_trials": cap["trials"],
                                     "at_capacity": run_summary(cap["report"]) if cap.get("report") else None}
            say(f"{name}: capacity {cap['rate']} req/s")
            if name in offline_of:
                entry.update(_padless_loads(url, texts, offline_of[name], cap["rate"], duration, seed, length, load))
            entry["url_port"] = port
            result["servers"][name] = entry
        common = (result["servers"][baseline]["capacity_rps"] or 1.0) / 2
        result["common_rate_rps"] = common
        for name, entry in result["servers"].items():
            rep = asyncio.run(run_load(urls[name], rate=common, duration=length(common), texts=texts,
                                       seed=seed + 4, **load))
            entry["at_common_rate"] = run_summary(rep)
    finally:
        for proc in running:
            stop_server(proc)
    result["ratios"] = _ratios(result["servers"], list(offline_of), baseline)
    (out / "bench-serve.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _offline_rates(model_dir: str, backends: list[str], mix: str, n: int, seed: int,
                   say: Callable[[str], None], task: str = "classify") -> tuple[dict[str, float], list[str]]:
    """Step 1: each backend's offline texts/s on the workload, and the workload."""
    from padless.config import EngineSpec
    from padless.server.run import serving_backend
    from padless.tasks import load_engine

    offline_by: dict[str, float] = {}
    texts: list[str] = []
    for backend in backends:
        # The engine the server will run: for ``auto`` that is what ``padless serve`` resolves it to.
        spec = EngineSpec.of(model=model_dir, task=task, backend=serving_backend(model_dir, backend, task),
                             streams=SERVING_STREAMS)
        engine = load_engine(spec, serving=True)
        texts = texts or make_workload(engine.encoder.tokenizer, mix, n, seed)
        engine.outputs(texts[:16])
        started = time.perf_counter()
        engine.with_options().outputs(texts)
        offline_by[backend] = n / (time.perf_counter() - started)
        say(f"offline {type(engine).__name__}.outputs, {backend}: {offline_by[backend]:.1f} texts/s")
        del engine
    return offline_by, texts


def _server_commands(model_dir: str, backends: list[str], server_args: list[str] | None,
                     task: str = "classify") -> dict[str, tuple[list[str], str]]:
    """Each server's command (its port still to add) and ready path: one ``padless serve`` per backend, then the
    baseline."""
    servers = {
        # The result cache is off: the load cycles through a fixed workload, and answering repeats from the cache
        # would measure the cache, not the batching (the baseline has none).
        padless_config_name(b): ([sys.executable, "-m", "padless.cli.main", "serve", "--model", model_dir,
                                  "--task", task, "--backend", b, "--log-level", "warning", "--cache-size", "0",
                                  *(server_args or [])],
                                 "/ready")
        for b in backends
    }
    module = "baseline_embed_server" if task == "embed" else "baseline_server"
    servers[BASELINES[task]] = ([sys.executable, "-m", f"padless.bench.{module}", model_dir], "/health")
    return servers


def _padless_loads(url: str, texts: list[str], own: float, capacity: float | None, duration: float, seed: int,
                   length: Callable[[float], float], load: dict[str, Any]) -> dict[str, Any]:
    """Steps 4 and 6 for one padless server whose offline rate is ``own``: saturated, at 1 request/s, and at half
    its ``capacity`` (if it held one)."""
    # Offered well above capacity, but at most SATURATION_IN_FLIGHT outstanding (the rest are counted as dropped
    # client-side): with thousands of open connections the load generator, on the same cores, slowed itself and the
    # server. Enough are outstanding that the server's queue holds a few batches' worth to sort by length, as a
    # saturated server's queue does.
    per = load["inputs_per_request"]
    sat = asyncio.run(run_load(url, rate=max(2 * own, 50.0) / per, duration=max(SATURATION_SECONDS, duration),
                               texts=texts, timeout=60.0, seed=seed + 1, max_in_flight=SATURATION_IN_FLIGHT, **load))
    entry: dict[str, Any] = {"saturated": run_summary(sat),
                             "saturated_vs_offline": (sat["throughput_texts_per_s"] or 0) / own}
    low = asyncio.run(run_load(url, rate=1.0, duration=max(LOW_RATE_SECONDS, duration), texts=texts, seed=seed + 2,
                               **load))
    entry["at_1rps"] = run_summary(low)
    if capacity:
        half = asyncio.run(run_load(url, rate=capacity / 2, duration=length(capacity / 2), texts=texts,
                                    seed=seed + 3, **load))
        entry["at_half_capacity"] = run_summary(half)
    return entry


def _ratios(servers: dict[str, dict[str, Any]], padless_names: list[str], baseline: str = BASELINE) -> dict[str, Any]:
    """Each padless server against the baseline (capacity), its own offline rate (saturated) and itself at 1
    request/s (p99 at half capacity)."""
    b = servers[baseline]
    key = baseline.replace("-", "_")
    ratios: dict[str, Any] = {}
    for name in padless_names:
        p = servers[name]
        suffix = "" if name == "padless" else f"[{name.removeprefix('padless-')}]"
        ratios.update({
            f"capacity_padless{suffix}_vs_{key}": (p["capacity_rps"] or 0) / (b["capacity_rps"] or float("inf")),
            f"saturated_vs_offline{suffix}": p.get("saturated_vs_offline"),
            f"p99_half_capacity_vs_1rps{suffix}": ((p.get("at_half_capacity") or {}).get("p99_ms") or 0)
            / ((p.get("at_1rps") or {}).get("p99_ms") or float("inf")),
        })
    return ratios
