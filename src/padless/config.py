"""Frozen configuration, one dataclass per concern, each with visible defaults.

Every field has a CLI flag (``--max-batch-tokens``) and an environment variable (``PADLESS_MAX_BATCH_TOKENS``); the
CLI reads both through typer, the Python API through :func:`from_env`. ``validate()`` refuses impossible
combinations with one clear line (a :class:`~padless.errors.ConfigError`) before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, TypeVar

from padless.errors import ConfigError

# Kept in step with padless.runtime.BACKENDS (config must not import the runtimes: torch is slow to import).
BACKENDS = ("auto", "torch", "torch-bf16", "torch-fp16", "torch-int8", "onnx", "onnx-int8", "openvino", "openvino-bf16",
            "openvino-int8", "openvino-int8-bf16", "dummy")
OPENVINO_BACKENDS = tuple(b for b in BACKENDS if b.startswith("openvino"))
# What a model runs for: auto (the folder's own task, padless.loader.detect_task), classify (labels: classifiers,
# cross-encoders) or embed (pooled vectors).
TASKS = ("auto", "classify", "embed")
# Kept in step with padless.tokenize.PAIR_TRUNCATIONS (transformers' truncation strategies for a text pair).
PAIR_TRUNCATIONS = ("longest_first", "only_first", "only_second")


# What every server (padless serve, a Ray Serve tier, bench serve's engine) runs: its batcher hands the runtime one
# batch at a time, and a lone one-row request on one stream's share of the threads ran slower (OpenVINO fp32 on 1
# thread of 2: 1.8x at 16 and 256 tokens).
SERVING_STREAMS = 1

# padless serve --ray: a long-tier request this old (ms) lifts its replica out of SCHED_IDLE
# (padless.ray.tier_priority); one default for the CLI and serve_app.
LONG_PROMOTE_MS = 100


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which model runs, where, and how its input is cut."""

    model: str = "default"
    # auto: the folder's (a sentence-transformers or head-less folder embeds); "default" with embed is the default
    # embedding model (all-MiniLM-L6-v2), with auto or classify padless's default classifier.
    task: str = "auto"
    backend: str = "auto"  # auto: a padless optimize folder's selected variant, else torch
    max_length: int | None = None  # None: the model's own limit (e.g. 512 for BERT)
    truncate: bool = True  # False: over-long input is a per-row error instead of being cut
    max_chars: int = 20_000  # cap applied before tokenizing, so a 10 MB line cannot stall the tokenizer
    threads: int = 0  # 0: every core this process may use
    # Batches computed at once (OpenVINO streams, the threads split between them); 0: the backend's choice — for
    # OpenVINO its THROUGHPUT setting offline (2 on 2 cores); servers run SERVING_STREAMS.
    streams: int = 0
    pair_truncation: str = "longest_first"  # how an over-long text pair is cut: longest_first, only_first, only_second

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 (room for the special tokens), got {self.max_length}")
        if self.max_chars < 1:
            raise ConfigError(f"max_chars must be positive, got {self.max_chars}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (all cores) or positive, got {self.threads}")
        if self.streams < 0:
            raise ConfigError(f"streams must be 0 (the backend's choice) or positive, got {self.streams}")
        if self.streams > 1 and self.backend not in ("auto", *OPENVINO_BACKENDS):
            raise ConfigError(f"streams > 1 needs an OpenVINO backend; {self.backend} runs one batch at a time")
        if self.pair_truncation not in PAIR_TRUNCATIONS:
            raise ConfigError(f"unknown pair truncation {self.pair_truncation!r}; choose one of "
                              f"{', '.join(PAIR_TRUNCATIONS)}")


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """How the planner packs sorted inputs into batches. Padded tokens = rows × longest row."""

    max_batch_tokens: int = 8192
    max_batch_size: int = 128
    # Batch widths rounded up to a multiple of this (padless.planner.padded_width); 0 = the backend's choice
    # (Runtime.width_multiple: 16 on OpenVINO bf16/int8 on an AMX CPU, where aligned widths run faster; 1 elsewhere).
    width_multiple: int = 0
    chunk_rows: int = 10_000  # rows read, sorted and committed together when streaming a file
    # --ray: rows per worker call. Smaller than a local chunk so that a single file still spreads over every worker
    # (20,000 rows in 10,000-row calls ran on one worker while the other was still loading its model); 2,048 rows is
    # plenty to sort by length (padding stayed 0.3% on the realistic mix).
    ray_chunk_rows: int = 2_048

    def validate(self, max_length: int | None = None) -> None:
        if self.max_batch_tokens < 1 or self.max_batch_size < 1 or self.chunk_rows < 1 or self.ray_chunk_rows < 1:
            raise ConfigError("max_batch_tokens, max_batch_size and chunk_rows must all be positive")
        if self.width_multiple < 0:
            raise ConfigError(f"width_multiple must be 0 (the backend's choice) or positive, got {self.width_multiple}")
        if max_length is not None and max_length > self.max_batch_tokens:
            raise ConfigError(
                f"max_length ({max_length}) is larger than max_batch_tokens ({self.max_batch_tokens}): "
                "a single full-length input could never be scheduled"
            )


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """The resolved engine settings, one value: which model runs how (:class:`ModelConfig`) and how its inputs are
    batched (:class:`BatchConfig`). Every face (CLI, Python API, server, Ray Data, Ray Serve tiers) hands it whole."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)

    @classmethod
    def of(cls, **flat: Any) -> EngineSpec:
        """Built from flat keyword arguments, each a field of ModelConfig or BatchConfig; an unknown name raises
        :class:`TypeError` as a constructor would. Not validated (call :meth:`validate`)."""
        model, batch = _split(flat)
        return cls(model=ModelConfig(**model), batch=BatchConfig(**batch))

    @staticmethod
    def flat_names() -> tuple[str, ...]:
        """Every name :meth:`of` takes: ModelConfig's fields, then BatchConfig's."""
        return tuple(f.name for c in (ModelConfig, BatchConfig) for f in dataclasses.fields(c))

    def flat(self) -> dict[str, Any]:
        """The inverse of :meth:`of`: every field by its flat name."""
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.batch)}

    def replace(self, **flat: Any) -> EngineSpec:
        """A copy with some flat fields changed (``spec.replace(backend="dummy", threads=2)``)."""
        model, batch = _split(flat)
        return EngineSpec(model=dataclasses.replace(self.model, **model),
                          batch=dataclasses.replace(self.batch, **batch))

    def validate(self) -> None:
        """Both parts' checks, and the batch limits against ``max_length``: one ConfigError line if impossible."""
        self.model.validate()
        self.batch.validate(self.model.max_length)


def _split(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    batch_names = {f.name for f in dataclasses.fields(BatchConfig)}
    unknown = sorted(set(flat) - model_names - batch_names)
    if unknown:
        raise TypeError(f"unknown engine setting(s): {', '.join(unknown)}")
    return ({k: v for k, v in flat.items() if k in model_names}, {k: v for k, v in flat.items() if k in batch_names})


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """What each prediction carries."""

    top_k: int = 1  # labels kept per row; 0 keeps all
    raw_scores: bool = False  # logits instead of softmax/sigmoid probabilities

    def validate(self) -> None:
        if self.top_k < 0:
            raise ConfigError(f"top_k must be 0 (all labels) or positive, got {self.top_k}")


@dataclass(frozen=True, kw_only=True)
class QueueConfig:
    """The online batcher: how long it waits to fill a batch and how much it admits before answering 429."""

    max_wait_ms: float = 2.0  # a lightly loaded server waits at most this long for more requests
    max_queue_inputs: int = 2048
    max_queue_tokens: int = 262_144
    lookahead: int = 256  # queued items the batch former looks at (oldest first), so long inputs cannot starve
    forward_timeout_s: float = 60.0  # a forward pass slower than this fails its requests and marks the server unready

    def validate(self, batch: BatchConfig | None = None) -> None:
        if self.max_wait_ms < 0 or self.forward_timeout_s <= 0:
            raise ConfigError("max_wait_ms must be >= 0 and forward_timeout_s > 0")
        if self.max_queue_inputs < 1 or self.lookahead < 1:
            raise ConfigError("max_queue_inputs and lookahead must be positive")
        if batch is not None and self.max_queue_tokens < batch.max_batch_tokens:
            raise ConfigError(f"max_queue_tokens ({self.max_queue_tokens}) is smaller than max_batch_tokens "
                              f"({batch.max_batch_tokens}): the queue could never hold a full batch")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The HTTP front: where it listens, what it accepts, how it shuts down."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # required on every route but /health when set; never logged
    cors_origins: str = ""  # comma-separated; empty keeps CORS closed
    max_body_bytes: int = 2_000_000
    max_inputs_per_request: int = 256
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    cache_size: int = 10_000  # result cache entries; 0 disables
    # An idle connection stays open this long. Longer than clients keep idle pooled connections (httpx 5 s, aiohttp
    # 15 s), so a client reusing one never races the server closing it (a reset, and the request lost). Ray Serve
    # uses 90 s too; uvicorn's own 5 s equals httpx's and lost one request of a 1,000-request burst in a test run.
    keep_alive_s: int = 90

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.max_body_bytes < 1 or self.max_inputs_per_request < 1:
            raise ConfigError("max_body_bytes and max_inputs_per_request must be positive")
        if self.request_timeout_s <= 0 or self.drain_timeout_s < 0 or self.cache_size < 0:
            raise ConfigError("request_timeout_s must be > 0; drain_timeout_s and cache_size >= 0")
        if self.keep_alive_s < 1:
            raise ConfigError(f"keep-alive must be at least 1 s, got {self.keep_alive_s}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("api_key must be at least 8 characters")


T = TypeVar("T")


def _parse(raw: str, kind: Any) -> Any:
    text = str(kind)
    if "bool" in text:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"not a boolean: {raw!r}")
    if "int" in text:
        if raw.lower() in ("", "none") and "None" in text:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"not an integer: {raw!r}") from None
    return raw


def from_env(cls: type[T], env: dict[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from defaults, then ``PADLESS_<FIELD>`` environment variables, then ``overrides``."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"PADLESS_{field.name.upper()}"
        if key in env:
            try:
                values[field.name] = _parse(env[key], field.type)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)
