"""The ``padless`` command line. Every option has a flag, a ``PADLESS_*`` environment variable and a visible default.

Errors padless expects (bad file, missing column, model without a classification head, impossible options) print
one line, ``error: …``, and exit 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from padless.cli import bench as bench_commands  # `bench` and `loadtest`, registered below
from padless.cli import compress as compress_commands  # `prune` and `distill`, registered below
from padless.cli import embed as embed_commands  # `embed`, registered below
from padless.cli import optimize as optimize_commands  # `optimize` and `verify`, registered below
from padless.cli import tune as tune_commands  # `tune`, registered below
from padless.cli.common import apply_tuned, build_default_with_progress, ensure_default, quiet_libraries
from padless.cli.options import (
    BackendOpt,
    MaxCharsOpt,
    MaxLenOpt,
    ModelOpt,
    PairTruncOpt,
    RayAddressOpt,
    RayDataOpt,
    RowsOpt,
    ServeBackendOpt,
    StreamsOpt,
    ThreadsOpt,
    TokensOpt,
    TunedOpt,
    WidthOpt,
    WorkersOpt,
)
from padless.config import (
    LONG_PROMOTE_MS,
    SERVING_STREAMS,
    BatchConfig,
    EngineSpec,
    ModelConfig,
    QueueConfig,
    ServerConfig,
)
from padless.errors import PadlessError
from padless.faults import crash_point

# rich_markup_mode=None: help texts say "[default: …]", which rich markup would swallow as a style tag.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Run Hugging Face text classifiers on mixed-length text without padding waste.")
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build and inspect models.")
app.add_typer(models_app, name="models")


def _load_classifier(engine: EngineSpec) -> object:
    """Validate the engine first (one clear line for impossible settings), build the default model if needed, load."""
    engine.validate()
    quiet_libraries()
    from padless.engine import Classifier

    ensure_default(engine.model.model)
    return Classifier.from_spec(engine)


def _load_served(engine: EngineSpec) -> object:
    """The engine ``padless serve`` runs: its task resolved (a classifier, or an embedder whose graph leaves
    normalisation to the request), ``auto`` resolved by :func:`padless.server.run.serving_backend`, and
    :data:`padless.config.SERVING_STREAMS`."""
    engine = engine.replace(streams=SERVING_STREAMS)
    engine.validate()
    quiet_libraries()
    from padless.tasks import load_engine, model_path, resolve_task

    task = resolve_task(engine.model.model, engine.model.task)
    if task == "classify":
        ensure_default(engine.model.model)
    engine = engine.replace(task=task)
    if engine.model.backend == "auto":
        from padless.server.run import serving_backend

        path = str(model_path(engine.model.model, task))
        engine = engine.replace(backend=serving_backend(path, "auto", task))
    return load_engine(engine, serving=True)


@app.command()
def classify(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="Input file (CSV, TSV, JSONL, Parquet, text) or - for stdin.")],
    output: Annotated[str, typer.Option("--output", "-o", envvar="PADLESS_OUTPUT", help="Output file, or - for stdout.")] = "-",
    column: Annotated[str, typer.Option("--column", "-c", envvar="PADLESS_COLUMN", help="Text column or field.")] = "text",
    pair_column: Annotated[str | None, typer.Option(envvar="PADLESS_PAIR_COLUMN", help="Second text of a sentence pair (NLI hypothesis, passage): each row is scored as the pair (--column, --pair-column) [default: none, single texts].", show_default=False)] = None,
    pair_truncation: PairTruncOpt = ModelConfig.pair_truncation,
    input_format: Annotated[str | None, typer.Option("--input-format", envvar="PADLESS_INPUT_FORMAT",
                                                        help="csv|tsv|jsonl|parquet|txt [default: from the name; txt for stdin]")] = None,
    format: Annotated[str | None, typer.Option("--format", "-f", envvar="PADLESS_FORMAT",
                                                  help="Output format csv|tsv|jsonl|parquet [default: from -o; jsonl for stdout]")] = None,
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
    truncate: Annotated[bool, typer.Option("--truncate/--no-truncate", envvar="PADLESS_TRUNCATE",
                                           help="Cut over-long input, or report it as a row error.")] = True,
    max_chars: MaxCharsOpt = ModelConfig.max_chars,
    max_batch_tokens: TokensOpt = BatchConfig.max_batch_tokens,
    max_batch_size: RowsOpt = BatchConfig.max_batch_size,
    width_multiple: WidthOpt = BatchConfig.width_multiple,
    chunk_rows: Annotated[int | None, typer.Option(envvar="PADLESS_CHUNK_ROWS", help=f"Rows read, sorted and committed together; with --ray, rows per worker call [default: {BatchConfig.chunk_rows}; {BatchConfig.ray_chunk_rows} with --ray]", show_default=False)] = None,
    top_k: Annotated[int, typer.Option(envvar="PADLESS_TOP_K", help="Labels kept per row (0 = all); >1 adds a 'scores' column.")] = 1,
    raw_scores: Annotated[bool, typer.Option("--raw-scores", envvar="PADLESS_RAW_SCORES", help="Logits instead of probabilities.")] = False,
    threads: ThreadsOpt = 0,
    streams: StreamsOpt = ModelConfig.streams,
    output_prefix: Annotated[str, typer.Option(envvar="PADLESS_OUTPUT_PREFIX", help="Prefix for the added columns.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run of the same command.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar [default: on a terminal].")] = None,
    use_ray: RayDataOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 0,
    tuned: TunedOpt = None,
) -> None:
    """Classify every row of a file; keeps the input's columns and adds label, score and error."""
    engine = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                           max_chars=max_chars, threads=threads, streams=streams, pair_truncation=pair_truncation,
                           max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                           width_multiple=width_multiple)
    # A tuned thread count was measured for one process: --ray plans each worker's threads from the user's own.
    engine, _ = apply_tuned(ctx, engine, section="offline", tuned=tuned, keep=("threads",) if use_ray else ())
    if use_ray:  # imported here: without --ray the CLI never imports Ray
        from padless.cli.ray_job import run_ray_offline

        run_ray_offline(input=input, output=output, address=ray_address, workers=workers, threads=threads,
                        chunk_rows=BatchConfig.ray_chunk_rows if chunk_rows is None else chunk_rows,
                        input_format=input_format, output_format=format, resume=resume, overwrite=overwrite,
                        progress=progress, engine=engine, column=column, pair_column=pair_column, top_k=top_k,
                        raw_scores=raw_scores, output_prefix=output_prefix)
        return
    if ray_address or workers:
        raise PadlessError("--ray-address and --workers need --ray")
    from padless.fileio import FORMATS, detect_format
    from padless.job import JobSpec

    in_fmt = input_format or ("txt" if input == "-" else detect_format(input, None))
    detect_format(input, in_fmt)
    out_fmt = format or ("jsonl" if output == "-" else detect_format(output, None))
    if out_fmt not in FORMATS or out_fmt == "txt":
        raise PadlessError(f"output format must be csv, tsv, jsonl or parquet, not {out_fmt!r}")
    if out_fmt == "parquet" and output == "-":
        raise PadlessError("Parquet cannot be written to stdout; pass -o FILE.parquet")
    chunk_rows = BatchConfig.chunk_rows if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise PadlessError("--chunk-rows must be positive")
    spec = JobSpec(input=input, input_format=in_fmt, column=column, output=output, output_format=out_fmt,
                   chunk_rows=chunk_rows, top_k=top_k, raw_scores=raw_scores, output_prefix=output_prefix,
                   pair_column=pair_column, resume=resume, overwrite=overwrite)
    if input != "-" and not Path(input).is_file():
        raise PadlessError(f"cannot read {input}: no such file")
    crash_point("before-model-load")  # a crash-test hook (padless.faults); does nothing unless asked to
    clf = _load_classifier(engine)
    from padless.cli.progress import run_with_progress

    summary = run_with_progress(spec, clf, show=sys.stderr.isatty() if progress is None else progress)
    if summary.rows_in != summary.rows_scored + summary.rows_errored:
        raise PadlessError("internal accounting error: rows in != scored + errored")


embed_commands.register(app)  # `padless embed`, listed after classify


@models_app.command("build")
def models_build(
    name: Annotated[str, typer.Argument(help="Only 'default' can be built.")] = "default",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
) -> None:
    """Fine-tune and cache padless's embedded default sentiment model (~10 min on 2 cores)."""
    quiet_libraries()
    from padless import loader

    if name != loader.DEFAULT_NAME:
        raise PadlessError(f"only the 'default' model can be built, not {name!r}")
    card_path = loader.default_model_dir() / "padless_card.json"
    if card_path.is_file() and not force:
        card = json.loads(card_path.read_text())
        typer.echo(f"already built: {loader.default_model_dir()} (held-out accuracy {card['held_out_accuracy']:.2%}); "
                   "--force rebuilds")
        return
    build_default_with_progress()
    typer.echo(str(loader.default_model_dir()))


@models_app.command("path")
def models_path(model: ModelOpt = "default") -> None:
    """Print the local folder a model name resolves to (without building or downloading)."""
    from padless import loader

    if model == loader.DEFAULT_NAME:
        typer.echo(str(loader.default_model_dir()))
    else:
        typer.echo(str(loader.resolve(model)))


@app.command("evaluate")
def evaluate_cmd(
    eval_set: Annotated[str, typer.Option("--eval", envvar="PADLESS_EVAL", help="vader-movies-test, vader-amazon, vader-tweets, vader-nyt, vader-movies-train")] = "vader-movies-test",
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_batch_tokens: TokensOpt = BatchConfig.max_batch_tokens,
    max_batch_size: RowsOpt = BatchConfig.max_batch_size,
    threads: ThreadsOpt = 0,
) -> None:
    """Accuracy and macro-F1 of a model on a named labelled set (JSON on stdout)."""
    from padless import datasets
    from padless.evaluate import evaluate

    data = datasets.load(eval_set)
    clf = _load_classifier(EngineSpec.of(model=model, backend=backend, threads=threads,
                                         max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size))
    metrics = evaluate(clf, data)
    metrics.pop("predicted")
    typer.echo(json.dumps(metrics))


# `padless bench …` (a group, listed after the commands) and `padless loadtest` (listed here).
bench_commands.register(app)


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", envvar="PADLESS_MODEL", help="'default' (padless's classifier; with --task embed all-MiniLM-L6-v2), a local Hugging Face or sentence-transformers folder, or a Hub id.")] = "default",
    task: Annotated[str, typer.Option(envvar="PADLESS_TASK", help="auto (the folder's: a sentence-transformers or head-less folder embeds), classify or embed.")] = ModelConfig.task,
    backend: ServeBackendOpt = "auto",
    host: Annotated[str, typer.Option(envvar="PADLESS_HOST", help="Bind address (loopback unless you say otherwise).")] = ServerConfig.host,
    port: Annotated[int, typer.Option(envvar="PADLESS_PORT", help="TCP port.")] = ServerConfig.port,
    max_length: MaxLenOpt = None,
    max_chars: MaxCharsOpt = ModelConfig.max_chars,
    max_batch_tokens: TokensOpt = BatchConfig.max_batch_tokens,
    max_batch_size: RowsOpt = BatchConfig.max_batch_size,
    width_multiple: WidthOpt = BatchConfig.width_multiple,
    threads: ThreadsOpt = 0,
    pair_truncation: PairTruncOpt = ModelConfig.pair_truncation,
    max_wait_ms: Annotated[float, typer.Option(envvar="PADLESS_MAX_WAIT_MS", help="Longest wait to fill a batch when lightly loaded.")] = QueueConfig.max_wait_ms,
    max_queue_inputs: Annotated[int, typer.Option(envvar="PADLESS_MAX_QUEUE_INPUTS", help="Admitted inputs before 429.")] = QueueConfig.max_queue_inputs,
    max_queue_tokens: Annotated[int, typer.Option(envvar="PADLESS_MAX_QUEUE_TOKENS", help="Admitted tokens before 429.")] = QueueConfig.max_queue_tokens,
    lookahead: Annotated[int, typer.Option(envvar="PADLESS_LOOKAHEAD", help="Queued items the batch former considers.")] = QueueConfig.lookahead,
    forward_timeout: Annotated[float, typer.Option(envvar="PADLESS_FORWARD_TIMEOUT", help="Seconds before a stuck forward pass fails its batch.")] = QueueConfig.forward_timeout_s,
    request_timeout: Annotated[float, typer.Option(envvar="PADLESS_REQUEST_TIMEOUT", help="Per-request deadline (s); X-Request-Timeout may shorten it.")] = ServerConfig.request_timeout_s,
    drain_timeout: Annotated[float, typer.Option(envvar="PADLESS_DRAIN_TIMEOUT", help="Seconds to finish accepted work on SIGTERM.")] = ServerConfig.drain_timeout_s,
    keep_alive: Annotated[int, typer.Option(envvar="PADLESS_KEEP_ALIVE", help="Seconds an idle HTTP connection stays open (above clients' pool expiry, so reuse never races the close).")] = ServerConfig.keep_alive_s,
    max_inputs_per_request: Annotated[int, typer.Option(envvar="PADLESS_MAX_INPUTS_PER_REQUEST", help="Inputs per request before 422.")] = ServerConfig.max_inputs_per_request,
    max_body_bytes: Annotated[int, typer.Option(envvar="PADLESS_MAX_BODY_BYTES", help="Request body limit (413 beyond).")] = ServerConfig.max_body_bytes,
    cache_size: Annotated[int, typer.Option(envvar="PADLESS_CACHE_SIZE", help="Result cache entries; 0 disables.")] = ServerConfig.cache_size,
    api_key: Annotated[str | None, typer.Option(envvar="PADLESS_API_KEY", help="Require this key (Bearer or X-API-Key) on every route but /health.", show_default=False)] = None,
    cors_origins: Annotated[str, typer.Option(envvar="PADLESS_CORS_ORIGINS", help="Comma-separated allowed origins; empty = CORS closed.")] = "",
    log_level: Annotated[str, typer.Option(envvar="PADLESS_LOG_LEVEL", help="uvicorn log level.")] = "info",
    ray: Annotated[bool, typer.Option("--ray", envvar="PADLESS_RAY", help="Serve on Ray Serve: replicas and length tiers, the same HTTP API.")] = False,
    ray_address: Annotated[str | None, typer.Option(envvar="PADLESS_RAY_ADDRESS", help="Ray cluster to join ('auto': the running one) [default: start a local one].", show_default=False)] = None,
    replicas: Annotated[int, typer.Option(envvar="PADLESS_REPLICAS", help="With --ray: replicas of the (short) tier.")] = 1,
    long_threshold: Annotated[int, typer.Option(envvar="PADLESS_LONG_THRESHOLD", help="With --ray: inputs over this many tokens go to the long tier; 0 = one tier.")] = 0,
    long_replicas: Annotated[int, typer.Option(envvar="PADLESS_LONG_REPLICAS", help="With --ray: replicas of the long tier.")] = 1,
    long_model: Annotated[str | None, typer.Option(envvar="PADLESS_LONG_MODEL", help="With --ray: the long tier's model (same tokenizer and labels) [default: --model].", show_default=False)] = None,
    long_backend: Annotated[str | None, typer.Option(envvar="PADLESS_LONG_BACKEND", help="With --ray: the long tier's backend [default: --backend].", show_default=False)] = None,
    long_threads: Annotated[int, typer.Option(envvar="PADLESS_LONG_THREADS", help="With --ray: threads per long-tier replica; 0 = every CPU of a node (long batches use the cores the short tier leaves idle).")] = 0,
    long_promote_ms: Annotated[int, typer.Option(envvar="PADLESS_LONG_PROMOTE_MS", help="With --ray, when the long tier borrows the short tier's cores at a lower CPU priority: a long request this old (ms) lifts its replica to normal priority until none is left; 0 = never.")] = LONG_PROMOTE_MS,
    ray_proxy: Annotated[str, typer.Option(envvar="PADLESS_RAY_PROXY", help="With --ray: Serve's front door: haproxy (Ray Serve's HAProxy in front of the ingress replicas), python (Serve's proxy actor), or auto = haproxy on a cluster padless starts, the cluster's own setting on a joined one.")] = "auto",
    tuned: TunedOpt = None,
) -> None:
    """Serve a classifier or an embedding model over HTTP (TEI's and OpenAI's routes) with continuous token-budget
    batching."""
    server_cfg = ServerConfig(host=host, port=port, api_key=api_key, cors_origins=cors_origins,
                              max_body_bytes=max_body_bytes, max_inputs_per_request=max_inputs_per_request,
                              request_timeout_s=request_timeout, drain_timeout_s=drain_timeout, cache_size=cache_size,
                              keep_alive_s=keep_alive)
    queue_cfg = QueueConfig(max_wait_ms=max_wait_ms, max_queue_inputs=max_queue_inputs,
                            max_queue_tokens=max_queue_tokens, lookahead=lookahead, forward_timeout_s=forward_timeout)
    server_cfg.validate()
    engine = EngineSpec.of(model=model, task=task, backend=backend, max_length=max_length, max_chars=max_chars,
                           threads=threads, pair_truncation=pair_truncation, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, width_multiple=width_multiple)
    engine, applied_queue = apply_tuned(ctx, engine, section="serving", tuned=tuned, queue=queue_cfg)
    queue_cfg = applied_queue or queue_cfg
    queue_cfg.validate(engine.batch)
    if ray:  # imported here: Ray is an optional extra, and nothing else in padless may import it
        from padless.cli.ray_serve import run_ray_serve

        run_ray_serve(engine=engine, queue=queue_cfg, server=server_cfg, address=ray_address, replicas=replicas,
                      long_threshold=long_threshold, long_replicas=long_replicas, long_model=long_model,
                      long_backend=long_backend, long_threads=long_threads, long_promote_ms=long_promote_ms,
                      proxy=ray_proxy, log_level=log_level)
        return
    if (ray_address or replicas != 1 or long_threshold or long_replicas != 1 or long_model or long_backend
            or long_threads or long_promote_ms != LONG_PROMOTE_MS or ray_proxy != "auto"):
        raise PadlessError("--ray-address, --replicas, --long-threshold, --long-replicas, --long-model, "
                           "--long-backend, --long-threads, --long-promote-ms and --ray-proxy need --ray")
    served = _load_served(engine)
    from padless.server.run import serve as run_server

    run_server(served, server_cfg, queue_cfg, log_level=log_level)  # type: ignore[arg-type]


# After the commands above, so that `padless --help` lists them first.
optimize_commands.register(app)
compress_commands.register(app)
tune_commands.register(app)


def main() -> None:
    """Console entry point: expected errors become one line on stderr and exit code 2."""
    try:
        app()
    except PadlessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `padless classify … | head` closing the pipe early is not an error
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
