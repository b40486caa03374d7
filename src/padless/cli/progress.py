"""Progress display for ``padless classify`` and ``padless embed``: a rich bar on a terminal, one JSON summary line when piped."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from padless.fileio import count_rows
from padless.job import JobSpec, JobSummary, run_job


def run_with_progress(spec: JobSpec, classifier: Any, *, show: bool, verb: str = "classifying",
                      windows: bool = False) -> JobSummary:
    """Run the job (``classifier``: a classifier, or any :class:`padless.job.RowTask`); show a live bar (rows/s,
    tokens/s, padding %, ETA) when ``show``; always print a summary (``windows``: with the stats' window count,
    for ``padless embed --long chunk``)."""
    console = Console(stderr=True, soft_wrap=True)  # a long path must not be wrapped mid-message
    started = time.perf_counter()
    if not show:
        summary = run_job(spec, classifier)
    else:
        total = count_rows(spec.input, spec.input_format) if spec.input != "-" else None
        columns = [TextColumn(verb), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.completed:,.0f} rows · {task.fields[rate]} · {task.fields[tokens]} · "
                              "padding {task.fields[padding]}"), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("rows", total=total, rate="– rows/s", tokens="– tok/s", padding="–")

            def on_chunk(rows: int, stats: Any) -> None:
                elapsed = max(1e-9, time.perf_counter() - started)
                bar.update(task, advance=rows, rate=f"{stats.rows / elapsed:,.0f} rows/s",
                           tokens=f"{stats.real_tokens / elapsed:,.0f} tok/s",
                           padding=f"{stats.padding_fraction:.1%}")

            summary = run_job(spec, classifier, on_chunk=on_chunk)
    stats = classifier.stats
    report = {**asdict(summary), "real_tokens": stats.real_tokens, "padding_fraction": round(stats.padding_fraction, 4),
              "batches": stats.batches}
    if windows:  # the rows the model ran: one per text, more for a text cut into windows
        report["windows"] = stats.windows
    if summary.already_complete:  # the counts are the completed run's, read back from its state file
        console.print(f"{spec.output} is already complete; nothing to do")
    elif show:
        console.print(f"[bold]{summary.rows_in:,}[/] rows in = {summary.rows_scored:,} scored + "
                      f"{summary.rows_errored:,} errored · padding {stats.padding_fraction:.1%} · "
                      f"{summary.seconds:.1f}s → {spec.output if spec.output != '-' else 'stdout'}")
    if not show:
        print(json.dumps({"summary": report}), file=sys.stderr)
    return summary
