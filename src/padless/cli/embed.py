"""``padless embed``: one embedding per row of a file, as a resumable job (the same job code as ``padless classify``,
and with ``--ray`` the same Ray Data job).

Registered on the app by :func:`register`; imports the embedder only when it runs, so ``padless --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from padless.cli.common import apply_tuned, quiet_libraries
from padless.cli.options import (
    BackendOpt,
    MaxCharsOpt,
    MaxLenOpt,
    RayAddressOpt,
    RayDataOpt,
    RowsOpt,
    StreamsOpt,
    ThreadsOpt,
    TokensOpt,
    TunedOpt,
    WidthOpt,
    WorkersOpt,
)
from padless.config import BatchConfig, EngineSpec, ModelConfig
from padless.errors import PadlessError
from padless.faults import crash_point

# Kept in step with padless.loader.sentence.POOLINGS (importing it here would load transformers for --help).
POOLINGS = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")
LONG_MODES = ("truncate", "chunk")
VECTOR_FORMATS = ("parquet", "jsonl", "npy")


def embed(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="Input file (CSV, TSV, JSONL, Parquet, text) or - for stdin.")],
    output: Annotated[str, typer.Option("--output", "-o", envvar="PADLESS_OUTPUT", help="Output file (.parquet, .jsonl or .npy: a float32 rows × dimension array, NaN rows for errors), or - for stdout (JSONL).")] = "-",
    column: Annotated[str, typer.Option("--column", "-c", envvar="PADLESS_COLUMN", help="Text column or field.")] = "text",
    input_format: Annotated[str | None, typer.Option("--input-format", envvar="PADLESS_INPUT_FORMAT",
                                                        help="csv|tsv|jsonl|parquet|txt [default: from the name; txt for stdin]")] = None,
    format: Annotated[str | None, typer.Option("--format", "-f", envvar="PADLESS_FORMAT",
                                                  help="Output format parquet|jsonl|npy [default: from -o; jsonl for stdout]")] = None,
    model: Annotated[str, typer.Option("--model", "-m", envvar="PADLESS_MODEL", help="'default' (all-MiniLM-L6-v2, 384 dimensions), a local sentence-transformers or Hugging Face encoder folder, or a Hub id.")] = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
    truncate: Annotated[bool, typer.Option("--truncate/--no-truncate", envvar="PADLESS_TRUNCATE",
                                           help="With --long truncate: cut over-long input, or report it as a row error.")] = True,
    max_chars: MaxCharsOpt = ModelConfig.max_chars,
    max_batch_tokens: TokensOpt = BatchConfig.max_batch_tokens,
    max_batch_size: RowsOpt = BatchConfig.max_batch_size,
    width_multiple: WidthOpt = BatchConfig.width_multiple,
    chunk_rows: Annotated[int | None, typer.Option(envvar="PADLESS_CHUNK_ROWS", help=f"Rows read, sorted and committed together; with --ray, rows per worker call [default: {BatchConfig.chunk_rows}; {BatchConfig.ray_chunk_rows} with --ray]", show_default=False)] = None,
    threads: ThreadsOpt = 0,
    streams: StreamsOpt = ModelConfig.streams,
    pooling: Annotated[str | None, typer.Option(envvar="PADLESS_POOLING", help=f"How token vectors become one: {', '.join(POOLINGS)} [default: the model's; mean for a plain encoder].", show_default=False)] = None,
    normalize: Annotated[bool | None, typer.Option("--normalize/--no-normalize", envvar="PADLESS_NORMALIZE", help="L2-normalise each vector [default: the model's].", show_default=False)] = None,
    dimensions: Annotated[int | None, typer.Option(envvar="PADLESS_DIMENSIONS", help="Keep the first N dimensions (Matryoshka models), renormalised when normalising [default: all].", show_default=False)] = None,
    prompt_name: Annotated[str | None, typer.Option(envvar="PADLESS_PROMPT_NAME", help="A prompt the model's folder names (e.g. query) put before every text [default: none].", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(envvar="PADLESS_PROMPT", help="Text put before every text [default: none].", show_default=False)] = None,
    long: Annotated[str, typer.Option(envvar="PADLESS_LONG", help="An input over the token limit: truncate (cut it), or chunk (overlapping windows; the text's vector is the mean of theirs, normalised again when the model normalises).")] = "truncate",
    chunk_overlap: Annotated[int, typer.Option(envvar="PADLESS_CHUNK_OVERLAP", help="With --long chunk: tokens consecutive windows share.")] = 32,
    output_prefix: Annotated[str, typer.Option(envvar="PADLESS_OUTPUT_PREFIX", help="Prefix for the added columns.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run of the same command.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar [default: on a terminal].")] = None,
    use_ray: RayDataOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 0,
    tuned: TunedOpt = None,
) -> None:
    """Embed every row of a file; keeps the input's columns and adds embedding and error."""
    engine = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                           max_chars=max_chars, threads=threads, streams=streams, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, width_multiple=width_multiple)
    # A tuned thread count was measured for one process: --ray plans each worker's threads from the user's own.
    engine, _ = apply_tuned(ctx, engine, section="offline", tuned=tuned, task="embed",
                            keep=("threads",) if use_ray else ())
    chunk_rows = chunk_rows if chunk_rows is not None else (
        BatchConfig.ray_chunk_rows if use_ray else BatchConfig.chunk_rows)
    _check_embed_options(engine, chunk_rows=chunk_rows, pooling=pooling, dimensions=dimensions, long=long,
                         chunk_overlap=chunk_overlap, prompt=prompt, prompt_name=prompt_name)
    if use_ray:  # imported here: without --ray the CLI never imports Ray
        from padless.cli.ray_job import run_ray_offline
        from padless.embedder import EmbedOptions

        options = EmbedOptions(pooling=pooling, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name,
                               prompt=prompt, long=long, chunk_overlap=chunk_overlap)
        run_ray_offline(input=input, output=output, address=ray_address, workers=workers, threads=threads,
                        chunk_rows=chunk_rows, input_format=input_format, output_format=format, resume=resume,
                        overwrite=overwrite, progress=progress, engine=engine, column=column,
                        output_prefix=output_prefix, embed=options)
        return
    if ray_address or workers:
        raise PadlessError("--ray-address and --workers need --ray")
    from padless.fileio import detect_format
    from padless.job import JobSpec

    in_fmt = input_format or ("txt" if input == "-" else detect_format(input, None))
    detect_format(input, in_fmt)
    out_fmt = format or ("jsonl" if output == "-" else _output_format(output))
    if out_fmt not in VECTOR_FORMATS:
        raise PadlessError(f"padless embed cannot write {out_fmt} (a vector per row); use parquet, jsonl or npy")
    if out_fmt in ("parquet", "npy") and output == "-":
        raise PadlessError(f"{out_fmt} cannot be written to stdout; pass -o FILE.{out_fmt}")
    spec = JobSpec(input=input, input_format=in_fmt, column=column, output=output, output_format=out_fmt,
                   chunk_rows=chunk_rows, output_prefix=output_prefix, resume=resume, overwrite=overwrite)
    if input != "-" and not Path(input).is_file():
        raise PadlessError(f"cannot read {input}: no such file")
    crash_point("before-model-load")  # a crash-test hook (padless.faults); does nothing unless asked to
    quiet_libraries()  # 'default' is the all-MiniLM-L6-v2 package folder: nothing to build, unlike classify's
    from padless.embedder import Embedder
    from padless.job import EmbedTask

    embedder = Embedder.from_spec(engine, pooling=pooling, normalize=normalize, dimensions=dimensions,
                                  prompt_name=prompt_name, prompt=prompt, long=long, chunk_overlap=chunk_overlap)
    from padless.cli.progress import run_with_progress

    task = EmbedTask(embedder, output_prefix=output_prefix)
    summary = run_with_progress(spec, task, show=sys.stderr.isatty() if progress is None else progress,
                                verb="embedding", windows=long == "chunk")
    if summary.rows_in != summary.rows_scored + summary.rows_errored:
        raise PadlessError("internal accounting error: rows in != embedded + errored")


def _output_format(output: str) -> str:
    from padless.fileio import detect_format

    if Path(output).suffix.lower() == ".npy":
        return "npy"
    return detect_format(output, None)


def _check_embed_options(engine: EngineSpec, *, chunk_rows: int, pooling: str | None, dimensions: int | None,
                         long: str, chunk_overlap: int, prompt: str | None, prompt_name: str | None) -> None:
    """Every impossible combination padless can see without the model: one ``error: …`` line, before loading."""
    engine.validate()
    if chunk_rows < 1:
        raise PadlessError("--chunk-rows must be positive")
    if pooling is not None and pooling not in POOLINGS:
        raise PadlessError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if dimensions is not None and dimensions < 1:
        raise PadlessError(f"--dimensions must be at least 1, got {dimensions}")
    if long not in LONG_MODES:
        raise PadlessError(f"--long must be truncate or chunk, not {long!r}")
    if chunk_overlap < 0:
        raise PadlessError(f"--chunk-overlap must be 0 or more, got {chunk_overlap}")
    max_length = engine.model.max_length
    if long == "chunk" and max_length is not None and chunk_overlap >= max_length - 2:
        raise PadlessError(f"--chunk-overlap ({chunk_overlap}) must be below --max-length ({max_length}) less the "
                           "special tokens: each window must move forward")
    if prompt is not None and prompt_name is not None:
        raise PadlessError("pass --prompt or --prompt-name, not both")


def register(app: typer.Typer) -> None:
    """Add ``embed`` to the ``padless`` app."""
    app.command()(embed)
