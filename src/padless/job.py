"""The offline job behind ``padless classify`` and ``padless embed``: stream, run a row task in chunks, commit, resume.

Contract: every input row appears in the output exactly once, in input order, with either a result or an
``error`` entry; the summary counts ``rows_in = rows_scored + rows_errored``. Memory is bounded by one chunk.

What a row becomes is the task's (:class:`RowTask`: :class:`ClassifyTask` adds label, score, [scores,] error;
:class:`EmbedTask` adds embedding, error); reading, chunking, the commit/resume protocol, the state file, the kill
points, the sinks and the summary are shared.

Resume: beside a file output, the state file ``<output>.padless-state.json`` (format and decision table in
:mod:`padless.commit`) is written before the output is created, updated after each committed chunk, and marked
complete once the final output is in place; it stays there after success. After a crash (even ``kill -9``) the same
command with ``--resume`` cuts the output back to the last commit, skips the rows done, and carries on; an output
the state cannot vouch for is refused, never taken as done.

Kill points (:func:`padless.faults.crash_point`, for crash tests), in the order a run reaches them:
``before-model-load`` (CLI), ``state-written`` (initial state on disk, output not yet opened), ``output-opened``,
then per chunk ``chunk-written`` (in the sink, not yet committed), ``committed`` (durable, state not yet updated),
``state-updated``; for Parquet ``merge-started`` (parts partly streamed into the temporary file) and ``merged``
(final file renamed into place, completion not yet recorded); last ``completed`` (completion recorded, Parquet
parts not yet removed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from padless import commit
from padless.errors import InputError, ItemError
from padless.faults import crash_point
from padless.fileio import Reader, Row
from padless.sinks import finished_parts, make_sink, parts_dir, remove_parts


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What to read, where to write, and the options that change the output (they guard ``--resume``)."""

    input: str
    input_format: str
    column: str
    output: str
    output_format: str
    chunk_rows: int
    top_k: int = 1  # classify only
    raw_scores: bool = False  # classify only
    output_prefix: str = ""
    pair_column: str | None = None  # with it, each row's input is the pair (column, pair_column)
    resume: bool = False
    overwrite: bool = False


@dataclass
class JobSummary:
    rows_in: int = 0
    rows_scored: int = 0
    rows_errored: int = 0
    rows_skipped_by_resume: int = 0
    already_complete: bool = False  # --resume found the output complete and did nothing; the counts are its own
    seconds: float = 0.0
    output: str = ""


class RowTask(Protocol):
    """What a job does to each row; everything else (reading, chunks, commits, resume, summary) is the job's.

    ``columns(input_columns)``: the output's columns and the names of the task's own (``names["error"]`` is the
    per-row error column); ``records(chunk)``: one record per row, in order, never raising for one row;
    ``fingerprint()``: every option that changes the output, hashed into the resume state; ``vector_columns``:
    columns holding fixed-width float32 vectors (name → width), typed so in Parquet; ``stats``: the runner's."""

    vector_columns: dict[str, int]

    @property
    def stats(self) -> Any: ...

    def columns(self, input_columns: list[str]) -> tuple[list[str], dict[str, str]]: ...

    def records(self, chunk: list[Row]) -> list[dict[str, Any]]: ...

    def fingerprint(self) -> dict[str, Any]: ...


class ClassifyTask:
    """``padless classify``'s rows: label, score, [scores,] error (:func:`classify_rows`)."""

    vector_columns: dict[str, int] = {}

    def __init__(self, classifier: Any, *, top_k: int = 1, raw_scores: bool = False, output_prefix: str = "") -> None:
        self.classifier = classifier
        self.top_k, self.raw_scores, self.output_prefix = top_k, raw_scores, output_prefix
        self.names: dict[str, str] = {}

    @property
    def stats(self) -> Any:
        return self.classifier.stats

    def columns(self, input_columns: list[str]) -> tuple[list[str], dict[str, str]]:
        columns, self.names = added_columns(input_columns, output_prefix=self.output_prefix, top_k=self.top_k)
        return columns, self.names

    def records(self, chunk: list[Row]) -> list[dict[str, Any]]:
        return classify_rows(chunk, self.classifier, self.names, top_k=self.top_k, raw_scores=self.raw_scores)

    def fingerprint(self) -> dict[str, Any]:
        # Exactly the keys hashed before the job took other tasks, so that an output started then still resumes.
        desc = self.classifier.describe()
        return {"top_k": self.top_k, "raw_scores": self.raw_scores,
                "model": {k: desc.get(k) for k in ("path", "max_length", "truncate", "pair_truncation", "backend",
                                                   "dtype")}}


# The keys of Embedder.describe() an embed output's resume state hashes.
EMBED_FINGERPRINT = ("path", "task", "pooling", "normalize", "dimensions", "prompt", "long", "chunk_overlap",
                     "max_length", "truncate", "max_chars", "backend", "dtype", "variant")


class EmbedTask:
    """``padless embed``'s rows: embedding (a float32 vector of the embedder's width), error. A row the embedder
    cannot embed keeps its place with the error and a null embedding."""

    def __init__(self, embedder: Any, *, output_prefix: str = "") -> None:
        self.embedder = embedder
        self.output_prefix = output_prefix
        self.names: dict[str, str] = {k: output_prefix + k for k in ("embedding", "error")}
        self.vector_columns = {self.names["embedding"]: int(embedder.dimension)}

    @property
    def stats(self) -> Any:
        return self.embedder.stats

    def columns(self, input_columns: list[str]) -> tuple[list[str], dict[str, str]]:
        refuse_clash(input_columns, [self.names["embedding"], self.names["error"]])
        return input_columns + [self.names["embedding"], self.names["error"]], self.names

    def records(self, chunk: list[Row]) -> list[dict[str, Any]]:
        records = []
        for record, result, error in row_results(chunk, self.embedder.run):
            if error is None and result is None:
                error = "internal: no result for this row"
            record[self.names["embedding"]] = result if error is None else None
            record[self.names["error"]] = error
            records.append(record)
        return records

    def fingerprint(self) -> dict[str, Any]:
        # What decides the vectors (not threads, streams or batch limits, which a resumed run may change).
        desc = self.embedder.describe()
        return {"task": "embed", "model": {k: desc.get(k) for k in EMBED_FINGERPRINT}}


def _fingerprint(spec: JobSpec, task: RowTask) -> str:
    stat = os.stat(spec.input)
    keyed = {
        "input": os.path.abspath(spec.input), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "column": spec.column, "format": spec.output_format, "prefix": spec.output_prefix,
        "pair_column": spec.pair_column, **task.fingerprint(),
    }
    return commit.fingerprint(keyed)


def output_columns(input_columns: list[str], spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The output's columns: the input's, then label, score, [scores,] error (with the optional prefix)."""
    return added_columns(input_columns, output_prefix=spec.output_prefix, top_k=spec.top_k)


def added_columns(input_columns: list[str], *, output_prefix: str, top_k: int) -> tuple[list[str], dict[str, str]]:
    """:func:`output_columns` without a JobSpec (the Ray face has no local input or output): the columns, and the
    names padless's own columns get (a clash with an input column is refused, naming ``--output-prefix``)."""
    names = {k: output_prefix + k for k in ("label", "score", "scores", "error")}
    wanted = ["label", "score"] + (["scores"] if top_k != 1 else []) + ["error"]
    refuse_clash(input_columns, [names[k] for k in wanted])
    return input_columns + [names[k] for k in wanted], names


def refuse_clash(input_columns: list[str], added: list[str]) -> None:
    """One line naming ``--output-prefix`` when a column padless adds is already an input column."""
    clash = [name for name in added if name in input_columns]
    if clash:
        raise InputError(f"the input already has column(s) {', '.join(clash)}; "
                         "pass --output-prefix (e.g. pred_) to name padless's columns differently")


def as_task(spec: JobSpec, runner: Any) -> RowTask:
    """``runner`` itself when it is a :class:`RowTask`; a classifier becomes :class:`ClassifyTask` with the spec's
    top_k, raw_scores and output prefix."""
    if hasattr(runner, "records") and hasattr(runner, "fingerprint"):
        return runner  # type: ignore[no-any-return]
    return ClassifyTask(runner, top_k=spec.top_k, raw_scores=spec.raw_scores, output_prefix=spec.output_prefix)


def run_job(spec: JobSpec, runner: Any, on_chunk: Callable[[int, Any], None] | None = None) -> JobSummary:
    """Run a row task (or classify with a classifier, see :func:`as_task`) over ``spec.input`` into
    ``spec.output``; ``on_chunk(rows_done_in_chunk, stats)`` after each commit."""
    task = as_task(spec, runner)
    started = time.perf_counter()
    if spec.input == "-" and spec.resume:
        raise InputError("--resume needs an input file: stdin cannot be replayed")
    reader = Reader(spec.input, spec.input_format, spec.column, spec.pair_column)
    summary = JobSummary(output=spec.output)
    state_path = Path(spec.output + commit.STATE_SUFFIX)
    # Only a file read into a file keeps a state: stdin cannot be replayed, stdout cannot be cut back.
    fingerprint = _fingerprint(spec, task) if spec.input != "-" and spec.output != "-" else None
    on_disk: dict[str, Any] | None = None
    resume: commit.Continue | None = None
    if spec.output != "-":
        on_disk = commit.read_state(state_path)
        decision = commit.decide(on_disk, _output_facts(spec), output=spec.output, fmt=spec.output_format,
                                 fingerprint=fingerprint, resume=spec.resume, overwrite=spec.overwrite)
        if isinstance(decision, commit.Refuse):
            raise InputError(decision.message)
        if isinstance(decision, commit.AlreadyComplete):
            if decision.remove_parts:  # killed after completion was recorded, before the parts were removed
                remove_parts(spec.output)
            return _resumed(summary, decision.counts, decision.rows_done, already_complete=True)
        if isinstance(decision, commit.Continue):
            resume = decision
            summary = _resumed(summary, decision.counts, decision.rows_done)

    skip = resume.rows_done if resume is not None else 0
    chunks = reader.chunks(spec.chunk_rows, skip=skip)
    first = next(chunks, None)  # reading the first chunk tells a CSV reader its header
    columns, names = task.columns(_input_columns(reader, spec, first))
    # The state this run keeps up to date (None: not resumable). A fresh one goes to disk before the output is
    # touched, so that no kill from here on can leave an output that passes for a finished one.
    state: dict[str, Any] | None = None
    if resume is not None:
        state, columns = on_disk, resume.columns  # the header (or Parquet schema) the first run chose
    elif fingerprint is not None:
        state = commit.new_state(fingerprint, spec.output_format, columns)
        commit.write_state(state_path, state)
        crash_point("state-written")
    elif spec.output != "-":
        state_path.unlink(missing_ok=True)  # an earlier run's state must not describe this output
    sink = make_sink(spec.output, spec.output_format, columns, vector_columns=task.vector_columns)
    sink.open(resume.committed if resume is not None else None)
    crash_point("output-opened")
    rows_done = skip
    for chunk in _chain([first] if first is not None else [], chunks):
        records = task.records(chunk)
        sink.write(records)
        crash_point("chunk-written")
        committed = sink.commit()
        crash_point("committed")
        rows_done += len(chunk)
        summary.rows_in += len(chunk)
        summary.rows_errored += sum(r[names["error"]] is not None for r in records)
        summary.rows_scored = summary.rows_in - summary.rows_errored
        if state is not None:
            state = commit.after_commit(state, rows_done, committed, _counts(summary))
            commit.write_state(state_path, state)
            crash_point("state-updated")
        if on_chunk is not None:
            on_chunk(len(chunk), task.stats)
    sink.finish()
    if state is not None:  # completion is recorded only once the final output is durable and in place
        commit.write_state(state_path, commit.completed(state, os.path.getsize(spec.output)))
        crash_point("completed")
    sink.cleanup()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _output_facts(spec: JobSpec) -> commit.OutputFacts:
    output = Path(spec.output)
    size = output.stat().st_size if output.is_file() else 0
    if spec.output_format not in commit.PART_FORMATS:
        return commit.OutputFacts(exists=output.exists(), size=size)
    return commit.OutputFacts(exists=output.exists(), size=size, parts=finished_parts(spec.output),
                              parts_dir=parts_dir(spec.output).is_dir())


def _counts(summary: JobSummary) -> commit.Counts:
    return commit.Counts(rows_in=summary.rows_in, rows_scored=summary.rows_scored, rows_errored=summary.rows_errored)


def _resumed(summary: JobSummary, counts: commit.Counts, rows_done: int, already_complete: bool = False) -> JobSummary:
    """The summary of a resumed run so far: the committed rows' counts, carried over from the state."""
    return JobSummary(rows_in=counts.rows_in, rows_scored=counts.rows_scored, rows_errored=counts.rows_errored,
                      rows_skipped_by_resume=rows_done, already_complete=already_complete, output=summary.output)


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


def row_results(chunk: list[Row],
                run: Callable[[list[Any]], list[Any]]) -> list[tuple[dict[str, Any], Any, str | None]]:
    """Each row's columns, its result from ``run`` (None for a row not run) and its error: the row's own read error
    (such rows are not run), else the result's ItemError as ``code: message``. Shared by every row task."""
    texts = [row.text if row.error is None else None for row in chunk]
    runnable = [i for i, t in enumerate(texts) if t is not None]
    by_row: dict[int, Any] = dict(zip(runnable, run([texts[i] for i in runnable])))
    out = []
    for i, row in enumerate(chunk):
        result = by_row.get(i)
        error = f"{result.code}: {result}" if isinstance(result, ItemError) else row.error
        out.append((dict(row.columns), result, error))
    return out


def classify_rows(chunk: list[Row], classifier: Any, names: dict[str, str], *, top_k: int,
                  raw_scores: bool) -> list[dict[str, Any]]:
    """Each row's record: its columns, then label, score, [scores,] error. A row read with an error, or one the
    classifier cannot score, keeps its place with the error and null predictions (shared by the local and Ray
    faces, so both report the same errors)."""
    records = []
    run = partial(classifier.run, top_k=top_k, raw_scores=raw_scores)
    for record, result, error in row_results(chunk, run):
        if error is None and result is not None:
            record[names["label"]] = result.label
            record[names["score"]] = result.score
            if top_k != 1:
                record[names["scores"]] = [{"label": label, "score": score} for label, score in result.scores]
            record[names["error"]] = None
        else:
            record[names["label"]] = None
            record[names["score"]] = None
            if top_k != 1:
                record[names["scores"]] = None
            record[names["error"]] = error
        records.append(record)
    return records
