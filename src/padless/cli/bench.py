"""``padless bench`` (offline; ``bench serve``; ``bench ray``; ``bench embed``) and ``padless loadtest``: the commands that measure.

Each imports its benchmark module only when it runs, so ``padless --help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from padless.cli.common import ensure_default, explicit_options, quiet_libraries
from padless.cli.options import ModelOpt, RowsOpt, StreamsOpt, TokensOpt, TunedOpt, WidthOpt
from padless.config import BatchConfig, EngineSpec, ModelConfig
from padless.errors import ConfigError, PadlessError

# The capacity search's options, shared by `bench serve` and `bench ray` (each with its own defaults).
P99Opt = Annotated[float, typer.Option(envvar="PADLESS_BENCH_P99_MS", help="Latency bound for capacity.")]
StepOpt = Annotated[float, typer.Option(envvar="PADLESS_BENCH_DURATION", help="Seconds per load step.")]
BudgetOpt = Annotated[float, typer.Option(envvar="PADLESS_BENCH_BUDGET", help="Seconds per capacity search.")]
MinRequestsOpt = Annotated[int, typer.Option(envvar="PADLESS_BENCH_MIN_REQUESTS", help="Requests per load step at least (a low rate runs longer), so each p99 rests on enough requests.")]

bench_app = typer.Typer(rich_markup_mode=None,
                        help="Benchmarks. Without a subcommand: offline, padless side by side with "
                             "transformers.pipeline baselines in one process, configs interleaved; "
                             "`bench serve` and `bench ray` measure serving; `bench embed` compares "
                             "embeddings with sentence-transformers.")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    model: ModelOpt = "default",
    mix: Annotated[str, typer.Option(envvar="PADLESS_BENCH_MIX", help="realistic (3–300 tokens) or long (50–512).")] = "realistic",
    n: Annotated[int, typer.Option("-n", envvar="PADLESS_BENCH_N", help="Texts in the workload.")] = 400,
    rounds: Annotated[int, typer.Option(envvar="PADLESS_BENCH_ROUNDS", help="Interleaved rounds; medians reported.")] = 2,
    seed: Annotated[int, typer.Option(envvar="PADLESS_BENCH_SEED", help="Workload seed.")] = 0,
    configs: Annotated[str | None, typer.Option(envvar="PADLESS_BENCH_CONFIGS", help="Comma-separated subset of pipeline-b1,pipeline-b32,pad512-b32,padless,padless-<backend>.")] = None,
    backend: Annotated[str, typer.Option(envvar="PADLESS_BENCH_BACKENDS", help="Comma-separated backends for padless configs (padless = torch fp32, always run; others appear as padless-<backend>).")] = "torch",
    out_dir: Annotated[Path, typer.Option("--out-dir", envvar="PADLESS_BENCH_OUT", help="Where bench.json and bench.png go.")] = Path("bench-results"),
    max_batch_tokens: TokensOpt = BatchConfig.max_batch_tokens,
    max_batch_size: RowsOpt = BatchConfig.max_batch_size,
    width_multiple: WidthOpt = BatchConfig.width_multiple,
    streams: StreamsOpt = ModelConfig.streams,
    tuned: TunedOpt = None,
) -> None:
    """Offline: padless side by side with transformers.pipeline baselines, in one process, interleaved."""
    ctx.obj = {"model": model, "mix": mix, "n": n, "seed": seed, "out_dir": out_dir}
    if ctx.invoked_subcommand is not None:
        return
    backends = [b.strip() for b in backend.split(",") if b.strip()]
    spec = _tuned_offline(ctx, EngineSpec.of(model=model, max_batch_tokens=max_batch_tokens,
                                             max_batch_size=max_batch_size, streams=streams), backends, tuned)
    quiet_libraries()
    from rich.console import Console

    from padless.bench.offline import render_table, run_offline_bench

    _check_mix(mix)
    ensure_default(model)
    chosen = [c.strip() for c in configs.split(",")] if configs else None
    result = run_offline_bench(model, mix=mix, n=n, rounds=rounds, seed=seed, configs=chosen, out_dir=out_dir,
                               max_batch_tokens=spec.batch.max_batch_tokens, max_batch_size=spec.batch.max_batch_size,
                               width_multiple=width_multiple, streams=spec.model.streams, progress=True,
                               backends=backends)
    Console(width=max(Console().width, 120)).print(render_table(result))  # a pipe's 80 columns truncate the names
    typer.echo(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")


def _tuned_offline(ctx: typer.Context, spec: EngineSpec, backends: list[str], tuned: str | None) -> EngineSpec:
    """``spec`` with the tuned file's offline section applied when it was measured for one of the backends the
    padless configs run (``backends``, then torch, which always runs; the first that matches), its note or warning
    printed on stderr. The bench has one set of batch settings for every padless config, and no threads setting
    (the file's is left out)."""
    from padless import tuned as tuned_file

    explicit = explicit_options(ctx) | {"threads"}
    tries = [tuned_file.apply(spec.replace(backend=b), section="offline", explicit=explicit, tuned=tuned)
             for b in dict.fromkeys([*backends, "torch"])]
    chosen = next((a for a in tries if a.note), tries[0])
    chosen.announce(lambda line: typer.echo(line, err=True))
    return chosen.spec


def _check_mix(mix: str) -> None:
    if mix not in ("realistic", "long"):
        raise PadlessError(f"unknown mix {mix!r}; choose realistic or long")


def _stop_servers_on_sigterm() -> None:
    """A SIGTERM to the benchmark (a timeout, a CI job cancelled) exits through its ``finally`` blocks, which stop the
    servers it started; Python's default would end the process there and leave a ``padless serve --ray`` and its
    Ray cluster running (seen when ``timeout`` stopped a ``bench ray``)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@bench_app.command("serve")
def bench_serve(
    ctx: typer.Context,
    p99_limit_ms: P99Opt = 200.0,
    duration: StepOpt = 8.0,
    budget: BudgetOpt = 240.0,
    min_requests: MinRequestsOpt = 400,
    backend: Annotated[str, typer.Option(envvar="PADLESS_BENCH_BACKENDS", help="Comma-separated backends, one padless server each (auto: what `padless serve` runs; torch is named padless).")] = "auto,torch",
    task: Annotated[str, typer.Option(envvar="PADLESS_TASK", help="auto (the model folder's), classify or embed; embed compares with a FastAPI server calling SentenceTransformer.encode per request, at /embed ('default' with embed: all-MiniLM-L6-v2).")] = "auto",
    inputs_per_request: Annotated[int, typer.Option(envvar="PADLESS_BENCH_INPUTS_PER_REQUEST", help="Texts in each request.")] = 1,
    tuned: TunedOpt = None,
) -> None:
    """padless serve vs a FastAPI server calling transformers.pipeline (or, for an embedding model,
    SentenceTransformer.encode) per request, on one machine, one run.

    Takes --model, --mix, -n, --seed and --out-dir from `padless bench` (before `serve`). Each padless server
    reads its serving settings from --tuned, or from the file beside the model, as `padless serve` does."""
    quiet_libraries()
    from rich.console import Console

    from padless import tuned as tuned_file
    from padless.bench.serve import run_serve_bench
    from padless.tasks import model_path, resolve_task

    opts = ctx.obj
    _stop_servers_on_sigterm()
    _check_mix(opts["mix"])
    if inputs_per_request < 1:
        raise PadlessError("--inputs-per-request must be at least 1")
    server_args = None
    if tuned is not None:  # checked here, once, rather than by every server as it starts
        if not Path(tuned).is_file():
            raise ConfigError(f"--tuned {tuned}: no such file")
        tuned_file.read(Path(tuned))
        server_args = ["--tuned", str(Path(tuned).resolve())]
    task = resolve_task(opts["model"], task)
    if task == "classify":
        ensure_default(opts["model"])
    path = str(model_path(opts["model"], task))
    console = Console(stderr=True)
    result = run_serve_bench(path, mix=opts["mix"], n=opts["n"], seed=opts["seed"], p99_limit_ms=p99_limit_ms,
                             duration=duration, capacity_budget_s=budget, out_dir=opts["out_dir"], log=console.print,
                             backends=[b.strip() for b in backend.split(",") if b.strip()], min_requests=min_requests,
                             task=task, inputs_per_request=inputs_per_request, server_args=server_args)
    typer.echo(json.dumps({"ratios": result["ratios"], "offline_texts_per_s": result["offline_texts_per_s"],
                           "capacity_rps": {k: v["capacity_rps"] for k, v in result["servers"].items()}}, indent=2))
    typer.echo(f"wrote {opts['out_dir'] / 'bench-serve.json'}")


@bench_app.command("ray")
def bench_ray(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(envvar="PADLESS_BENCH_RAY_ROWS", help="Rows of the offline file (realistic mix).")] = 20000,
    workers: Annotated[int, typer.Option(envvar="PADLESS_BENCH_RAY_WORKERS", help="Ray workers (one thread each); local padless gets as many threads.")] = 2,
    backend: Annotated[str, typer.Option(envvar="PADLESS_BENCH_RAY_BACKEND", help="padless backend in every run (auto: an optimize folder's selected variant).")] = "auto",
    offline: Annotated[bool, typer.Option("--offline/--no-offline", envvar="PADLESS_BENCH_RAY_OFFLINE", help="Run the offline comparison.")] = True,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", envvar="PADLESS_BENCH_RAY_BASELINE", help="Include the Ray docs' map_batches + pipeline baseline (the slowest part).")] = True,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", envvar="PADLESS_BENCH_RAY_SERVE", help="Run the length-tier serving comparison (-n texts, mix realistic-512).")] = True,
    long_threshold: Annotated[int, typer.Option(envvar="PADLESS_LONG_THRESHOLD", help="Tokens above which a request goes to the long tier.")] = 128,
    p99_limit_ms: P99Opt = 200.0,
    duration: StepOpt = 8.0,
    budget: BudgetOpt = 180.0,
    min_requests: MinRequestsOpt = 300,
    compare_requests: Annotated[int, typer.Option(envvar="PADLESS_BENCH_COMPARE_REQUESTS", help="Requests per same-load step of the tier comparison (its short p99 needs 1,000+ short requests).")] = 1500,
    ray_proxy: Annotated[str, typer.Option(envvar="PADLESS_RAY_PROXY", help="Serve's front door in both serving configurations (as padless serve --ray --ray-proxy).")] = "auto",
    rounds: Annotated[int, typer.Option(envvar="PADLESS_BENCH_RAY_ROUNDS", help="Rounds of the same-load tier comparison (ABBA order, requests pooled over rounds).")] = 2,
) -> None:
    """padless on Ray vs local padless and vs Ray's own map_batches + pipeline recipe; serving with and without
    length tiers. Takes --model, -n, --seed and --out-dir from `padless bench` (before `ray`)."""
    quiet_libraries()
    from rich.console import Console

    from padless import loader
    from padless.bench.ray import run_ray_bench

    opts = ctx.obj
    _stop_servers_on_sigterm()
    if rows < 1 or workers < 1 or compare_requests < 1 or rounds < 1:
        raise PadlessError("--rows, --workers, --compare-requests and --rounds must be positive")
    if serve and workers < 2:
        raise PadlessError("--serve compares one pool with tiers and needs --workers 2 or more; or pass --no-serve")
    ensure_default(opts["model"])
    console = Console(stderr=True)
    result = run_ray_bench(opts["model"], str(loader.resolve(opts["model"])), backend=backend, rows=rows,
                           n=opts["n"], workers=workers, seed=opts["seed"], out_dir=opts["out_dir"], offline=offline,
                           baseline=baseline, serve=serve, long_threshold=long_threshold, p99_limit_ms=p99_limit_ms,
                           duration=duration, budget_s=budget, min_requests=min_requests,
                           compare_requests=compare_requests, ray_proxy=ray_proxy, rounds=rounds,
                           say=console.print)
    typer.echo(json.dumps({part: result[part]["ratios"] for part in ("offline", "serving") if part in result},
                          indent=2))
    typer.echo(f"wrote {opts['out_dir'] / 'bench-ray.json'}")


@bench_app.command("embed")
def bench_embed(
    ctx: typer.Context,
    rounds: Annotated[int, typer.Option(envvar="PADLESS_BENCH_ROUNDS", help="Interleaved rounds; medians reported.")] = 3,
    backend: Annotated[str, typer.Option(envvar="PADLESS_BENCH_BACKENDS", help="Comma-separated backends for padless configs (padless = torch fp32, always run; others appear as padless-<backend>, e.g. torch,onnx,openvino).")] = "torch",
    classify: Annotated[bool, typer.Option("--classify/--no-classify", envvar="PADLESS_BENCH_CLASSIFY", help="Add padless-classify: padless's Classifier (torch fp32) on the same encoder with a 2-label head, to show what embedding costs over classifying.")] = False,
) -> None:
    """padless's Embedder vs SentenceTransformer.encode (batch_size 32 and 128), in one process, interleaved.

    Takes --model ('default': all-MiniLM-L6-v2, the Embedder's default), --mix, -n, --seed and --out-dir from
    `padless bench` (before `embed`); writes bench-embed.json there."""
    quiet_libraries()
    from rich.console import Console

    from padless.bench.embed import OUTPUT, render_table, run_embed_bench

    opts = ctx.obj
    _check_mix(opts["mix"])
    console = Console(stderr=True)
    result = run_embed_bench(opts["model"], mix=opts["mix"], n=opts["n"], rounds=rounds, seed=opts["seed"],
                             backends=[b.strip() for b in backend.split(",") if b.strip()], classify=classify,
                             out_dir=opts["out_dir"], command=["padless", *sys.argv[1:]], say=console.print)
    Console(width=max(Console().width, 120)).print(render_table(result))
    typer.echo(f"wrote {opts['out_dir'] / OUTPUT}")


def loadtest(
    url: Annotated[str, typer.Argument(help="Server root, e.g. http://127.0.0.1:8080 (loopback only).")],
    rate: Annotated[float, typer.Option(envvar="PADLESS_LOAD_RATE", help="Requests per second (Poisson arrivals).")] = 50.0,
    duration: Annotated[float, typer.Option(envvar="PADLESS_LOAD_DURATION", help="Seconds of load.")] = 30.0,
    mix: Annotated[str, typer.Option(envvar="PADLESS_LOAD_MIX", help="realistic or long.")] = "realistic",
    inputs_per_request: Annotated[int, typer.Option(envvar="PADLESS_LOAD_INPUTS", help="Texts per request.")] = 1,
    timeout: Annotated[float, typer.Option(envvar="PADLESS_LOAD_TIMEOUT", help="Per-request timeout (s).")] = 30.0,
    seed: Annotated[int, typer.Option(envvar="PADLESS_LOAD_SEED", help="Workload and arrival seed.")] = 0,
    api_key: Annotated[str | None, typer.Option(envvar="PADLESS_API_KEY", help="Sent as a Bearer token.", show_default=False)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report here.")] = None,
) -> None:
    """Open-loop load against a padless (or compatible) server; latency measured from the scheduled send time."""
    import asyncio

    from rich.console import Console
    from transformers import AutoTokenizer

    from padless.bench.loadtest import check_loopback, render_report, run_load
    from padless.bench.workload import make_workload
    from padless.loader import base_encoder_path

    _check_mix(mix)
    try:
        check_loopback(url)
    except ValueError as err:
        raise PadlessError(str(err)) from None
    quiet_libraries()
    texts = make_workload(AutoTokenizer.from_pretrained(str(base_encoder_path())), mix, 2000, seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    report = asyncio.run(run_load(url, rate=rate, duration=duration, texts=texts,
                                  inputs_per_request=inputs_per_request, timeout=timeout, seed=seed, headers=headers))
    Console().print(render_report(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``bench`` (with ``serve`` and ``ray``) and ``loadtest`` to the ``padless`` app."""
    app.add_typer(bench_app, name="bench")
    app.command()(loadtest)
