"""``padless serve --ray``: padless's HTTP API as a Ray Serve application, with replicas and length tiers.

::

    app = padless.ray.serve_app("./my-model", replicas=2, long_threshold=128, long_replicas=1)
    serve.run(app)                      # or: serve run padless.ray.serve:build_app model=./my-model replicas=2

Shape: one ingress deployment wraps padless's own FastAPI app (``@serve.ingress``), so every route, shape, limit
and error envelope is ``padless serve``'s. It tokenizes once (padless's encoder), sends inputs of at most
``long_threshold`` tokens to the *short* tier and longer ones to the *long* tier (token ids, not text; see
:mod:`padless.ray.serve_router`), and post-processes the re-joined rows as ``padless serve`` does. Each tier is a
deployment of its own (:mod:`padless.ray.serve_tier`), whose replicas run padless's token-budget batcher and
runtime, optionally on another model (same tokenizer and labels) or backend. Without ``long_threshold`` there is one
tier. Ray Serve's own limits are set from padless's queue limits: a tier replica takes up to ``max_queue_inputs``
calls (``max_ongoing_requests``; its batcher bounds the inputs and tokens) and an ingress parks at most as many more
per tier (``max_queued_requests``); past either the client gets padless's 429, never Ray's bare 503.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from padless.config import LONG_PROMOTE_MS, SERVING_STREAMS, EngineSpec, QueueConfig, ServerConfig
from padless.errors import ConfigError
from padless.ray.cluster import biggest_node_cpus, import_ray
from padless.ray.serve_router import RayService, RemoteRuntime
from padless.ray.serve_tier import TierReplica, TierSettings
from padless.ray.tier_priority import short_tier_threads

ray = import_ray()
from ray import serve  # noqa: E402  (after import_ray, which turns Ray's usage statistics off first)

APP_NAME = "padless"


@dataclass(frozen=True, kw_only=True)
class IngressSettings:
    """What the ingress replica needs: the short tier's engine (its model's tokenizer and limits; its backend for
    /info until a tier has answered), and padless's server options."""

    engine: EngineSpec
    long_threshold: int
    server: ServerConfig
    queue: QueueConfig
    drain_signal: str | None = None


@serve.deployment(name="PadlessIngress")
@serve.ingress()
class PadlessIngress:
    """The HTTP ingress: padless's FastAPI app around a :class:`~padless.ray.serve_router.RayService`."""

    def __init__(self, settings: IngressSettings, short: Any, long: Any = None) -> None:
        from transformers.utils import logging as hf_logging

        from padless.tasks import load_engine

        hf_logging.set_verbosity_error()
        # The tokenizer, labels or embedding settings, and post-processing of the model; the dummy runtime loads no
        # weights and is then replaced by a stand-in that refuses to run: the model runs in the tiers.
        engine = load_engine(settings.engine.replace(backend="dummy", threads=0, streams=0), serving=True)
        engine.runtime = RemoteRuntime({"backend": settings.engine.model.backend})
        handles = {"short": short, **({"long": long} if long is not None else {})}
        self.service = RayService(engine, server=settings.server, queue=settings.queue, handles=handles,
                                  long_threshold=settings.long_threshold, drain_signal=settings.drain_signal)

    def __serve_build_asgi_app__(self) -> Any:
        from padless.server.app import create_app

        return ProxyRequestId(create_app(self.service))


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ProxyRequestId:
    """Serve's proxy gives every request an id and appends it as ``X-Request-ID`` to the response: padless adopts
    that id (its envelopes and logs then say the same) and leaves the header to the proxy, so a client sees one
    ``X-Request-Id``, equal to the envelope's ``request_id``. An id the client chose is kept only if it is a plain
    token."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"x-request-id"), "")
        if not _SAFE_ID.fullmatch(rid):
            await self.app(scope, receive, send)
            return

        async def without_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [h for h in message.get("headers", [])
                                                  if h[0].lower() != b"x-request-id"]}
            await send(message)

        await self.app({**scope, "state": {**(scope.get("state") or {}), "request_id": rid}}, receive, without_id)


@ray.remote(num_cpus=0)
class DrainSignal:
    """Set by ``padless serve --ray`` on SIGTERM; every ingress replica waits on it and reports when drained."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._drained = 0

    async def wait(self) -> bool:
        await self._event.wait()
        return True

    async def set(self) -> None:
        self._event.set()

    async def done(self) -> None:
        self._drained += 1

    async def drained(self) -> int:
        return self._drained


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """Everything :func:`serve_app` takes, checked (see its docstring)."""

    # The short tier's (or only tier's) engine: threads per replica, 0: short_tier_threads(...); width_multiple 0:
    # each tier's backend's choice. The long tier's is derived from it (long_model, long_backend, long_threads).
    engine: EngineSpec = field(default_factory=EngineSpec)
    replicas: int = 1
    long_threshold: int = 0  # 0: one tier
    long_replicas: int = 1
    long_model: str | None = None  # None: the same model
    long_backend: str | None = None  # None: the same backend
    long_threads: int = 0  # per long-tier replica; 0: every CPU of the biggest node (the cores the short tier idles)
    long_promote_ms: int = LONG_PROMOTE_MS  # a long request this old lifts its replica to normal priority; 0: never
    queue: QueueConfig = field(default_factory=QueueConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    ingress_replicas: int = 1
    drain_signal: str | None = None

    @classmethod
    def of(cls, model: str = "default", **options: Any) -> ServeOptions:
        """From :func:`serve_app`'s flat keywords: :data:`ENGINE_OPTIONS` go into ``engine``, the rest are fields;
        an unknown name raises TypeError."""
        engine = {k: options.pop(k) for k in ENGINE_OPTIONS if k in options}
        return cls(engine=EngineSpec.of(model=model, **engine), **options)

    def validate(self) -> None:
        for name in ("replicas", "long_replicas", "ingress_replicas"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.long_threshold < 0:
            raise ConfigError(f"long-threshold must be 0 (one tier) or positive, got {self.long_threshold}")
        if not self.long_threshold and (self.long_model or self.long_backend or self.long_threads):
            raise ConfigError("--long-model, --long-backend and --long-threads need --long-threshold (there is no "
                              "long tier without)")
        if self.long_promote_ms < 0:
            raise ConfigError(f"long-promote-ms must be 0 (never) or positive, got {self.long_promote_ms}")
        if self.long_threads < 0:
            raise ConfigError(f"long-threads must be 0 (every CPU of a node) or positive, got {self.long_threads}")
        self.engine.validate()
        if self.long_backend:
            self.engine.replace(backend=self.long_backend).validate()
        self.queue.validate(self.engine.batch)
        self.server.validate()


# serve_app's keywords that are engine settings (the rest of EngineSpec's are fixed for serving, or unused).
ENGINE_OPTIONS = ("task", "backend", "max_length", "max_chars", "max_batch_tokens", "max_batch_size", "width_multiple",
                  "threads", "pair_truncation")


def serve_app(model: str = "default", **options: Any) -> Any:
    """A Ray Serve application (``serve.Application``) serving ``model`` with padless's HTTP API.

    Options (the fields of :class:`ServeOptions`): ``task`` (auto, classify or embed: as ``padless serve --task``),
    ``backend`` ("auto" as ``padless serve``: an optimize folder's
    variant, else ONNX Runtime fp32), ``replicas`` (short tier), ``long_threshold`` (0: one tier; else inputs of
    more tokens go to the long tier), ``long_replicas``, ``long_model`` (same tokenizer and labels required),
    ``long_backend``, ``max_length``, ``max_chars``, ``max_batch_tokens``, ``max_batch_size``, ``width_multiple``
    (0: each tier's backend's choice), ``threads`` (per short-tier replica; 0 = the cluster's CPUs, less one
    with tiers, divided among that tier's replicas, at most a node's: see
    :func:`~padless.ray.tier_priority.short_tier_threads`),
    ``long_threads`` (per long-tier replica; 0 = every CPU of the biggest node, so long batches use the cores an
    idle short tier leaves, at a lower CPU priority; threads that share cores do not spin-wait),
    ``long_promote_ms`` (a long-tier replica that holds a request this old runs at normal priority until none is
    left; 0 = never: see :mod:`padless.ray.tier_priority`),
    ``pair_truncation``, ``queue`` (:class:`~padless.config.QueueConfig`), ``server``
    (:class:`~padless.config.ServerConfig`; host and port are ``serve.start``'s), ``ingress_replicas``. Impossible
    combinations raise :class:`~padless.errors.ConfigError`.
    """
    return serve_app_for(ServeOptions.of(model, **options))


def serve_app_for(opts: ServeOptions) -> Any:
    """:func:`serve_app` with its options as one value (``opts.engine`` whole)."""
    opts, short_path, long_path, max_length = preflight_for(opts)
    from padless.server.run import serving_backend

    share = _CpuShare.of(opts)
    # Each tier's engine: the options' whole, with its model folder, serving backend and threads resolved.
    serving = opts.engine.replace(max_length=max_length, streams=SERVING_STREAMS)
    task = serving.model.task
    short_engine = serving.replace(model=short_path, threads=share.threads,
                                   backend=serving_backend(short_path, opts.engine.model.backend, task))
    short = _tier(opts, share, "short", short_engine, opts.replicas)
    long = None
    if opts.long_threshold:
        long_backend = serving_backend(long_path, opts.long_backend or opts.engine.model.backend, task)
        long = _tier(opts, share, "long", serving.replace(model=long_path, backend=long_backend,
                                                          threads=share.long_threads), opts.long_replicas)
    settings = IngressSettings(engine=short_engine, long_threshold=opts.long_threshold, server=opts.server,
                               queue=opts.queue, drain_signal=opts.drain_signal)
    return _ingress(opts).bind(settings, short, long)


@dataclass(frozen=True)
class _CpuShare:
    """How the tiers' replicas share the cluster's CPUs (see :meth:`of`)."""

    cpus: float  # the cluster's
    total: int  # replicas of every tier
    threads: int  # per short-tier replica
    long_threads: int  # per long-tier replica (0: no long tier)
    shared: bool  # the tiers' threads together exceed the CPUs

    @classmethod
    def of(cls, opts: ServeOptions) -> _CpuShare:
        total = opts.replicas + (opts.long_replicas if opts.long_threshold else 0)
        cpus = _cluster_cpus()
        node_cpus = max(1, int(_node_cpus() or cpus))  # one replica's threads cannot span nodes
        # By default the short tier divides the cores among its own replicas (less one, with tiers: see
        # short_tier_threads), and the long tier may use every core of its node. Fixed shares cap a long burst at
        # the long tier's share while the short tier's cores idle. Shared cores are work-conserving, and a short
        # batch still never queues behind a long one.
        threads = opts.engine.model.threads or short_tier_threads(cpus, node_cpus, opts.replicas,
                                                                  tiers=bool(opts.long_threshold))
        long_threads = (opts.long_threads or node_cpus) if opts.long_threshold else 0
        # Threads that share cores must not spin-wait for work (ONNX Runtime's default, libgomp's first moments):
        # a spinning idle pool would take the cores it is meant to lend. And the long tier borrows only CPU time
        # that nothing else wants (padless.ray.tier_priority), so that a short batch arriving on a shared core runs
        # at once and the long one takes what is left, until one of its requests has waited long_promote_ms.
        shared = threads * opts.replicas + long_threads * (opts.long_replicas if opts.long_threshold else 0) > cpus
        return cls(cpus=cpus, total=total, threads=threads, long_threads=long_threads, shared=shared)


def _tier(opts: ServeOptions, share: _CpuShare, name: str, engine: EngineSpec, replicas: int) -> Any:
    """One tier's deployment, bound to its settings (``engine`` whole: model folder, backend, threads resolved)."""
    settings = TierSettings(name=name, engine=engine, queue=opts.queue, spin=not share.shared,
                            background=share.shared and name == "long",
                            promote_after_s=opts.long_promote_ms / 1000)
    threads = engine.model.threads
    # Ray's reservation: what a replica really uses, but never more than a fair share (fractions are fine), so
    # every replica of every tier can be placed on a small machine.
    num_cpus = min(float(threads), share.cpus / share.total)
    env = _runtime_env()
    if share.shared:
        env["env_vars"]["OMP_WAIT_POLICY"] = "PASSIVE"  # torch's OpenMP threads: sleep when idle
    deployment = serve.deployment(
        name=f"PadlessTier_{name}",
        num_replicas=replicas,
        max_ongoing_requests=opts.queue.max_queue_inputs,
        max_queued_requests=opts.queue.max_queue_inputs,
        ray_actor_options={"num_cpus": num_cpus, "runtime_env": env},
        graceful_shutdown_timeout_s=opts.server.drain_timeout_s,
        health_check_period_s=5.0,
        # A forward pass may take up to forward_timeout before the batcher gives up and the check fails.
        health_check_timeout_s=opts.queue.forward_timeout_s + 10.0,
    )(TierReplica)
    return deployment.bind(settings)


def _ingress(opts: ServeOptions) -> Any:
    """The ingress deployment with its options (not yet bound)."""
    ingress_deployment: Any = PadlessIngress  # a serve.Deployment (the decorators' type is lost on mypy)
    return ingress_deployment.options(
        num_replicas=opts.ingress_replicas,
        # The ingress only tokenizes and waits: it takes every request the proxy has, so that padless's admission
        # (429 with Retry-After) answers overload, not the proxy's bare 503.
        max_ongoing_requests=opts.queue.max_queue_inputs + 64,
        max_queued_requests=-1,
        ray_actor_options={"num_cpus": 0, "runtime_env": _runtime_env()},
        graceful_shutdown_timeout_s=opts.server.drain_timeout_s,
    )


def preflight(model: str, **options: Any) -> tuple[ServeOptions, str, str, int]:
    """Check :func:`serve_app`'s options and models without starting anything: the options, the short and long
    model folders, and the ingress's token limit. Raises :class:`~padless.errors.ConfigError` (one line)."""
    return preflight_for(ServeOptions.of(model, **options))


def preflight_for(opts: ServeOptions) -> tuple[ServeOptions, str, str, int]:
    """:func:`preflight` with its options as one value."""
    opts.validate()
    from padless.tasks import resolve_task

    task = resolve_task(opts.engine.model.model, opts.engine.model.task)
    opts = replace(opts, engine=opts.engine.replace(task=task))
    short_path = _resolve(opts.engine.model.model, task)
    long_path = _resolve(opts.long_model, task) if opts.long_model else short_path
    max_length = _check_models(short_path, long_path if opts.long_threshold else None, opts)
    return opts, short_path, long_path, max_length


def build_app(args: dict[str, str]) -> Any:
    """Ray Serve's application builder: ``serve run padless.ray.serve:build_app model=DIR replicas=2 …`` (keys are
    :func:`serve_app`'s options; numbers as text)."""
    kinds = {f: int for f in ("replicas", "long_threshold", "long_replicas", "max_length", "max_chars",
                              "max_batch_tokens", "max_batch_size", "width_multiple", "threads", "long_threads",
                              "long_promote_ms", "ingress_replicas")}
    values: dict[str, Any] = {}
    for key, raw in args.items():
        key = key.replace("-", "_")
        known = key in ENGINE_OPTIONS or key == "model" or key in ServeOptions.__dataclass_fields__
        if not known or key in ("engine", "queue", "server", "drain_signal"):
            raise ConfigError(f"unknown serve_app option {key!r}")
        try:
            values[key] = kinds.get(key, str)(raw)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, not {raw!r}") from None
    return serve_app(**values)


def _resolve(model: str, task: str) -> str:
    from padless.tasks import model_path

    return str(model_path(model, task).resolve())


def _check_models(short_path: str, long_path: str | None, opts: ServeOptions) -> int:
    """The ingress's token limit; refuses a long tier that could never receive input, or whose model does not
    share the short model's tokenizer and labels (the ingress tokenizes and post-processes for both)."""
    from transformers import AutoConfig, AutoTokenizer

    from padless import loader
    from padless.tokenize import model_max_length

    tok = AutoTokenizer.from_pretrained(short_path)
    limit = model_max_length(tok, AutoConfig.from_pretrained(short_path))
    embed = opts.engine.model.task == "embed"
    short_embedding = loader.read_info(Path(short_path), task="embed").embedding if embed else None
    if short_embedding is not None:  # a sentence-transformers folder may set a lower max_seq_length
        limit = min(limit, short_embedding.max_seq_length or limit)
    max_length = min(opts.engine.model.max_length or limit, limit)
    opts.engine.batch.validate(max_length)
    if long_path is None:
        return max_length
    if opts.long_threshold >= max_length:
        raise ConfigError(f"--long-threshold ({opts.long_threshold}) must be below the token limit ({max_length}): "
                          "no input could reach the long tier")
    if long_path != short_path:
        long_tok = AutoTokenizer.from_pretrained(long_path)
        if long_tok.get_vocab() != tok.get_vocab():
            raise ConfigError(f"--long-model {long_path} has another tokenizer than {short_path}; the ingress "
                              "tokenizes once for both tiers, so they must share it")
        if embed:
            long_embedding = loader.read_info(Path(long_path), task="embed").embedding
            if getattr(short_embedding, "dimension", None) != getattr(long_embedding, "dimension", None):
                raise ConfigError(f"--long-model {long_path} makes vectors of another size than {short_path}")
        elif loader.read_info(Path(long_path)).id2label != loader.read_info(Path(short_path)).id2label:
            raise ConfigError(f"--long-model {long_path} has other labels than {short_path}")
        long_limit = model_max_length(long_tok, AutoConfig.from_pretrained(long_path))
        if long_limit < max_length:
            raise ConfigError(f"--long-model {long_path} takes at most {long_limit} tokens, fewer than the "
                              f"ingress's limit of {max_length}; pass --max-length {long_limit}")
    return max_length


def _node_cpus() -> int | None:
    return biggest_node_cpus() if ray.is_initialized() else os.cpu_count()


def _cluster_cpus() -> float:
    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 1.0))
    return float(os.cpu_count() or 1)


def _runtime_env() -> dict[str, Any]:
    """padless's settings (cache folder, test knobs) reach the replicas on any node, and Ray's telemetry stays off
    there too."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PADLESS_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"env_vars": env}


__all__ = ["APP_NAME", "ENGINE_OPTIONS", "DrainSignal", "PadlessIngress", "ServeOptions", "build_app", "preflight",
           "preflight_for", "serve_app", "serve_app_for"]
