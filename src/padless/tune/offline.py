"""The offline half of ``padless tune``: texts/s of the engine ``classify``/``embed`` would run, on one workload, for
each point of batch limits and thread layout.

A point sets ``max_batch_tokens``, ``max_batch_size`` and ``threads`` (and ``streams`` on OpenVINO, where several
batches run at once, the threads split between them). Batch limits change on a loaded engine
(:meth:`~padless.engine.Engine.with_options`); a thread layout needs its own engine, so at most two are kept loaded:
the best point's and the candidate's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from padless.config import EngineSpec
from padless.engine import Engine
from padless.machine import usable_cores
from padless.tune.search import Dimension, Point

TOKEN_STEPS = (1024, 2048, 4096, 8192, 16384, 32768)
ROW_STEPS = (16, 32, 64, 128, 256, 512)
Layout = tuple[int, int]  # (threads, streams); streams 0 where the runtime has none


def load_texts(source: str, tokenizer: Any, *, n: int, seed: int, column: str = "text") -> list[str]:
    """``n`` texts of a named mix (:data:`padless.bench.workload.MIXES`, deterministic for ``seed``), or the first
    ``n`` readable texts of a file (``column`` of a CSV, TSV, JSONL or Parquet file; lines of a .txt)."""
    from padless.bench.workload import MIXES, make_workload
    from padless.errors import InputError
    from padless.fileio import Reader, detect_format

    if source in MIXES:
        return make_workload(tokenizer, source, n, seed)
    texts: list[str] = []
    for row in Reader(source, detect_format(source, None), column).rows():
        if isinstance(row.text, str) and row.error is None:
            texts.append(row.text)
            if len(texts) == n:
                break
    if not texts:
        raise InputError(f"{source}: no readable texts in column {column!r}")
    return texts


class OfflineBench:
    """Measures points on ``texts`` with ``first`` (the engine loaded from ``spec``, whose layout says what the
    defaults resolve to: threads, streams) and engines for other layouts built by ``load``
    (:func:`padless.tasks.load_engine`)."""

    def __init__(self, spec: EngineSpec, first: Engine, load: Callable[[EngineSpec], Engine],
                 texts: list[str]) -> None:
        self.spec, self.load, self.texts = spec, load, texts
        self.engines: dict[Layout, Engine] = {}
        self._run(first, self.texts)  # warm: the first full pass of a fresh runtime pays its allocations
        self.default_layout = self.layout_of(first)
        self.engines[self.default_layout] = first
        self.max_length = first.max_length
        self.has_streams = first.backend.startswith("openvino")  # the one runtime that runs batches concurrently
        self.backend = first.backend
        self.keep: set[Layout] = {self.default_layout}

    @staticmethod
    def layout_of(engine: Engine) -> Layout:
        runtime = engine.runtime
        streams = int(getattr(runtime, "streams", 0)) if engine.backend.startswith("openvino") else 0
        return int(getattr(runtime, "threads", 0) or usable_cores()), streams

    def _engine_for(self, spec: EngineSpec) -> Engine:
        engine = self.load(spec)
        self._run(engine, self.texts)  # warm, as the first engine was
        return engine

    def start(self) -> Point:
        """The defaults as a point (threads and streams as the runtime resolved them)."""
        threads, streams = self.default_layout
        point: Point = {"max_batch_tokens": self.spec.batch.max_batch_tokens,
                        "max_batch_size": self.spec.batch.max_batch_size, "threads": threads}
        if self.has_streams:
            point["streams"] = streams
        return point

    def dimensions(self, start: Point | None = None, max_tokens: int | None = None) -> list[Dimension]:
        """What is searched, in order: the token budget, the row cap, then the thread layout. Each list holds
        ``start``'s value (default: the defaults); budgets below the model's token limit cannot hold one full-length
        input and are left out, and so are budgets over ``max_tokens`` (what a GPU's memory allows)."""
        start = start or self.start()
        tokens = sorted({t for t in TOKEN_STEPS if t >= self.max_length and (max_tokens is None or t <= max_tokens)}
                        | {start["max_batch_tokens"]})
        rows = sorted(set(ROW_STEPS) | {start["max_batch_size"]})
        cores = max(usable_cores(), start["threads"])
        dims = [Dimension("max_batch_tokens", tuple(tokens)), Dimension("max_batch_size", tuple(rows)),
                Dimension("threads", tuple(range(1, cores + 1)))]
        if self.has_streams:
            dims.append(Dimension("streams", tuple(range(1, cores + 1))))
        return dims

    @staticmethod
    def valid(point: Point) -> bool:
        """Every stream needs a thread of its own."""
        return point.get("streams", 0) <= point["threads"]

    def engine(self, point: Point) -> Engine:
        """The loaded engine for ``point``'s layout, with its batch limits."""
        layout = (int(point["threads"]), int(point.get("streams", 0)))
        if layout not in self.engines:
            for old in [lay for lay in self.engines if lay not in self.keep]:
                del self.engines[old]
            self.engines[layout] = self._engine_for(self.spec.replace(threads=layout[0], streams=layout[1]))
        return self.engines[layout].with_options(max_batch_tokens=point["max_batch_tokens"],
                                                 max_batch_size=point["max_batch_size"])

    def hold(self, *points: Point) -> None:
        """Keep these points' engines loaded (the best's and the candidate's); others may be dropped."""
        self.keep = {(int(p["threads"]), int(p.get("streams", 0))) for p in points}

    def measure(self, point: Point) -> float:
        """Texts/s of ``point`` on the whole workload, tokenizing included."""
        return len(self.texts) / self._run(self.engine(point), self.texts)

    def _run(self, engine: Engine, texts: list[str]) -> float:
        if engine.backend.startswith("torch"):
            # torch's thread count is one per process: each engine sets its own before it runs.
            import torch

            torch.set_num_threads(int(engine.runtime.threads))  # type: ignore[attr-defined]
        started = time.perf_counter()
        engine.outputs(texts)
        return time.perf_counter() - started
