"""The offline engine: tokenize once, plan length-sorted batches, run them, restore input order, post-process.

One engine, several tasks. :class:`Engine` is the task-agnostic part: it loads the folder and its tokenizer, sets
the limits, starts the runtime (a ``padless optimize`` folder's variant included), and turns items into ``rows × D``
outputs in input order (:meth:`Engine.outputs`), with a per-row error where an item cannot be run. Each task adds its
own reading of those rows: :class:`Classifier` (logits → predictions, here) and
:class:`padless.embedder.Embedder` (vectors).

:class:`Classifier` is the public Python API for classification::

    from padless import Classifier
    clf = Classifier("default")
    clf(["great film", "dull and far too long"])   # -> [Prediction(label="positive", score=0.97, ...), ...]

An item is a text or a text pair for sentence-pair models (NLI, paraphrase, cross-encoders): a ``(text, text_pair)``
tuple, as in ``clf(["a fine film", ("A man is eating.", "Someone eats.")])``, or a ``{"text", "text_pair"}`` dict.

``__call__`` raises on the first item that cannot be scored; :meth:`Classifier.run` never raises for an item and
returns an :class:`~padless.errors.ItemError` in that item's place instead, so callers can account for every row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from padless import loader
from padless.config import BatchConfig, EngineSpec, ModelConfig, OutputConfig
from padless.errors import ConfigError, ItemError, ModelError, PadlessError
from padless.loader import manifest as optimized
from padless.machine import HeapTrimmer
from padless.planner import Batch, BatchPolicy, plan
from padless.postprocess import PostProcessor, Prediction
from padless.runtime import ModelInfo, Runtime, load_runtime
from padless.runtime.base import Feed
from padless.tokenize import Encoded, TextEncoder, model_max_length, type_ids_of

log = logging.getLogger("padless.engine")
Result = Prediction | ItemError
Item = str | tuple[str, str]  # a text, or a (text, text_pair) pair


@dataclass
class Stats:
    """Running totals, for progress bars and benchmarks."""

    rows: int = 0
    errors: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0  # tokens computed, padding included
    model_flops: float = 0.0  # useful FLOPs (model_flops below) of the items, padding excluded
    tokenize_s: float = 0.0
    forward_s: float = 0.0  # padding the batches and running them (outputs pads each as the runtime asks for it)

    @property
    def padding_fraction(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.real_tokens / self.padded_tokens


class Engine:
    """The task-agnostic engine (see the module docstring); a task subclasses it. Subclasses set up their own
    options, then call :meth:`_load`; the hooks below (``_resolve``, ``_read_info``, ``_tokenizer_dir``,
    ``_default_max_length``, ``_encode``, ``output_width``, ``_new_stats``) are where a task differs."""

    task = "classify"

    # -- loading -------------------------------------------------------------------------------------------------

    def _load(self, spec: EngineSpec, *, variant: str | None, runtime_options: dict[str, Any] | None) -> None:
        spec.validate()
        if spec.model.task not in ("auto", self.task):
            raise ConfigError(f"{type(self).__name__} runs the {self.task} task, not {spec.model.task}")
        self.spec = spec
        model, backend, threads = spec.model.model, spec.model.backend, spec.model.threads
        from transformers import AutoTokenizer

        self.path = self._resolve(model)
        self.folder_info = self._read_info(self.path)
        self.info: ModelInfo = self.folder_info
        tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_dir()))
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"{self.path} has no fast tokenizer (tokenizer.json); padless needs one")
        limit = model_max_length(tokenizer, _config_of(self._tokenizer_dir()))
        self.max_length = min(spec.model.max_length or self._default_max_length(limit), limit)
        spec.batch.validate(self.max_length)
        self.encoder = TextEncoder(tokenizer, max_length=self.max_length, truncate=spec.model.truncate,
                                   max_chars=spec.model.max_chars, pair_truncation=spec.model.pair_truncation)
        options = dict(runtime_options or {})
        manifest = None
        named = variant is not None
        if (backend == "auto" and optimized.is_optimized(self.path)) or named:
            # A padless optimize folder: run the variant its manifest selected (or the one named), after checking
            # its files' hashes; below, its outputs on the stored sample are checked too.
            variant, backend, chosen, manifest = optimized.selected_runtime(self.path, variant)
            options = {**chosen, **options}
        elif backend == "auto":
            backend = "torch"
        self._prepare()
        try:
            self._start(backend, variant, manifest, threads, options)
        except Exception as err:
            if manifest is None or not backend.startswith("openvino"):
                raise
            # An OpenVINO variant that cannot load or run here (no OpenVINO, no bf16 on this CPU, outputs that
            # drifted): asked for by name, that is an error; selected by `auto`, the folder's reference runs.
            reason = f"the {variant} variant cannot run here: {_one_line(err)}"
            if named:
                raise ModelError(reason) from None
            reference = str(manifest["reference"]["name"])
            log.warning("%s; running the folder's %s reference instead", reason, reference)
            self._start("torch", reference, manifest, threads, {})

    def _start(self, backend: str, variant: str | None, manifest: dict[str, Any] | None, threads: int,
               options: dict[str, Any]) -> None:
        self.backend = backend
        self.variant = variant
        # A student variant runs another folder's weights (same labels, checked when it was built): its own config
        # says what it computes, for the useful-FLOPs figures.
        self.weights_dir = Path(options["model_dir"]) if "model_dir" in options else self.path
        self.info = self.folder_info if self.weights_dir == self.path else self._read_info(self.weights_dir)
        self.runtime: Runtime = load_runtime(backend, str(self.path), self.info, threads=threads,
                                             streams=self.model_config.streams, **options)
        self.stats = self._new_stats()
        self._heap = HeapTrimmer()
        if manifest is not None:
            optimized.recheck(manifest, str(variant), lambda texts: self.outputs(texts)[0])
            self.stats = self._new_stats()

    def _resolve(self, model: str) -> Path:
        return loader.resolve(model)

    def _read_info(self, path: Path) -> ModelInfo:
        return loader.read_info(path, task="classify")

    def _tokenizer_dir(self) -> Path:
        """Where the tokenizer and the model's config are (a sentence-transformers folder's Transformer module)."""
        embedding = self.folder_info.embedding
        return self.path / embedding.transformer_path if embedding is not None else self.path

    def _default_max_length(self, limit: int) -> int:
        """The token limit when none is configured, given the model's own ``limit``."""
        return limit

    def _prepare(self) -> None:
        """Called once the folder is read, before the runtime starts (a classifier builds its post-processor)."""

    def _new_stats(self) -> Stats:
        return Stats()

    # -- settings ------------------------------------------------------------------------------------------------

    @property
    def model_config(self) -> ModelConfig:
        return self.spec.model

    @property
    def batch_config(self) -> BatchConfig:
        return self.spec.batch

    @property
    def policy(self) -> BatchPolicy:
        """How this engine plans batches: its batch limits, its token limit as the widest batch, and the runtime's
        width rounding and per-batch price where the config defers to it. The server's batcher and the Ray tiers
        plan with this same value."""
        b = self.spec.batch
        return BatchPolicy(max_batch_tokens=b.max_batch_tokens, max_batch_size=b.max_batch_size,
                           width_multiple=self.width_multiple, max_width=self.max_length,
                           batch_overhead_tokens=self.batch_overhead_tokens)

    @property
    def width_multiple(self) -> int:
        """The multiple batch widths are rounded up to: the configured one, or (0) the runtime's choice. The
        server's batcher and the Ray tiers plan with it too, so served batches are as wide as offline ones."""
        return self.batch_config.width_multiple or self.runtime.width_multiple

    @property
    def batch_overhead_tokens(self) -> int:
        """The runtime's fixed cost of one forward call in tokens (the planner's price of one more batch); the
        server's batcher and the Ray tiers plan with it too."""
        return self.runtime.batch_overhead_tokens

    @property
    def output_width(self) -> int:
        """Columns of one output row (a classifier's labels; an embedder's vector size)."""
        return len(self.info.id2label) or 1

    # -- running -------------------------------------------------------------------------------------------------

    def _encode(self, items: Sequence[object]) -> list[Encoded]:
        """Token ids (or the item's error) for each item, in input order."""
        return self.encoder.encode(items)

    def outputs(self, items: Sequence[object]) -> tuple[np.ndarray, list[ItemError | None]]:
        """The runtime's rows (``items × output_width``, input order) and, per row, the error that kept it from
        running (a NaN row)."""
        started = time.perf_counter()
        encoded = self._encode(items)
        self.stats.tokenize_s += time.perf_counter() - started
        errors: list[ItemError | None] = [e if isinstance(e, ItemError) else None for e in encoded]
        out = np.full((len(items), self.output_width), np.nan, dtype=np.float32)
        good = [i for i, e in enumerate(errors) if e is None]
        if good:
            out[good] = self.forward_rows([encoded[i] for i in good])  # type: ignore[misc]
        self.stats.rows += len(items)
        self.stats.errors += len(items) - len(good)
        return out, errors

    def forward_rows(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Run token-id rows (special tokens included, each at most ``max_length``) in planned batches; returns
        ``rows × output_width`` in the order given. Updates the stats' batch and token counts."""
        out = np.full((len(ids), self.output_width), np.nan, dtype=np.float32)
        # Costliest first: a runtime with several streams (OpenVINO) runs the plan's batches concurrently, and a
        # big batch started last would leave the other streams idle while it finishes. Order is restored below.
        batches = sorted(self.plan([len(x) for x in ids]), key=lambda b: -b.padded_tokens)
        started = time.perf_counter()
        results = self.runtime.forward_many(self._feeds(ids, batches))
        self.stats.forward_s += time.perf_counter() - started
        for batch, rows in zip(batches, results, strict=True):
            out[list(batch.indices)] = rows
            self._count([len(ids[k]) for k in batch.indices], batch.width)
        return out

    def _feeds(self, ids: Sequence[Sequence[int]], batches: list[Batch]) -> Iterator[Feed]:
        """Each batch's padded feed, the C heap trimmed between batches now and then (offline runs only: the
        server's batcher calls :meth:`forward_padded`, where a trim would land on a request's latency)."""
        for b in batches:
            self._heap.tick()
            yield self.pad([ids[k] for k in b.indices], b.width)

    def plan(self, lengths: Sequence[int]) -> list[Batch]:
        """Batches for rows of these token lengths, under :attr:`policy`."""
        return plan(lengths, self.policy)

    def forward_padded(self, rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
        """Right-pad ``rows`` to ``width`` and run the runtime on that one batch (the server's batcher calls this);
        updates the stats."""
        started = time.perf_counter()
        outputs = self.runtime.forward(*self.pad(rows, width))
        self.stats.forward_s += time.perf_counter() - started
        self._count([len(row) for row in rows], width)
        return outputs

    def pad(self, rows: Sequence[Sequence[int]], width: int) -> Feed:
        """``rows`` right-padded to ``width``: ids, mask, and segments where any row is a text pair
        (:class:`~padless.tokenize.PairIds` bring theirs; None otherwise)."""
        input_ids = np.full((len(rows), width), self.encoder.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        segments = [type_ids_of(row) for row in rows]
        types = None if all(s is None for s in segments) else np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, segment) in enumerate(zip(rows, segments)):
            input_ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
            if types is not None and segment is not None:
                types[r, : len(row)] = segment
        return input_ids, mask, types

    def _count(self, real: Sequence[int], width: int) -> None:
        self.stats.batches += 1
        self.stats.real_tokens += sum(real)
        self.stats.padded_tokens += len(real) * width
        self.stats.model_flops += sum(model_flops(self.info, n) for n in real)

    def with_options(self, **changes: Any) -> Any:
        """A shallow copy sharing the loaded runtime, with other batch limits (for benchmarks)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.spec = replace(self.spec, batch=replace(self.spec.batch, **changes))
        clone.stats = self._new_stats()
        return clone

    def describe_backend(self) -> dict[str, Any]:
        """What runs the batches: the runtime's description, the widths it is fed and the variant, for ``/info``."""
        return {**self.runtime.describe(), "width_multiple": self.width_multiple,
                **({"variant": self.variant} if self.variant else {})}


class Classifier(Engine):
    """A text classifier that batches without padding waste. See the module docstring."""

    def __init__(
        self,
        model: str = "default",
        *,
        backend: str = "auto",
        variant: str | None = None,
        max_length: int | None = None,
        truncate: bool = True,
        max_chars: int = ModelConfig.max_chars,
        threads: int = 0,
        streams: int = ModelConfig.streams,
        max_batch_tokens: int = BatchConfig.max_batch_tokens,
        max_batch_size: int = BatchConfig.max_batch_size,
        width_multiple: int = BatchConfig.width_multiple,
        runtime_options: dict[str, Any] | None = None,
        pair_truncation: str = ModelConfig.pair_truncation,
    ) -> None:
        spec = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                             max_chars=max_chars, threads=threads, streams=streams, pair_truncation=pair_truncation,
                             max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             width_multiple=width_multiple)
        self._load(spec, variant=variant, runtime_options=runtime_options)

    @classmethod
    def from_spec(cls, spec: EngineSpec, *, variant: str | None = None,
                  runtime_options: dict[str, Any] | None = None) -> Classifier:
        """A classifier running ``spec`` (validated first: an impossible one raises one ConfigError line)."""
        clf = cls.__new__(cls)
        clf._load(spec, variant=variant, runtime_options=runtime_options)
        return clf

    def _prepare(self) -> None:
        self.post = PostProcessor(self.info.id2label, self.info.problem_type)

    @property
    def labels(self) -> list[str]:
        return self.post.labels

    def __call__(self, texts: str | Sequence[Item], *, top_k: int = 1, raw_scores: bool = False) -> Any:
        """Classify one text (returns a Prediction) or a list of texts and pairs (returns a list); raises on an
        unscorable item. A top-level tuple is a list of texts; write a lone pair as ``[(text, text_pair)]``."""
        single = isinstance(texts, str)
        results = self.run([texts] if single else list(texts), top_k=top_k, raw_scores=raw_scores)
        for i, result in enumerate(results):
            if isinstance(result, ItemError):
                raise type(result)(f"item {i}: {result}")
        return results[0] if single else results

    def run(self, texts: Sequence[object], *, top_k: int = 1, raw_scores: bool = False) -> list[Result]:
        """Classify every text or pair; an item that cannot be scored gets its ItemError in its place. Order is
        kept."""
        OutputConfig(top_k=top_k, raw_scores=raw_scores).validate()
        logits, errors = self.logits(texts)
        good = [i for i, e in enumerate(errors) if e is None]
        results: list[Result] = list(errors)  # type: ignore[arg-type]
        if good:
            for i, pred in zip(good, self.post(logits[good], top_k=top_k, raw_scores=raw_scores)):
                results[i] = pred
        return results

    def logits(self, texts: Sequence[object]) -> tuple[np.ndarray, list[ItemError | None]]:
        """Raw logits (``rows × labels``, input order) and, per row, the error that kept it unscored (NaN row)."""
        return self.outputs(texts)

    def with_options(self, **changes: Any) -> Classifier:
        """A shallow copy sharing the loaded runtime, with other batch limits (for benchmarks)."""
        clone: Classifier = super().with_options(**changes)
        return clone

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_config.model,
            "path": str(self.path),
            "labels": self.labels,
            "max_length": self.max_length,
            "truncate": self.model_config.truncate,
            "pair_truncation": self.model_config.pair_truncation,
            "max_batch_tokens": self.batch_config.max_batch_tokens,
            "max_batch_size": self.batch_config.max_batch_size,
            **self.describe_backend(),
        }


def model_flops(info: ModelInfo, length: int) -> float:
    """Useful forward FLOPs for one text of ``length`` tokens: 2·P·L + 4·L²·A, A the attention's inner width summed
    over layers (hidden size × layers, less the heads a pruned model removed)."""
    width = info.attention_width or info.hidden_size * info.num_layers
    return 2.0 * info.non_embedding_params * length + 4.0 * length * length * width


def _one_line(err: BaseException) -> str:
    """An exception as one line: padless's own message, or another's type and first line that is not a source
    location (OpenVINO's messages start with several ``Exception from src/…`` lines)."""
    if isinstance(err, PadlessError):
        return str(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ")] or lines or ["no message"]
    return f"{type(err).__name__}: {said[0]}"


def _config_of(path: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path))
