"""The Ray offline job behind ``padless classify --ray`` and ``padless embed --ray``: read files, run the row task
on actors, write exactly once.

Output: a Parquet dataset folder. Each row has the input's columns, the task's (label, score, [scores,] error; or
embedding, error) and a stable row id: ``input_file``, ``row_number`` (0-based within that file) and ``row_id`` =
file index · 10¹² + row number, so sorting by ``row_id`` restores input order (files in sorted path order).

Exactly once, nothing lost:

- every row is read (a bad row gets its error, as in local mode); ``max_errored_blocks`` stays 0;
- a lost worker or node is Ray's to redo (actor restarts, task retries, lineage);
- a part file's name is a function of the rows it holds and appears only when the part is whole (temporary name,
  fsync, rename), so a retried block rewrites the same file and a torn write is invisible;
- ``_padless_state.json`` (inside the folder; names starting with ``_`` are skipped by Parquet readers) is local
  mode's state (:mod:`padless.commit`, format ``ray-parquet``), written before the first part and marked complete
  only after the parts were counted and every row id found once; :func:`padless.commit.decide` reads it, as for a
  local output;
- ``--resume`` after a driver kill reads the row ids the finished parts hold and the read tasks skip those rows, so
  the union of old and new parts holds every row once. An output without a state, with another input or options,
  or whose parts changed since completion, is refused with one line naming ``--overwrite``.

Why not Ray Data's own checkpointing (``DataContext.checkpoint_config``)? In Ray 2.60 it filters checkpointed rows
in an extra actor pool whose actors reserve 1 CPU and 1 GiB each (``plan_read_op.create_checkpoint_filter_op``; only
``memory`` is set, and Ray's map-operator default adds ``num_cpus=1``); with one padless worker per CPU — the
default — that actor never starts and a resumed run hangs. Its default also deletes the checkpoint *before* the
caller can record completion. The bookkeeping here has neither problem and is tested with real SIGKILLs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from padless import commit
from padless.config import BatchConfig
from padless.errors import InputError, PadlessError
from padless.faults import crash_point
from padless.job import JobSummary, refuse_clash
from padless.ray import offline_io as io
from padless.ray.cluster import biggest_node_cpus, run_watched
from padless.ray.data import (
    ID_FIELDS,
    ScoreOptions,
    check_columns,
    check_max_errored_blocks,
    options_dict,
    plan_workers,
    run_task,
)

STATE_NAME = "_padless_state.json"


@dataclass(frozen=True, kw_only=True)
class RayJobSpec:
    """What to read, where to write, and how: the CLI's options for ``classify --ray`` and ``embed --ray``, with the
    model already resolved and checked by the caller (a head for classify, :func:`padless.ray.data.check_embed`)."""

    input: str
    output: str
    input_format: str | None
    options: ScoreOptions  # its engine's ``model`` as the user named it; resolved to a folder before the workers start
    workers: int = 0
    threads: int = 0
    batch_rows: int = BatchConfig.ray_chunk_rows
    resume: bool = False
    overwrite: bool = False


@dataclass
class RayJobSummary(JobSummary):
    """Local mode's summary (the same counts, in the same order) plus what a Ray run adds."""

    files: int = 0
    workers: int = 0
    threads: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    padding_fraction: float = 0.0
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    per_worker_rows_per_s: list[float] = field(default_factory=list)


class Progress:
    """A tiny actor the workers tell after each batch (rows, tokens, busy seconds); the driver polls it for the bar
    and the summary. It lives on the driver's node with no CPU reserved. Counts are for display: a batch redone after
    a failure is counted again, so the summary's row counts come from the output instead."""

    def __init__(self) -> None:
        self.workers: dict[str, list[float]] = {}

    def add(self, worker: str, rows: int, errors: int, real: int, padded: int, seconds: float) -> None:
        totals = self.workers.setdefault(worker, [0, 0, 0, 0, 0.0])
        for i, value in enumerate((rows, errors, real, padded, seconds)):
            totals[i] += value

    def snapshot(self) -> dict[str, list[float]]:
        return self.workers


def run_ray_job(spec: RayJobSpec, on_progress: Callable[[dict[str, list[float]]], None] | None = None,
                poll_s: float = 0.5) -> RayJobSummary:
    """Run the job on the Ray cluster already joined (:func:`padless.ray.cluster.init_ray`)."""
    import ray
    from ray.data import DataContext
    from ray.data.datasource.path_util import _resolve_paths_and_filesystem

    started = time.perf_counter()
    opts = spec.options
    display, resolved, in_fs = io.expand_inputs(spec.input)
    fmt = io.input_format(display, spec.input_format)
    columns = io.first_columns(display[0], resolved[0], in_fs, fmt, opts.column, opts.pair_column, spec.batch_rows)
    ids = (opts.output_prefix + ID_FIELDS[0], opts.output_prefix + ID_FIELDS[1], opts.output_prefix + ID_FIELDS[2])
    refuse_clash(columns, list(ids))
    out_columns = check_columns(columns, opts) + list(ids)
    (out_dir,), out_fs = _resolve_paths_and_filesystem(spec.output)
    out_dir = out_dir.rstrip("/")
    workers, threads = plan_workers(int(ray.cluster_resources().get("CPU", 1)), spec.workers, spec.threads,
                                    biggest_node_cpus())
    fingerprint = _fingerprint(display, resolved, in_fs, fmt, opts, spec.batch_rows)
    state = _read_state(out_fs, out_dir)
    summary = RayJobSummary(output=spec.output, files=len(display), workers=workers, threads=threads)
    decision = commit.decide(state, _facts(out_fs, out_dir), output=spec.output, fmt=commit.DATASET_FORMAT,
                             fingerprint=fingerprint, resume=spec.resume, overwrite=spec.overwrite,
                             state_file=f"{spec.output.rstrip('/')}/{STATE_NAME}")
    if isinstance(decision, commit.Refuse):
        raise InputError(decision.message)
    if isinstance(decision, commit.AlreadyComplete):
        return _finish(summary, started, counts=decision.counts, already_complete=True)
    if isinstance(decision, commit.StartFresh):
        out_fs.delete_dir_contents(out_dir, missing_dir_ok=True)  # empty unless --overwrite (or a state-only run)
        out_fs.create_dir(out_dir, recursive=True)
        state = commit.new_state(fingerprint, commit.DATASET_FORMAT, out_columns)
        _write_state(out_fs, out_dir, state)
        crash_point("ray-state-written")  # a kill here: a state, no part yet
    assert state is not None
    _remove_temporaries(out_fs, out_dir)  # torn parts of a killed run: never renamed, never counted
    resuming = isinstance(decision, commit.Continue)
    done = _row_ids(out_fs, out_dir, ids[0]) if resuming else np.array([], dtype=np.int64)
    summary.rows_skipped_by_resume = int(done.size)

    context = DataContext.get_current()
    check_max_errored_blocks(context)
    context.enable_progress_bars = False  # padless draws its own bar (or prints its one JSON line)
    progress: Any = ray.remote(num_cpus=0)(Progress).options(scheduling_strategy=_this_node()).remote()
    source = io.make_datasource(display, resolved, in_fs, fmt=fmt, column=opts.column, pair_column=opts.pair_column,
                                columns=columns, id_names=ids, block_rows=spec.batch_rows,
                                done=ray.put(done) if done.size else None)
    # Reads and writes reserve no CPU: the workers hold the CPUs (one per core by default), and a read or write
    # task that waited for one would stall the pipeline. Ray Data's backpressure still bounds what is in flight.
    ds = ray.data.read_datasource(source, num_cpus=0)
    scored = run_task(ds, replace(opts, id_columns=ids), workers=workers, threads=threads,
                      batch_rows=spec.batch_rows, progress=progress)
    _run_polling(lambda: scored.write_datasink(io.make_sink(out_dir, out_fs, ids[0]), ray_remote_args={"num_cpus": 0}),
                 lambda: on_progress(ray.get(progress.snapshot.remote())) if on_progress else None, poll_s)
    crash_point("ray-parts-written")  # a kill here: every part written, the run not yet recorded complete
    _add_worker_stats(summary, ray.get(progress.snapshot.remote()))
    ray.kill(progress)
    counts = _verify(out_fs, out_dir, ids[0], opts.output_prefix + "error")
    done_state = commit.after_commit(state, counts.rows_in, len(_parts(out_fs, out_dir)), counts)
    _write_state(out_fs, out_dir, commit.completed(done_state, _parts_size(out_fs, out_dir)))
    return _finish(summary, started, counts=counts)


def _finish(summary: RayJobSummary, started: float, *, counts: commit.Counts,
            already_complete: bool = False) -> RayJobSummary:
    summary.rows_in, summary.rows_errored = counts.rows_in, counts.rows_errored
    summary.rows_scored = summary.rows_in - summary.rows_errored
    summary.already_complete = already_complete
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _run_polling(work: Callable[[], Any], poll: Callable[[], Any], poll_s: float) -> None:
    """Run ``work`` in a thread, calling ``poll`` every ``poll_s`` until it ends; its exception is re-raised here."""
    try:
        run_watched(work, every_s=poll_s, tick=poll, name="padless-ray-write")
    except BaseException as err:
        raise _padless_cause(err) from err


def _padless_cause(err: BaseException) -> BaseException:
    """A PadlessError raised inside a Ray task (a file without the text column) as the one line it is."""
    seen: BaseException | None = err
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, PadlessError):
            return PadlessError(str(seen))
        if isinstance(cause, PadlessError):
            return PadlessError(str(cause))
        seen = seen.__cause__ or (cause if isinstance(cause, BaseException) else None)
    return err


def _add_worker_stats(summary: RayJobSummary, snapshot: dict[str, list[float]]) -> None:
    for worker, (rows, _errors, real, padded, seconds) in sorted(snapshot.items()):
        summary.real_tokens += int(real)
        summary.padded_tokens += int(padded)
        summary.per_worker.append({"worker": worker[:12], "rows": int(rows), "busy_s": round(seconds, 3),
                                   "rows_per_s": round(rows / seconds, 1) if seconds else 0.0})
    summary.per_worker_rows_per_s = [w["rows_per_s"] for w in summary.per_worker]
    if summary.padded_tokens:
        summary.padding_fraction = round(1 - summary.real_tokens / summary.padded_tokens, 4)


def _this_node() -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _fingerprint(display: list[str], resolved: list[str], fs: pafs.FileSystem, fmt: str, opts: ScoreOptions,
                 batch_rows: int) -> str:
    infos = fs.get_file_info(resolved)
    keyed = {"files": [[d, i.size, i.mtime_ns] for d, i in zip(display, infos)], "format": fmt,
             "batch_rows": batch_rows, "model": opts.engine.model.model, **options_dict(opts)}
    return commit.fingerprint(keyed)


def _read_state(fs: pafs.FileSystem, folder: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(f"{folder}/{STATE_NAME}") as fh:
            state = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(fs: pafs.FileSystem, folder: str, state: dict[str, Any]) -> None:
    """Atomically, as local mode's state: a kill leaves the old state or the new one."""
    if isinstance(fs, pafs.LocalFileSystem):
        from pathlib import Path

        commit.write_state(Path(folder) / STATE_NAME, state)
        return
    io.put_whole(fs, f"{folder}/{STATE_NAME}", json.dumps(state).encode("utf-8"))


def _facts(fs: pafs.FileSystem, folder: str) -> commit.OutputFacts:
    """What :func:`padless.commit.decide` needs of the folder: whether it holds anything, and its parts' bytes."""
    info = fs.get_file_info(folder)
    if info.type == pafs.FileType.File:
        raise InputError(f"{folder} is a file; --ray writes a Parquet dataset folder, pass a folder for -o")
    if info.type == pafs.FileType.NotFound:
        return commit.OutputFacts(exists=False)
    exists = bool(fs.get_file_info(pafs.FileSelector(folder, recursive=False)))
    return commit.OutputFacts(exists=exists, size=_parts_size(fs, folder))


def _parts_size(fs: pafs.FileSystem, folder: str) -> int:
    return sum(i.size or 0 for i in fs.get_file_info(_parts(fs, folder)))


def _parts(fs: pafs.FileSystem, folder: str) -> list[str]:
    entries = fs.get_file_info(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
    return sorted(e.path for e in entries if e.type == pafs.FileType.File and e.base_name.startswith("part-")
                  and e.base_name.endswith(".parquet"))


def _remove_temporaries(fs: pafs.FileSystem, folder: str) -> None:
    entries = fs.get_file_info(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
    for e in entries:
        if e.type == pafs.FileType.File and e.base_name.startswith(".") and e.base_name.endswith(".tmp"):
            fs.delete_file(e.path)


def _read_columns(fs: pafs.FileSystem, folder: str, columns: list[str]) -> Any:
    import pyarrow.dataset as pads

    parts = _parts(fs, folder)
    if not parts:
        return None
    try:
        return pads.dataset(parts, format="parquet", filesystem=fs).to_table(columns=columns)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InputError(f"a part file in {folder} is unreadable ({type(err).__name__}: {err}); "
                         "pass --overwrite to run it again") from None


def _row_ids(fs: pafs.FileSystem, folder: str, id_column: str) -> np.ndarray:
    """The sorted row ids the finished parts hold (a resumed run skips these rows)."""
    table = _read_columns(fs, folder, [id_column])
    if table is None:
        return np.array([], dtype=np.int64)
    return np.sort(table.column(id_column).to_numpy())


def _verify(fs: pafs.FileSystem, folder: str, id_column: str, error_column: str) -> commit.Counts:
    """Count the output and prove every row id is there once; only then may the run be recorded complete."""
    table = _read_columns(fs, folder, [id_column, error_column])
    if table is None:
        return commit.Counts()
    ids = table.column(id_column).to_numpy()
    unique = np.unique(ids).size
    if unique != ids.size:
        raise PadlessError(f"internal error: {ids.size - unique} rows appear more than once in {folder}; "
                           "not marking it complete")
    errored = int(table.column(error_column).is_valid().to_numpy(zero_copy_only=False).sum())
    return commit.Counts(rows_in=int(ids.size), rows_scored=int(ids.size) - errored, rows_errored=errored)
