"""The service behind the HTTP routes: cache → admission → tokenize (thread pool) → batcher → post-process.

It owns the loaded engine (a :class:`~padless.engine.Classifier` or an :class:`~padless.embedder.Embedder`: one
code path, the task decides only what a row is), its ``scorer`` (the local :class:`Batcher`, or another
:class:`Scorer`), the result cache and the readiness state. Routes only translate HTTP to :meth:`Service.run` and
back, and finish the rows as their task does (:attr:`Service.classifier`, :attr:`Service.embedder`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from padless import __version__
from padless.batcher import Batcher
from padless.config import QueueConfig, ServerConfig
from padless.embedder import Embedder
from padless.engine import Classifier, Engine
from padless.errors import (
    ConfigError,
    DeadlineExceededError,
    InputError,
    ItemError,
    ModelError,
    NotReadyError,
    TooLongError,
)
from padless.loader.sentence import named_prompt, read_prompts
from padless.postprocess import Prediction
from padless.server.cache import ResultCache, model_revision
from padless.server.metrics import Metrics
from padless.tokenize import TRUNCATION_SIDES, TextEncoder

log = logging.getLogger("padless.server")


@dataclass
class ItemResult:
    """One input's outcome: a prediction (with its token count) or the item's error."""

    prediction: Prediction | None
    error: ItemError | None
    tokens: int = 0
    cached: bool = False


@dataclass
class Timing:
    tokenize_s: float = 0.0
    queue_and_forward_s: float = 0.0
    post_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    """What the service needs from the step after tokenizing: admission before it, then logits rows for token ids.

    :class:`padless.batcher.Batcher` (the local model) is the one ``padless serve`` uses; ``padless serve --ray``
    puts remote length tiers in its place (:mod:`padless.ray.serve_router`)."""

    healthy: bool
    reserved_inputs: int

    def admit(self, texts: Sequence[object]) -> Any: ...

    def release(self, ticket: Any) -> None: ...

    def submit(self, ids: Sequence[Sequence[int]], *, deadline: float,
               request_id: str) -> list[asyncio.Future[np.ndarray]]: ...

    @property
    def idle(self) -> bool: ...

    @property
    def queued_inputs(self) -> int: ...

    @property
    def queued_tokens(self) -> int: ...

    async def stop(self) -> None: ...


# Threads that tokenize (and serve /tokenize and /decode) beside the event loop; /info reports the number.
TOKENIZE_WORKERS = 2


class Service:
    """A model served: classification or embeddings, by the engine's task. Create in the event loop with
    :meth:`start`; stop with :meth:`stop`."""

    def __init__(self, engine: Engine, *, server: ServerConfig, queue: QueueConfig) -> None:
        self.engine = engine
        self.task = engine.task
        self.server_config = server
        self.queue_config = queue
        self.metrics = Metrics()
        self.revision = model_revision(Path(engine.path))
        enc = engine.encoder
        # One encoder per (truncate, truncation side), each with its own copy of the tokenizer but the first: a fast
        # tokenizer holds its truncation settings, and two threads tokenizing with other limits must not share them.
        self.encoders = {(flag, side): TextEncoder(enc.tokenizer, truncate=flag, max_length=engine.max_length,
                                                   max_chars=enc.max_chars, pair_truncation=enc.pair_truncation,
                                                   truncation_side=side, own_tokenizer=(flag, side) != (True, "right"))
                         for flag in (True, False) for side in TRUNCATION_SIDES}
        # The prompts a request may name: an embedding folder's (with its default), or a classifier folder's
        # config_sentence_transformers.json (a cross-encoder may have them), without a default.
        embedding = engine.embedding if isinstance(engine, Embedder) else None
        self._prompts = dict(embedding.prompts) if embedding is not None else read_prompts(Path(engine.path))
        self._default_prompt = embedding.default_prompt_name if embedding is not None else None
        self.cache = ResultCache(server.cache_size)
        self._tokenize_pool = ThreadPoolExecutor(max_workers=TOKENIZE_WORKERS, thread_name_prefix="padless-tokenize")
        self.scorer: Scorer | None = None  # the local Batcher, made in start(); a subclass may put another Scorer
        self.warmed = False
        self.draining = False
        self.in_flight = 0
        self.last_success = 0.0

    # -- the task ---------------------------------------------------------------------------------------------------

    @property
    def classifier(self) -> Classifier:
        """The engine, for the classify routes; an embedding model answers them with TEI's 424 and one line."""
        if not isinstance(self.engine, Classifier):
            raise ModelError("model is not a classifier: it is an embedding model; use /embed or /v1/embeddings")
        return self.engine

    @property
    def embedder(self) -> Embedder:
        """The engine, for the embed routes; a classifier answers them with TEI's 424 and one line."""
        if not isinstance(self.engine, Embedder):
            raise ModelError("model is not an embedding model: it is a classifier; use /predict or /v1/classify")
        return self.engine

    def prompt_names(self) -> list[str]:
        """The prompts a request may name."""
        return sorted(self._prompts)

    def prompt(self, name: str | None) -> str:
        """The text put before each input: the named prompt, else an embedding folder's default prompt (if any).
        An unknown name is the request's error (422)."""
        try:
            return named_prompt(self._prompts, name, default=self._default_prompt)
        except ConfigError as err:
            raise InputError(str(err)) from None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.engine.runtime.streams > 1:
            # The batcher runs one batch at a time: each batch's rows are split across the streams, and a
            # one-row request runs on one stream's share of the threads.
            log.warning("the runtime has %d streams, but the server runs one batch at a time: load the engine "
                        "with streams=1 for the lowest latency (padless serve does)", self.engine.runtime.streams)
        batcher = Batcher.for_engine(self.engine, queue=self.queue_config, observer=self.metrics,
                                     forward=self._forward)
        self.scorer = batcher
        self.metrics.bind_queue(batcher)
        batcher.start()
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(None, self.engine.runtime.warmup), timeout=120)
        self.warmed = True

    async def stop(self) -> None:
        if self.scorer is not None:
            await self.scorer.stop()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    def _forward(self, rows: Any, width: int) -> np.ndarray:
        return self.engine.forward_padded(rows, width)

    # -- readiness ------------------------------------------------------------------------------------------------

    async def ready(self) -> tuple[bool, str]:
        """Ready means: warmed, not draining, the worker healthy, and the model really answering."""
        if not self.warmed:
            return False, "warming up"
        if self.draining:
            return False, "draining"
        if self.scorer is None or not self.scorer.healthy:
            return False, "model unhealthy"
        if time.monotonic() - self.last_success < 5.0:
            return True, "ok"
        try:  # a real 1-token forward through the same queue as user traffic
            futures = self.scorer.submit([[self.engine.encoder.pad_id]], deadline=time.monotonic() + 5.0,
                                          request_id="readiness")
            await asyncio.wait_for(asyncio.gather(*futures), timeout=5.0)
        except Exception:
            return False, "model did not answer"
        self.last_success = time.monotonic()
        return True, "ok"

    def info(self) -> dict[str, Any]:
        c, s, q = self.engine, self.server_config, self.queue_config
        return {
            "model": c.model_config.model, "model_path": str(c.path), "revision": self.revision, "task": self.task,
            **self._task_info(), "version": __version__, "backend": c.describe_backend(),
            "limits": {"max_length": c.max_length, "max_chars": c.encoder.max_chars,
                       "max_inputs_per_request": s.max_inputs_per_request, "max_body_bytes": s.max_body_bytes,
                       "max_batch_tokens": c.batch_config.max_batch_tokens,
                       "max_batch_size": c.batch_config.max_batch_size, "max_queue_inputs": q.max_queue_inputs,
                       "max_queue_tokens": q.max_queue_tokens, "request_timeout_s": s.request_timeout_s},
            "batching": {"max_wait_ms": q.max_wait_ms, "lookahead": q.lookahead},
            "cache_size": s.cache_size,
            **self._tei_info(),
        }

    def _task_info(self) -> dict[str, Any]:
        """A classifier's labels; an embedder's vector size, pooling, normalisation and prompts."""
        if isinstance(self.engine, Classifier):
            return {"labels": self.engine.labels, "problem_type": self.engine.info.problem_type}
        e = self.embedder
        return {"embedding": {"dimension": e.output_width, "default_dimensions": e.dimensions,
                              "pooling": e.embedding.pooling, "normalized_in_graph": e.normalize,
                              "prompts": sorted(e.embedding.prompts),
                              "default_prompt_name": e.embedding.default_prompt_name}}

    def _tei_info(self) -> dict[str, Any]:
        """The fields of TEI's ``/info`` that its clients read (a 1-label model is a ``reranker``)."""
        c, s, q = self.engine, self.server_config, self.queue_config
        if isinstance(c, Classifier):
            id2label = {str(i): label for i, label in enumerate(c.labels)}
            kind = "reranker" if len(c.labels) == 1 else "classifier"
            model_type: dict[str, Any] = {kind: {"id2label": id2label,
                                                 "label2id": {v: int(k) for k, v in id2label.items()}}}
        else:
            model_type = {"embedding": {"pooling": self.embedder.embedding.pooling}}
        return {"model_id": c.model_config.model, "model_sha": None, "model_dtype": c.runtime.describe().get("dtype"),
                "model_type": model_type,
                "max_concurrent_requests": q.max_queue_inputs, "max_input_length": c.max_length,
                "max_batch_tokens": c.batch_config.max_batch_tokens,
                "max_batch_requests": c.batch_config.max_batch_size,
                "max_client_batch_size": s.max_inputs_per_request, "auto_truncate": True,
                "tokenization_workers": TOKENIZE_WORKERS, "sha": None, "docker_label": None}

    # -- the tokenizer ----------------------------------------------------------------------------------------------

    async def tokenize(self, texts: list[str], *, add_special_tokens: bool, deadline: float) -> list[list[dict]]:
        """TEI's ``/tokenize``: every token of each text (not truncated), special tokens without offsets."""
        if self.draining:
            raise NotReadyError("the server is shutting down")
        cap = self.engine.encoder.max_chars
        for i, text in enumerate(texts):
            if len(text) > cap:
                raise TooLongError(f"input {i} has {len(text)} characters, over the limit of {cap}")
        tok = self.engine.encoder.tokenizer

        def run() -> list[list[dict]]:
            enc = tok(texts, add_special_tokens=add_special_tokens, truncation=False, return_offsets_mapping=True,
                      return_special_tokens_mask=True, return_attention_mask=False, return_token_type_ids=False,
                      verbose=False)
            out = []
            for i, text in enumerate(texts):
                tokens = []
                for tid, (start, stop), special, piece in zip(enc["input_ids"][i], enc["offset_mapping"][i],
                                                              enc["special_tokens_mask"][i], enc.tokens(i)):
                    if special:
                        tokens.append({"id": tid, "text": piece, "special": True, "start": None, "stop": None})
                    else:
                        tokens.append({"id": tid, "text": text[start:stop], "special": False, "start": start,
                                       "stop": stop})
                out.append(tokens)
            return out

        return await self._in_pool(run, deadline, "tokenized")

    async def decode(self, batch: list[list[int]], *, skip_special_tokens: bool, deadline: float) -> list[str]:
        """TEI's ``/decode``: the text of each list of token ids; an id outside the vocabulary is refused."""
        if self.draining:
            raise NotReadyError("the server is shutting down")
        tok = self.engine.encoder.tokenizer
        size = len(tok)
        for ids in batch:
            for tid in ids:
                if tid >= size:
                    raise InputError(f"token id {tid} is outside the vocabulary (ids 0..{size - 1})")
        return await self._in_pool(lambda: tok.batch_decode(batch, skip_special_tokens=skip_special_tokens),
                                   deadline, "decoded")

    async def _in_pool(self, work: Any, deadline: float, what: str) -> Any:
        """Run ``work`` on the tokenizer threads within the request's deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError(f"the request's deadline passed before it was {what}")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._tokenize_pool, work), timeout=left)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(f"the request's deadline passed while it was {what}") from None

    # -- running inputs ---------------------------------------------------------------------------------------------

    async def run(self, texts: list[Any], *, truncate: bool, deadline: float, request_id: str,
                  direction: str = "right", receive: Any = None) -> tuple[list[ItemResult], list[np.ndarray | None],
                                                                          Timing]:
        """Run ``texts`` (texts, or ``(text, text_pair)`` tuples for a classifier; any prompt already in front);
        returns per-item results (errors in place) and output rows: logits, or an embedder's vectors before the
        request's normalisation and dimensions. ``direction``: the side truncation cuts. Raises for the request."""
        if self.draining or self.scorer is None:
            raise NotReadyError("the server is shutting down" if self.draining else "the server is starting")
        timing = Timing()
        encoder = self.encoders[(truncate, direction)]
        limit = encoder.max_length
        keys = [(self.revision, t, truncate, direction, limit) if _cacheable(t) else None for t in texts]
        hits = [self.cache.get(k) if k is not None else None for k in keys]
        rows: list[np.ndarray | None] = [hit[0] if hit is not None else None for hit in hits]
        todo = [i for i, row in enumerate(rows) if row is None]
        if len(todo) < len(texts):
            self.metrics.cache_hits.inc(len(texts) - len(todo))
        if todo:
            self.metrics.cache_misses.inc(len(todo))
        results: list[ItemResult | None] = [None] * len(texts)
        for i, hit in enumerate(hits):
            if hit is not None:
                results[i] = ItemResult(prediction=None, error=None, tokens=hit[1], cached=True)
        if todo:
            ticket = self.scorer.admit([texts[i] for i in todo])
            self.in_flight += 1
            try:
                await self._run(texts, todo, encoder, rows, results, keys, ticket, deadline, request_id, timing,
                                receive)
            finally:
                self.in_flight -= 1
                self.scorer.release(ticket)
        return results, rows, timing  # type: ignore[return-value]

    async def run_whole(self, texts: list[Any], *, truncate: bool, deadline: float, request_id: str,
                        direction: str = "right", receive: Any = None) -> tuple[np.ndarray, list[ItemResult]]:
        """:meth:`run` as TEI's routes answer: the rows stacked (input order) and the results, or the first item's
        error raised for the whole request (input ``i`` named)."""
        results, rows, _ = await self.run(texts, truncate=truncate, deadline=deadline, request_id=request_id,
                                          direction=direction, receive=receive)
        for i, result in enumerate(results):
            if result.error is not None:
                raise type(result.error)(f"input {i}: {result.error}")
        self.metrics.inputs.labels("ok").inc(len(texts))
        return np.stack(rows), results  # type: ignore[arg-type]

    async def _run(self, texts: list[Any], todo: list[int], encoder: TextEncoder, rows: list[np.ndarray | None],
                   results: list[ItemResult | None], keys: list[Any], ticket: Any, deadline: float, request_id: str,
                   timing: Timing, receive: Any) -> None:
        assert self.scorer is not None
        started = time.monotonic()
        encoded = await self._in_pool(lambda: encoder.encode([texts[i] for i in todo]), deadline, "tokenized")
        timing.tokenize_s = time.monotonic() - started
        self.metrics.stage.labels("tokenize").observe(timing.tokenize_s)
        good = []
        for i, enc in zip(todo, encoded):
            if isinstance(enc, ItemError):
                results[i] = ItemResult(prediction=None, error=enc)
            else:
                good.append((i, enc))
        if not good:
            return
        futures = self.scorer.submit([enc for _, enc in good], deadline=deadline, request_id=request_id)
        waited = time.monotonic()
        gathered = asyncio.gather(*futures)
        watcher = asyncio.ensure_future(_watch_disconnect(receive)) if receive else None
        try:
            pending = {gathered} | ({watcher} if watcher else set())
            done, _ = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if gathered not in done:
                gathered.cancel()  # cancels every item's future, so the batcher drops them unrun
                for f in futures:
                    f.cancel()
                if watcher is not None and watcher in done:
                    raise asyncio.CancelledError()  # the client is gone: nobody to answer
                raise DeadlineExceededError("the request did not complete before its deadline")
            logits = gathered.result()
        finally:
            if watcher is not None:
                watcher.cancel()
        timing.queue_and_forward_s = time.monotonic() - waited
        self.last_success = time.monotonic()
        for (i, enc), row in zip(good, logits):
            rows[i] = row
            results[i] = ItemResult(prediction=None, error=None, tokens=len(enc))
            self.cache.put(keys[i], (row, len(enc)))


def _cacheable(item: object) -> bool:
    """Texts and pairs of texts are result-cache keys (a pair as its tuple); anything else is refused per item."""
    if isinstance(item, tuple):
        return len(item) == 2 and all(isinstance(t, str) for t in item)
    return isinstance(item, str)


async def _watch_disconnect(receive: Any) -> None:
    """Return once the client has gone away (bounded by the request's own deadline in the caller).

    The body is already read, so the ASGI ``receive`` blocks until the server reports ``http.disconnect``: one
    waiting call per request, no polling (polling every request wakes the event loop per request per tick, which
    collapses throughput under overload).
    """
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
