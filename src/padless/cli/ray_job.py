"""``padless classify --ray`` and ``padless embed --ray``: the CLI side of a Ray Data offline job
(:mod:`padless.ray.offline_job`).

Imported only inside the ``--ray`` branch of those commands, so the CLI never imports Ray otherwise. Shows a
progress bar on a terminal (rows/s, tokens/s, padding %, ETA) and prints one JSON summary line when stderr is not
a terminal, as local mode does; the summary adds the workers, their threads and each worker's throughput.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from typing import Any

from padless.config import EngineSpec
from padless.errors import InputError


def run_ray_offline(*, input: str, output: str, address: str | None, workers: int, threads: int, chunk_rows: int,
                    input_format: str | None, output_format: str | None, resume: bool, overwrite: bool,
                    progress: bool | None, engine: EngineSpec, **options: Any) -> Any:
    """Check the options, join or start the cluster, run the job, report. ``engine``: the workers' engine (whole);
    ``options``: :class:`ScoreOptions`'s other fields (``embed`` set: an embed job)."""
    if input == "-":
        raise InputError("--ray reads files (a file, a folder or a glob), not stdin")
    if output == "-":
        raise InputError("--ray writes a Parquet dataset folder; pass -o FOLDER")
    if output_format not in (None, "parquet"):
        raise InputError(f"--ray writes Parquet, not {output_format}; drop --format or pass --format parquet")
    if chunk_rows < 1:
        raise InputError("--chunk-rows must be positive")
    if workers < 0 or threads < 0:
        raise InputError("--workers and --threads must be 0 (automatic) or positive")
    from padless.cli.common import ensure_default
    from padless.ray.data import ScoreOptions

    opts = ScoreOptions(engine=engine, **options)
    opts.validate()  # before the default model is built or Ray starts
    from padless import loader

    if opts.embed is None:
        ensure_default(engine.model.model)
        path = loader.resolve(engine.model.model).resolve()
        # A folder without a classification head is refused here, not on every worker. The driver never runs the
        # model, so it reads config.json itself rather than import transformers (and torch), which would delay Ray.
        loader.check_head(path)
        opts = replace(opts, engine=engine.replace(model=str(path)))
    else:
        from padless.ray.data import check_embed, model_folder

        opts = replace(opts, engine=engine.replace(model=str(model_folder(opts))))
        check_embed(opts)  # its config and tokenizer, no weights: a bad option is one line before Ray starts
    from padless.ray.cluster import import_ray, init_ray
    from padless.ray.offline_job import RayJobSpec, run_ray_job

    ray = import_ray()
    connected_here = not ray.is_initialized()  # a caller's own connection (a test's, a notebook's) stays open
    init_ray(address)
    spec = RayJobSpec(input=input, output=output, input_format=input_format,
                      options=opts, workers=workers,
                      threads=threads, batch_rows=chunk_rows, resume=resume, overwrite=overwrite)
    show = sys.stderr.isatty() if progress is None else progress
    verb = "classifying" if opts.embed is None else "embedding"
    try:
        summary = _with_bar(spec, run_ray_job, verb) if show else run_ray_job(spec)
    finally:
        if connected_here:
            # Now rather than in Ray's exit hook, which first sleeps 0.5 s for log lines. A joined cluster is only
            # disconnected; a local one started here is stopped.
            ray.shutdown()
    report = asdict(summary)
    if summary.already_complete:
        print(f"{output} is already complete; nothing to do", file=sys.stderr)
    if not show:
        print(json.dumps({"summary": report}), file=sys.stderr)
    elif not summary.already_complete:
        rates = ", ".join(f"{w['rows_per_s']:,.0f}" for w in summary.per_worker)
        done = "scored" if opts.embed is None else "embedded"
        print(f"{summary.rows_in:,} rows in = {summary.rows_scored:,} {done} + {summary.rows_errored:,} errored · "
              f"padding {summary.padding_fraction:.1%} · {summary.workers} workers × {summary.threads} threads "
              f"({rates} rows/s each) · {summary.seconds:.1f}s → {output}", file=sys.stderr)
    if summary.rows_in != summary.rows_scored + summary.rows_errored:
        raise InputError("internal accounting error: rows in != scored + errored")
    return summary


def _with_bar(spec: Any, run: Any, verb: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    console = Console(stderr=True, soft_wrap=True)
    columns = [TextColumn(f"{verb} on Ray"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.completed:,.0f} rows · {task.fields[rate]} · {task.fields[tokens]} · "
                          "padding {task.fields[padding]}"), TimeRemainingColumn()]
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("rows", total=_local_total(spec), rate="– rows/s", tokens="– tok/s", padding="–")

        def on_progress(snapshot: dict[str, list[float]]) -> None:
            rows, real, padded = (sum(v[i] for v in snapshot.values()) for i in (0, 2, 3))
            elapsed = max(1e-9, time.perf_counter() - started)
            bar.update(task, completed=rows, rate=f"{rows / elapsed:,.0f} rows/s",
                       tokens=f"{real / elapsed:,.0f} tok/s",
                       padding=f"{1 - real / padded:.1%}" if padded else "–")

        return run(spec, on_progress=on_progress)


def _local_total(spec: Any) -> int | None:
    """Rows to do, for the ETA, when the input is local (a newline count, as local mode's bar); else unknown."""
    from padless.fileio import count_rows
    from padless.ray.offline_io import expand_inputs, input_format

    try:
        display, _, fs = expand_inputs(spec.input)
        import pyarrow.fs as pafs

        if not isinstance(fs, pafs.LocalFileSystem):
            return None
        fmt = input_format(display, spec.input_format)
        return sum(count_rows(p, fmt) or 0 for p in display)
    except Exception:  # noqa: BLE001 - the total is only for the ETA; the job reports real problems itself
        return None
