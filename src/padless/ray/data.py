"""padless on Ray Data: :func:`classify` and :func:`embed` turn a ``ray.data.Dataset`` into a lazy Dataset with
padless's columns added.

Each worker is an actor (a callable class in ``map_batches`` with a fixed pool of ``workers``) that loads the model
once — an optimize folder's variant is re-checked there, as on any load — and receives large pyarrow batches
(``batch_rows``). Inside it padless runs exactly as in local mode: rows are validated by the same
:class:`~padless.fileio.Reader` code and handed to the same row task as ``padless classify`` or ``padless embed``
(:class:`padless.job.ClassifyTask`, :class:`padless.job.EmbedTask`): tokenized once, planned into token-budget
batches, run and restored to order, so errors, labels, scores and vectors are the local ones and padding stays low
whatever a block holds.

Fault tolerance is Ray's: a lost actor is restarted and its batch retried (Ray Data's actor defaults,
``max_restarts=-1``, ``max_task_retries=-1``); a lost block is rebuilt from lineage.
``DataContext.max_errored_blocks`` must stay 0 — above 0 Ray would drop the rows of a failing block without a
trace — and :func:`classify` refuses to build a pipeline otherwise.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from padless.config import BatchConfig, EngineSpec, ModelConfig, OutputConfig
from padless.embedder import EmbedOptions
from padless.errors import ConfigError
from padless.fileio import Row
from padless.ray.cluster import biggest_node_cpus, import_ray, init_ray
from padless.ray.offline_io import READ_ERROR, TableReader

__all__ = ["ID_FIELDS", "ROW_ID", "ScoreOptions", "classify", "embed", "plan_workers", "run_task"]

# The stable row id columns ``padless classify --ray`` adds (before ``--output-prefix``): a sortable id, and the
# input file and 0-based row number it stands for.
ID_FIELDS = ("row_id", "input_file", "row_number")
ROW_ID = ID_FIELDS[0]


@dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    """Everything a worker needs to load the model and score a batch (it travels to every actor)."""

    # The engine each worker loads: its model a local folder, resolved on the driver; its threads planned there.
    engine: EngineSpec = field(default_factory=EngineSpec)
    column: str = "text"
    pair_column: str | None = None
    top_k: int = 1
    raw_scores: bool = False
    output_prefix: str = ""
    id_columns: tuple[str, ...] = ()  # row id columns to keep last (the CLI's row_id, input_file, row_number)
    embed: EmbedOptions | None = None  # set: the embed task (embedding, error); None: classify (label, score, …)

    def validate(self) -> None:
        """Refuse impossible options (one line, :class:`~padless.errors.ConfigError`) before anything starts."""
        self.engine.validate()
        if self.embed is None:
            OutputConfig(top_k=self.top_k, raw_scores=self.raw_scores).validate()
            return
        self.embed.validate()
        if self.pair_column is not None:
            raise ConfigError("a text pair is not an embedding input; embed one column")


def plan_workers(cluster_cpus: int, workers: int | None, threads: int | None,
                 node_cpus: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: workers default to one per CPU (or per ``threads`` CPUs), threads to the
    cluster's CPUs shared between the workers, at least 1 and at most the biggest node's ``node_cpus`` (an actor
    lives on one node). More than the cluster holds is refused."""
    cpus = max(1, int(cluster_cpus))
    biggest = max(1, int(node_cpus)) if node_cpus else cpus
    if workers is not None and workers < 0 or threads is not None and threads < 0:
        raise ConfigError("--workers and --threads must be 0 (automatic) or positive")
    if threads and threads > biggest:
        raise ConfigError(f"--threads {threads} is more than the biggest Ray node's {biggest} CPUs; lower it")
    if not workers:
        workers = max(1, cpus // threads) if threads else cpus
    threads = threads or max(1, min(biggest, cpus // workers))
    if workers * threads > cpus:
        raise ConfigError(f"--workers {workers} × --threads {threads} needs {workers * threads} CPUs, but the Ray "
                          f"cluster has {cpus}; lower one of them")
    return workers, threads


def check_max_errored_blocks(context: Any) -> None:
    """Refuse a Ray Data context that may drop failing blocks: padless promises that no row is lost silently."""
    if context.max_errored_blocks != 0:
        raise ConfigError(f"DataContext.max_errored_blocks is {context.max_errored_blocks}; padless needs 0, or Ray "
                          "would drop the rows of a failing block without a trace")


def classify(ds: Any, model: str = "default", column: str = "text", *, pair_column: str | None = None,
             backend: str = "auto", top_k: int = 1, raw_scores: bool = False, workers: int | None = None,
             threads: int | None = None, batch_rows: int = BatchConfig.ray_chunk_rows, max_length: int | None = None,
             truncate: bool = True, max_chars: int = ModelConfig.max_chars,
             max_batch_tokens: int = BatchConfig.max_batch_tokens, max_batch_size: int = BatchConfig.max_batch_size,
             width_multiple: int = BatchConfig.width_multiple, streams: int = ModelConfig.streams,
             pair_truncation: str = ModelConfig.pair_truncation, output_prefix: str = "",
             progress: Any = None, id_columns: tuple[str, ...] = ()) -> Any:
    """Score ``ds[column]`` (or the pairs ``(column, pair_column)``) with ``model``; returns a lazy Dataset with the
    input's columns, then ``label``, ``score``, [``scores`` when ``top_k != 1``,] ``error`` (names prefixed by
    ``output_prefix``). Nothing runs until the Dataset is consumed (``write_parquet``, ``iter_batches``, …).

    A null or non-text value, an empty text, or one too long with ``truncate=False`` gets its row's ``error`` (as in
    local mode), never an exception. ``workers``: actors (default one per cluster CPU but one, which Ray's own
    read and write tasks need: they reserve 1 CPU each unless read with ``num_cpus=0``; with ``workers`` ×
    ``threads`` equal to every CPU, read with ``num_cpus=0`` or the pool waits forever for input);
    ``threads``: each actor's intra-op threads and the CPUs it reserves (default cluster CPUs / workers).
    ``progress``: an optional actor handle with ``add.remote(worker, rows, errors, real_tokens, padded_tokens,
    seconds)``, told after each batch (the CLI's live bar). The model must be a folder every node can read (or
    ``default``/a Hub id already cached on every node).
    """
    engine = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                           max_chars=max_chars, threads=threads or 0, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, width_multiple=width_multiple, streams=streams,
                           pair_truncation=pair_truncation)
    opts = ScoreOptions(engine=engine, column=column, pair_column=pair_column, top_k=top_k, raw_scores=raw_scores,
                        output_prefix=output_prefix, id_columns=id_columns)
    return run_task(ds, opts, workers=workers, threads=threads, batch_rows=batch_rows, progress=progress)


def embed(ds: Any, model: str = "default", column: str = "text", *, backend: str = "auto",
          workers: int | None = None, threads: int | None = None, batch_rows: int = BatchConfig.ray_chunk_rows,
          max_length: int | None = None, truncate: bool = True, max_chars: int = ModelConfig.max_chars,
          max_batch_tokens: int = BatchConfig.max_batch_tokens, max_batch_size: int = BatchConfig.max_batch_size,
          width_multiple: int = BatchConfig.width_multiple, streams: int = ModelConfig.streams,
          pooling: str | None = None, normalize: bool | None = None, dimensions: int | None = None,
          prompt_name: str | None = None, prompt: str | None = None, long: str = "truncate", chunk_overlap: int = 32,
          output_prefix: str = "", progress: Any = None, id_columns: tuple[str, ...] = ()) -> Any:
    """Embed ``ds[column]`` with ``model`` (``default``: all-MiniLM-L6-v2); returns a lazy Dataset with the input's
    columns, then ``embedding`` (``fixed_size_list<float32>[dimension]``, null for a row that could not be
    embedded) and ``error``. The options are :class:`padless.Embedder`'s, the rest :func:`classify`'s; the options
    are checked against the model's folder here, before any worker starts (one line, ConfigError)."""
    engine = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                           max_chars=max_chars, threads=threads or 0, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, width_multiple=width_multiple, streams=streams)
    options = EmbedOptions(pooling=pooling, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name,
                           prompt=prompt, long=long, chunk_overlap=chunk_overlap)
    opts = ScoreOptions(engine=engine, column=column, output_prefix=output_prefix, id_columns=id_columns,
                        embed=options)
    opts.validate()
    check_embed(replace(opts, engine=engine.replace(model=str(model_folder(opts)))))
    return run_task(ds, opts, workers=workers, threads=threads, batch_rows=batch_rows, progress=progress)


def run_task(ds: Any, opts: ScoreOptions, *, workers: int | None = None, threads: int | None = None,
             batch_rows: int = BatchConfig.ray_chunk_rows, progress: Any = None) -> Any:
    """:func:`classify` or :func:`embed` (``opts.embed`` set) with the options as one value (``opts.engine``
    whole); ``workers``, ``threads``, ``batch_rows`` and ``progress`` as there (``threads`` wins over
    ``opts.engine``'s). Embed options are the caller's to check against the folder first (:func:`check_embed`,
    as :func:`embed` and ``padless embed --ray`` do), so that it is done once, before anything starts."""
    opts.validate()
    if batch_rows < 1:
        raise ConfigError("batch_rows must be positive")
    ray = init_ray() if not import_ray().is_initialized() else import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    check_max_errored_blocks(DataContext.get_current())
    check_max_errored_blocks(ds.context)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = threads or opts.engine.model.threads or None
    if not workers and not threads and cpus > 1:
        # Ray's own readers and writers reserve a CPU per task by default: leave them one, or a pool holding every
        # CPU would wait forever for its input. (The CLI reads and writes with num_cpus=0 and uses every CPU.)
        workers = cpus - 1
    workers, threads = plan_workers(cpus, workers, threads, biggest_node_cpus())
    opts = replace(opts, engine=opts.engine.replace(model=str(model_folder(opts)), threads=threads))
    schema = ds.schema(fetch_if_missing=False)  # only when known without running anything: the result stays lazy
    if schema is not None:
        check_columns([n for n in schema.names if n != READ_ERROR and n not in opts.id_columns], opts)
    return ds.map_batches(
        _Scorer, fn_constructor_kwargs={"opts": opts, "progress": progress}, batch_size=batch_rows,
        # Exactly-once rests on Ray Data's actor defaults (ActorPoolMapOperator._apply_default_remote_args):
        # max_restarts=-1 and max_task_retries=-1, so a lost actor comes back and its batch is redone. They are not
        # passed here: Ray 2.60 deprecates passing them through **ray_remote_args.
        batch_format="pyarrow", zero_copy_batch=True, num_cpus=threads,
        # One call in flight per actor: a ready actor may not queue its peers' share while they still load the
        # model (with Ray's default of several, one of two workers took a whole 20,000-row file, the other none).
        compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1))


def model_folder(opts: ScoreOptions) -> Path:
    """The local folder the workers load: ``default`` is the built classifier for classify (built here when
    missing) and all-MiniLM-L6-v2 for embed; anything else as :func:`padless.loader.resolve` finds it."""
    model = opts.engine.model.model
    if opts.embed is not None:
        from padless.embedder import resolve_model

        return resolve_model(model).resolve()
    from padless import loader
    from padless.default_model import ensure_default

    ensure_default(model)
    return loader.resolve(model).resolve()


def check_embed(opts: ScoreOptions) -> None:
    """Every embed option checked against the model's folder on the driver (its config and tokenizer, no weights),
    so a bad one is one line here rather than a failure on every worker."""
    from padless.embedder import Embedder

    assert opts.embed is not None
    Embedder.from_spec(opts.engine.replace(backend="dummy"), **asdict(opts.embed))


def check_columns(columns: list[str], opts: ScoreOptions) -> list[str]:
    """The output's columns (without the row ids), once the text column is found and no added column clashes with
    an input column (one line each otherwise)."""
    from padless.job import added_columns, refuse_clash

    for name in (opts.column, opts.pair_column):
        if name is not None and name not in columns:
            raise ConfigError(f"column {name!r} not found in the dataset; columns: {', '.join(columns) or 'none'}")
    if opts.embed is None:
        return added_columns(columns, output_prefix=opts.output_prefix, top_k=opts.top_k)[0]
    added = [opts.output_prefix + "embedding", opts.output_prefix + "error"]
    refuse_clash(columns, added)
    return columns + added


def _make_task(opts: ScoreOptions) -> Any:
    """The worker's row task, as local mode builds it (:class:`padless.job.RowTask`)."""
    from padless import job

    if opts.embed is None:
        from padless.engine import Classifier

        return job.ClassifyTask(Classifier.from_spec(opts.engine), top_k=opts.top_k, raw_scores=opts.raw_scores,
                                output_prefix=opts.output_prefix)
    from padless.embedder import Embedder

    embedder = Embedder.from_spec(opts.engine, **asdict(opts.embed))
    return job.EmbedTask(embedder, output_prefix=opts.output_prefix)


def _column(values: list[Any], key: str, width: int | None) -> pa.Array:
    """One added column as Arrow: a fixed-width float32 vector, or classify's typed scalars."""
    if width is not None:
        from padless.sinks import vector_array

        return vector_array(values, width)
    types = {"label": pa.string(), "score": pa.float64(), "error": pa.string(),
             "scores": pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))}
    return pa.array(values, types[key])


class _Scorer:
    """One Ray Data worker: loads the model once, runs the row task on pyarrow batches as local mode runs chunks."""

    def __init__(self, opts: ScoreOptions, progress: Any = None) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        from padless.loader.folders import quiet_libraries

        quiet_libraries()
        self.opts, self.progress = opts, progress
        self.task = _make_task(opts)
        import ray

        self.worker = ray.get_runtime_context().get_actor_id() or f"pid-{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        stats = self.task.stats
        before = (stats.real_tokens, stats.padded_tokens)
        read_errors = batch.column(READ_ERROR).to_pylist() if READ_ERROR in batch.column_names else None
        data = batch.drop_columns([READ_ERROR]) if read_errors is not None else batch
        inputs = [n for n in data.column_names if n not in self.opts.id_columns]
        columns, names = self.task.columns(inputs)
        rows = list(TableReader(data, self.opts.column, self.opts.pair_column).rows())
        if read_errors is not None:  # a row that failed to read keeps its reader's error, as in local mode
            rows = [r if e is None else Row(r.columns, None, e) for r, e in zip(rows, read_errors)]
        records = self.task.records(rows)
        out = data.select(inputs)
        keys = {name: key for key, name in names.items()}
        for name in columns[len(inputs):]:
            values = [r[name] for r in records]
            array = _column(values, keys[name], self.task.vector_columns.get(name))
            out = out.append_column(pa.field(name, array.type), array)
        for name in self.opts.id_columns:
            out = out.append_column(data.schema.field(name), data.column(name))
        errors = sum(r[names["error"]] is not None for r in records)
        self._report(len(records), errors, stats.real_tokens - before[0], stats.padded_tokens - before[1],
                     time.perf_counter() - started)
        return out

    def _report(self, rows: int, errors: int, real: int, padded: int, seconds: float) -> None:
        if self.progress is None:
            return
        try:  # fire and forget: progress is for display; a lost progress actor must not fail a batch
            self.progress.add.remote(self.worker, rows, errors, real, padded, seconds)
        except Exception:  # noqa: BLE001, S110 - any failure to report is only a missing progress update
            pass


def options_dict(opts: ScoreOptions) -> dict[str, Any]:
    """The options that change the output (they guard ``--resume``); an embed job adds the task and its options."""
    engine = opts.engine.flat()
    face = {"column": opts.column, "pair_column": opts.pair_column, "top_k": opts.top_k,
            "raw_scores": opts.raw_scores, "output_prefix": opts.output_prefix}
    task = {} if opts.embed is None else {"task": "embed", "embed": asdict(opts.embed)}
    return {**{k: engine[k] for k in ("backend", "max_length", "truncate", "max_chars", "pair_truncation")}, **face,
            **task}
