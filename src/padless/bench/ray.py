"""``padless bench ray``: padless on Ray against local padless and against what a Ray user writes, one run.

Offline (the same Parquet file of ``rows`` realistic-mix texts, every command a separate process timed whole, start-up
included, since that is what a user waits for):

1. local ``padless classify FILE -o local.parquet --threads W`` (W = workers: the same cores);
2. ``padless classify FILE -o ray-scored/ --ray --workers W --threads 1`` (a local Ray cluster of W CPUs);
3. the Ray docs' recipe (:mod:`padless.bench.ray_baseline`): ``map_batches`` over a callable class calling
   ``transformers.pipeline(..., batch_size=32)``, ``concurrency=W``, one thread each.

Ratios are rows/s over rows/s; the Ray run's labels and scores are checked against the local run's row by row (by
the stable row id), so the speed is not bought with different answers.

Serving (``--serve``): the ``realistic-512`` mix (5% of requests at 480–512 tokens, the rest the realistic mix), one
text per request, two configurations of ``padless serve --ray`` on the same total replicas: one pool of W replicas, and
tiers (W − 1 short replicas, one long replica, ``--long-threshold``; by default the long replica may use every core, at
a lower CPU priority, so it borrows the short tier's idle cores). For each: the capacity at p99 ≤ the limit
(:func:`padless.bench.capacity.find_capacity`), then both at the same offered rates (half and all of one pool's
capacity, or of the tiers' if one pool held no rate), where the short requests' p99 is read apart from the long ones'
(``groups`` in :func:`padless.bench.loadtest.run_load`), over ``compare_requests`` requests per step. The same-load
comparison runs in ``rounds`` rounds, each configuration started afresh in each, in ABBA order (one pool, tiers; tiers,
one pool; …), both configurations on the same arrival times within a round; each configuration's requests at a rate are
pooled over the rounds before its p99 is read, and every round's own figures are kept: a step's p99 varies between
identical runs and the machine's speed drifts over a run, which single, sequential measurements would compare instead
of the tiers.
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
from padless.bench.loadstats import latency_summary, run_summary
from padless.bench.loadtest import run_load
from padless.bench.servers import free_port, start_server, stop_server
from padless.bench.workload import describe_lengths, make_workload
from padless.machine import describe

PADLESS = [sys.executable, "-m", "padless.cli.main"]


def _timed(cmd: list[str], log: Path) -> tuple[float, str]:
    """Run a command to completion; its wall time and its stderr+stdout (kept in ``log``). Fails loudly."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[3] if len(cmd) > 3 else cmd[0]} exited {done.returncode}; see {log}")
    return seconds, done.stdout + done.stderr


def _last_json(output: str, starts: str = "{") -> dict[str, Any]:
    """The last line of a command's output that starts with ``starts`` (a JSON object), parsed: the piped
    ``padless classify``'s ``{"summary": …}`` line, or the baseline's one line."""
    for line in reversed(output.splitlines()):
        if line.startswith(starts):
            return dict(json.loads(line))
    raise RuntimeError(f"no line starting {starts!r} in the command's output")


def _compare(local_file: Path, ray_dir: Path) -> dict[str, Any]:
    """Labels and scores of the Ray output (put back in input order by its row id) against the local output."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from padless.ray.data import ID_FIELDS, ROW_ID

    local = pq.read_table(local_file).to_pydict()
    by_position = [(name, "ascending") for name in ID_FIELDS if name != ROW_ID]  # input file, then row number
    ray_rows = pads.dataset(str(ray_dir), format="parquet").to_table().sort_by(by_position).to_pydict()
    id_column = ROW_ID
    same_rows = len(ray_rows["label"]) == len(local["label"])
    labels = sum(a == b for a, b in zip(ray_rows["label"], local["label"]))
    diffs = [abs(a - b) for a, b in zip(ray_rows["score"], local["score"]) if a is not None and b is not None]
    return {"rows_local": len(local["label"]), "rows_ray": len(ray_rows["label"]), "same_row_count": same_rows,
            "label_agreement": labels / max(1, len(local["label"])), "max_abs_score_diff": max(diffs, default=0.0),
            "unique_ids": len(set(ray_rows[id_column])) == len(ray_rows[id_column])}


def run_offline(model: str, model_dir: str, backend: str, rows: int, workers: int, seed: int, out: Path,
                say: Callable[[str], None], baseline: bool = True) -> dict[str, Any]:
    """Steps 1–3 of the module docstring."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    say(f"making {rows:,} realistic-mix texts …")
    texts = make_workload(tokenizer, "realistic", rows, seed)
    source = out / "ray-bench-input.parquet"
    pq.write_table(pa.table({"text": texts}), source)
    common = ["--model", model, "--backend", backend, "--no-progress", "--overwrite"]
    runs: dict[str, dict[str, Any]] = {}

    say(f"local padless classify, {workers} threads …")
    seconds, output = _timed([*PADLESS, "classify", str(source), "-o", str(out / "local.parquet"), *common,
                              "--threads", str(workers)], out / "local.log")
    runs["padless-local"] = {"seconds": seconds, "summary": _last_json(output, '{"summary"')["summary"]}
    say(f"padless classify --ray, {workers} workers × 1 thread …")
    seconds, output = _timed([*PADLESS, "classify", str(source), "-o", str(out / "ray-scored"), *common, "--ray",
                              "--workers", str(workers), "--threads", "1"], out / "ray.log")
    runs["padless-ray"] = {"seconds": seconds, "summary": _last_json(output, '{"summary"')["summary"]}
    if baseline:
        say(f"Ray docs' map_batches + transformers.pipeline(batch_size=32), {workers} workers × 1 thread …")
        seconds, output = _timed([sys.executable, "-m", "padless.bench.ray_baseline", str(source),
                                  str(out / "baseline-scored"), model_dir, str(workers), "1"], out / "baseline.log")
        runs["ray-pipeline-b32"] = {"seconds": seconds, "summary": _last_json(output)}
    for entry in runs.values():
        entry["rows_per_s"] = rows / entry["seconds"]
    ratios = {"ray_vs_local": runs["padless-ray"]["rows_per_s"] / runs["padless-local"]["rows_per_s"]}
    if baseline:
        ratios["ray_vs_ray_pipeline"] = runs["padless-ray"]["rows_per_s"] / runs["ray-pipeline-b32"]["rows_per_s"]
    ray_summary = runs["padless-ray"]["summary"]
    return {"rows": rows, "workers": workers, "lengths": describe_lengths([len(t) for t in
                                                                           tokenizer(texts)["input_ids"]]),
            "runs": runs, "ratios": ratios, "check": _compare(out / "local.parquet", out / "ray-scored"),
            "per_worker_rows_per_s": ray_summary.get("per_worker_rows_per_s")}


def run_serving(model: str, model_dir: str, backend: str, n: int, workers: int, long_threshold: int, seed: int,
                out: Path, say: Callable[[str], None], p99_limit_ms: float, duration: float,
                budget_s: float, min_requests: int, compare_requests: int = 1500,
                ray_proxy: str = "auto", rounds: int = 2) -> dict[str, Any]:
    """The serving half of the module docstring."""
    from transformers import AutoTokenizer

    if workers < 2:
        raise ValueError("the tier comparison needs at least 2 replicas (one short, one long)")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = make_workload(tokenizer, "realistic-512", n, seed)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    groups = ["long" if length > long_threshold else "short" for length in lengths]
    # Each configuration with padless's default threads: one pool divides the cores among its replicas; with tiers
    # the short tier divides them less one among its own and the long tier borrows them all at a lower priority.
    common = ["serve", "--ray", "--model", model, "--backend", backend, "--cache-size", "0", "--log-level", "warning",
              "--ray-proxy", ray_proxy]
    configs = {
        "one-pool": ["--replicas", str(workers)],
        "tiers": ["--replicas", str(workers - 1), "--long-threshold", str(long_threshold), "--long-replicas", "1"],
    }
    result: dict[str, Any] = {"n": n, "mix": "realistic-512", "long_threshold": long_threshold,
                              "long_share": groups.count("long") / n, "p99_limit_ms": p99_limit_ms, "servers": {}}
    servers = _Servers({name: [*PADLESS, *common, *extra] for name, extra in configs.items()}, out)
    try:
        for name, extra in configs.items():
            say(f"{name}: starting padless serve --ray {' '.join(extra)} …")
            url = servers.start(name, f"{name}.log")
            cap = asyncio.run(find_capacity(url, texts=texts, p99_limit_ms=p99_limit_ms, duration=duration,
                                            start_rate=10.0, budget_s=budget_s, seed=seed, min_requests=min_requests))
            result["servers"][name] = {"capacity_rps": cap["rate"], "capacity_trials": cap["trials"],
                                       **_ray_info(url)}
            say(f"{name}: capacity {cap['rate']} req/s at p99 <= {p99_limit_ms:.0f} ms")
            # Only one Ray Serve app at a time: two would share the cores and each other's cluster.
            servers.stop(name)
        base, base_name = comparison_base({k: v["capacity_rps"] for k, v in result["servers"].items()})
        result["same_load_base"] = {"rate": base, "from": base_name}
        runs = _same_load_rounds(servers, list(configs), texts, groups, base, base_name, rounds, duration,
                                 compare_requests, seed, say)
        result["rounds"] = rounds
        result["same_load"] = {load: {name: pool_rounds(reps) for name, reps in by_name.items()}
                               for load, by_name in runs.items()}
    finally:
        servers.stop_all()
    ratio, verdict = capacity_ratio({k: v["capacity_rps"] for k, v in result["servers"].items()})
    result["ratios"] = {"capacity_tiers_vs_one_pool": ratio, **_same_load_ratios(result["same_load"])}
    result["capacity_verdict"] = verdict
    return result


class _Servers:
    """The ``padless serve --ray`` configurations of one run, started on free ports and kept until stopped."""

    def __init__(self, commands: dict[str, list[str]], out: Path) -> None:
        self.commands, self.out = commands, out
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, log: str) -> str:
        """Start configuration ``name``; its URL once ready."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.procs[name] = start_server([*self.commands[name], "--port", str(port)], url, "/ready", self.out / log)
        return url

    def stop(self, name: str) -> None:
        stop_server(self.procs.pop(name))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_server(proc)


def _same_load_rounds(servers: _Servers, names: list[str], texts: list[str], groups: list[str], base: float,
                      base_name: str, rounds: int, duration: float, compare_requests: int, seed: int,
                      say: Callable[[str], None]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every configuration at half and all of ``base`` req/s, in ``rounds`` rounds: each load's reports by
    configuration, one per round."""
    shares = (0.5, 1.0)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {f"{s:.0%} of {base_name}": {} for s in shares}
    for round_no in range(rounds):
        # ABBA order: a machine that drifts slower (or faster) during the run does not favour either side.
        for name in (names if round_no % 2 == 0 else list(reversed(names))):
            url = servers.start(name, f"{name}-round{round_no + 1}.log")
            for share in shares:
                rate = base * share
                # A p99 of a few hundred short requests is their two or three slowest: too few to compare on.
                # Both configurations get the same arrival times within a round (the same seed).
                rep = asyncio.run(run_load(url, rate=rate, duration=step_seconds(rate, duration, compare_requests),
                                           texts=texts, groups=groups, seed=seed + 5 + round_no,
                                           keep_latencies=True))
                runs[f"{share:.0%} of {base_name}"].setdefault(name, []).append(rep)
                short = rep["latency_ms_by_group"].get("short", {}).get("p99")
                say(f"round {round_no + 1}, {name} at {rate:.1f} req/s: short p99 {short} ms")
            servers.stop(name)
    return runs


def _same_load_ratios(same_load: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """At each load: one pool's short-request p99 over the tiers', and the tiers' p99 of every request over one
    pool's."""
    ratios: dict[str, float] = {}
    for load, entries in same_load.items():
        short: dict[str, Any] = {k: (v["by_group"].get("short") or {}).get("p99") for k, v in entries.items()}
        if short.get("tiers") and short.get("one-pool"):
            ratios[f"short_p99_one_pool_over_tiers at {load}"] = short["one-pool"] / short["tiers"]
        every = {k: v["latency_ms"]["p99"] for k, v in entries.items()}
        if every.get("tiers") and every.get("one-pool"):
            ratios[f"all_p99_tiers_over_one_pool at {load}"] = every["tiers"] / every["one-pool"]
    return ratios


def comparison_base(capacities: dict[str, float | None]) -> tuple[float, str]:
    """The rate the same-load comparison is run at (half and all of it) and where it came from: one pool's capacity;
    if one pool held no rate, the tiers' (a comparison at a made-up 1 req/s would hardly queue either side, and
    would be labelled as one pool's capacity); if neither held one, 1 req/s, named as such."""
    for name in ("one-pool", "tiers"):
        if capacities.get(name):
            return float(capacities[name] or 0.0), f"{name} capacity"
    return 1.0, "1 req/s (no configuration held the p99 limit)"


def capacity_ratio(capacities: dict[str, float | None]) -> tuple[float | None, str]:
    """Tiers' capacity over one pool's, and the verdict in words. A configuration that held no rate in its search has
    no capacity to divide by (or into): the ratio is then None (0.0 would read as the tiers being worse), and the
    verdict says which held one."""
    one, tiers = capacities.get("one-pool"), capacities.get("tiers")
    if one and tiers:
        return tiers / one, f"tiers {tiers:.1f} / one pool {one:.1f} req/s"
    if tiers:
        return None, f"one pool held no rate in its search; tiers held {tiers:.1f} req/s (tiers higher)"
    if one:
        return None, f"tiers held no rate in their search; one pool held {one:.1f} req/s (tiers lower)"
    return None, "neither configuration held the p99 limit at any rate tried"


def pool_rounds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's :func:`run_load` reports at one rate (one per round, each with ``keep_latencies``),
    pooled: ``latency_ms`` (every ok request) and ``by_group`` (per group) summarised over every round's requests
    together, outcomes summed, and each round's own summary under ``rounds`` so the spread between rounds stays
    visible."""
    if not reports:
        raise ValueError("no reports to pool")
    by_group: dict[str, list[float]] = {}
    for rep in reports:
        for group, seconds in rep["ok_latencies_s_by_group"].items():
            by_group.setdefault(group, []).extend(seconds)
    outcomes: dict[str, int] = {}
    for rep in reports:
        for outcome, count in rep["outcomes"].items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    return {"offered_rate": reports[0]["offered_rate"], "requests": sum(r["scheduled"] for r in reports),
            "latency_ms": latency_summary([s for seconds in by_group.values() for s in seconds]),
            "outcomes": outcomes,
            "by_group": {g: latency_summary(v) for g, v in sorted(by_group.items())},
            "rounds": [{**run_summary(rep), "by_group": rep["latency_ms_by_group"]} for rep in reports]}


def _ray_info(url: str) -> dict[str, Any]:
    """What each tier runs (backend, threads, spin-waiting) and Serve's front door, as the server's ``/info``
    reports them."""
    import httpx

    try:
        ray_info = httpx.get(f"{url}/info", timeout=10).json().get("ray", {})
    except (httpx.HTTPError, ValueError):
        ray_info = {}
    return {"tiers": ray_info.get("tiers"), "http_proxy": ray_info.get("http_proxy")}


def run_ray_bench(model: str, model_dir: str, *, backend: str = "auto", rows: int = 20000, n: int = 400,
                  workers: int = 2, seed: int = 0, out_dir: Path = Path("bench-results"), offline: bool = True,
                  baseline: bool = True, serve: bool = True, long_threshold: int = 128, p99_limit_ms: float = 200.0,
                  duration: float = 8.0, budget_s: float = 180.0, min_requests: int = 300,
                  compare_requests: int = 1500, ray_proxy: str = "auto", rounds: int = 2,
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the parts asked for; write ``bench-ray.json`` in ``out_dir`` and return the result."""
    if serve:
        from padless.ray.front_door import controller_env

        controller_env(ray_proxy, local_cluster=True)  # a misspelt proxy: refused now, not after the offline part

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "ray", "model": model, "backend": backend, "machine": describe()}
    if offline:
        result["offline"] = run_offline(model, model_dir, backend, rows, workers, seed, out, say, baseline)
    if serve:
        result["serving"] = run_serving(model, model_dir, backend, n, workers, long_threshold, seed, out, say,
                                        p99_limit_ms, duration, budget_s, min_requests, compare_requests, ray_proxy,
                                        rounds)
    (out / "bench-ray.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
