"""The offline classification job behind ``padless classify``: stream, classify in chunks, commit, resume.

Contract: every input row appears in the output exactly once, in input order, with either a prediction or an
``error`` entry; the summary counts ``rows_in = rows_scored + rows_errored``. Memory is bounded by one chunk.

Resume: beside the output a state file ``<output>.padless-state.json`` records, after each committed chunk, how many
input rows are done and where the output was committed (a byte offset, or a Parquet part count), plus a
fingerprint of the input file and the options. After a crash (even ``kill -9``) the same command with ``--resume``
truncates the output to the last commit, skips the rows done, and carries on. The state file is removed when the
job completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from padless.errors import InputError, ItemError
from padless.fileio import Reader, Row
from padless.sinks import make_sink

STATE_SUFFIX = ".padless-state.json"


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What to read, where to write, and the options that change the output (they guard ``--resume``)."""

    input: str
    input_format: str
    column: str
    output: str
    output_format: str
    chunk_rows: int
    top_k: int
    raw_scores: bool
    output_prefix: str = ""
    resume: bool = False
    overwrite: bool = False


@dataclass
class JobSummary:
    rows_in: int = 0
    rows_scored: int = 0
    rows_errored: int = 0
    rows_skipped_by_resume: int = 0
    seconds: float = 0.0
    output: str = ""


def _fingerprint(spec: JobSpec, model_desc: dict[str, Any]) -> str:
    stat = os.stat(spec.input)
    keyed = {
        "input": os.path.abspath(spec.input), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "column": spec.column, "top_k": spec.top_k, "raw_scores": spec.raw_scores, "format": spec.output_format,
        "prefix": spec.output_prefix,
        "model": {k: model_desc.get(k) for k in ("path", "max_length", "truncate", "backend", "dtype")},
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def output_columns(input_columns: list[str], spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The output's columns: the input's, then label, score, [scores,] error (with the optional prefix)."""
    names = {k: spec.output_prefix + k for k in ("label", "score", "scores", "error")}
    wanted = ["label", "score"] + (["scores"] if spec.top_k != 1 else []) + ["error"]
    clash = [names[k] for k in wanted if names[k] in input_columns]
    if clash:
        raise InputError(f"the input already has column(s) {', '.join(clash)}; "
                         "pass --output-prefix (e.g. pred_) to name padless's columns differently")
    return input_columns + [names[k] for k in wanted], names


def run_job(spec: JobSpec, classifier: Any, on_chunk: Callable[[int, Any], None] | None = None) -> JobSummary:
    """Classify ``spec.input`` into ``spec.output``; ``on_chunk(rows_done_in_chunk, stats)`` after each commit."""
    started = time.perf_counter()
    reader = Reader(spec.input, spec.input_format, spec.column)
    summary = JobSummary(output=spec.output)
    to_stdout = spec.output == "-"
    state_path = Path(spec.output + STATE_SUFFIX)
    fingerprint = None
    resume_at: int | None = None
    skip = 0
    if not to_stdout:
        if spec.input == "-":
            if spec.resume:
                raise InputError("--resume needs an input file: stdin cannot be replayed")
        else:
            fingerprint = _fingerprint(spec, classifier.describe())
        exists = Path(spec.output).exists() or state_path.exists()
        if spec.resume and state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("fingerprint") != fingerprint:
                raise InputError(f"{spec.output} was started with another input file or other options; "
                                 "rerun the original command, or pass --overwrite to start again")
            skip, resume_at = int(state["rows_done"]), int(state["committed"])
            summary = JobSummary(**{**asdict(summary), **state["summary"]})
            summary.rows_skipped_by_resume = skip
        elif spec.resume and Path(spec.output).exists():
            summary.rows_skipped_by_resume = -1  # complete already: no state file is left behind on success
            return summary
        elif exists and not spec.overwrite:
            raise InputError(f"{spec.output} already exists; pass --resume to continue it or --overwrite")

    chunks = reader.chunks(spec.chunk_rows, skip=skip)
    first = next(chunks, None)  # reading the first chunk tells a CSV reader its header
    columns, names = output_columns(_input_columns(reader, spec, first), spec)
    sink = make_sink(spec.output, spec.output_format, columns)
    sink.open(resume_at)
    rows_done = skip
    for chunk in _chain([first] if first is not None else [], chunks):
        records = _classify_chunk(chunk, classifier, spec, names)
        sink.write(records)
        committed = sink.commit()
        rows_done += len(chunk)
        summary.rows_in += len(chunk)
        summary.rows_errored += sum(r[names["error"]] is not None for r in records)
        summary.rows_scored = summary.rows_in - summary.rows_errored
        if fingerprint is not None:
            _write_state(state_path, {"fingerprint": fingerprint, "rows_done": rows_done, "committed": committed,
                                      "summary": {k: v for k, v in asdict(summary).items()
                                                  if k in ("rows_in", "rows_scored", "rows_errored")}})
        if on_chunk is not None:
            on_chunk(len(chunk), classifier.stats)
    sink.finish()
    if fingerprint is not None:
        state_path.unlink(missing_ok=True)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _input_columns(reader: Reader, spec: JobSpec, first: list[Row] | None) -> list[str]:
    """Columns to carry through. JSONL has no header: its fields are those seen in the first chunk, in order
    (a JSONL output keeps every field of every row; CSV and Parquet outputs keep these)."""
    if spec.input_format != "jsonl":
        return reader.fieldnames
    seen: dict[str, None] = {}
    for row in first or []:
        seen.update(dict.fromkeys(row.columns))
    return list(seen)


def _chain(first: list[list[Row]], rest: Any) -> Any:
    yield from first
    yield from rest


def _classify_chunk(chunk: list[Row], classifier: Any, spec: JobSpec, names: dict[str, str]) -> list[dict[str, Any]]:
    texts = [row.text if row.error is None else None for row in chunk]
    scorable = [i for i, t in enumerate(texts) if t is not None]
    results = classifier.run([texts[i] for i in scorable], top_k=spec.top_k, raw_scores=spec.raw_scores)
    by_row: dict[int, Any] = dict(zip(scorable, results))
    records = []
    for i, row in enumerate(chunk):
        record = dict(row.columns)
        result = by_row.get(i)
        error = row.error
        if isinstance(result, ItemError):
            error = f"{result.code}: {result}"
        if error is None and result is not None:
            record[names["label"]] = result.label
            record[names["score"]] = result.score
            if spec.top_k != 1:
                record[names["scores"]] = [{"label": label, "score": score} for label, score in result.scores]
            record[names["error"]] = None
        else:
            record[names["label"]] = None
            record[names["score"]] = None
            if spec.top_k != 1:
                record[names["scores"]] = None
            record[names["error"]] = error
        records.append(record)
    return records
