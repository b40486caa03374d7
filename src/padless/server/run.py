"""Run the server under uvicorn with a graceful drain.

On the first SIGTERM or SIGINT readiness turns false at once and new requests get 503, while admitted and queued
requests finish (at most ``drain_timeout_s``); then uvicorn shuts down and the process exits 0. A second SIGINT
forces the exit.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import time
from types import FrameType

import uvicorn

from padless.config import QueueConfig, ServerConfig
from padless.engine import Engine
from padless.server.app import create_app
from padless.server.service import Service

log = logging.getLogger("padless.server")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step before shutdown (and no re-raised signal, so the exit code is 0)."""

    def __init__(self, config: uvicorn.Config, service: Service, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining or self._loop is None:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self.service.draining = True  # readiness false and new requests 503 from this instant
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))  # type: ignore[union-attr]

    async def _drain(self) -> None:
        started = time.monotonic()
        end = started + self.drain_timeout_s
        scorer = self.service.scorer
        while time.monotonic() < end:
            if self.service.in_flight == 0 and (scorer is None or scorer.idle):
                break
            await asyncio.sleep(0.02)
        log.info("drained in %.2fs (in flight left: %d)", time.monotonic() - started, self.service.in_flight)
        self.should_exit = True


def serving_backend(model_dir: str, backend: str, task: str = "classify") -> str:
    """The backend ``padless serve`` runs: what was asked for, except that ``auto`` on a plain model folder means
    ONNX Runtime fp32 rather than eager PyTorch.

    Why: a server runs many small batches, and eager PyTorch pays its operator-dispatch overhead (and the
    interpreter lock, shared with the event loop) on every one; ONNX Runtime runs the same fp32 model as one call
    that releases the lock. The export is made once, cached by content hash, and refused unless its logits match
    PyTorch's within 1e-4 (:func:`padless.loader.export.ensure_onnx`). A ``padless optimize`` folder keeps
    ``auto`` (its manifest's selected variant); a model that cannot be exported is served on torch, with a warning.
    An embedding model's graph is the one the server runs (:func:`padless.tasks.serving_info`).
    """
    from pathlib import Path

    from padless.loader import manifest as optimized

    if backend != "auto" or optimized.is_optimized(model_dir):
        return backend
    from padless.loader.export import ensure_onnx
    from padless.tasks import serving_info

    try:
        info = serving_info(Path(model_dir), task)
        ensure_onnx(model_dir, embedding=info.embedding if info is not None else None)
    except Exception as err:  # noqa: BLE001 - any export failure means: serve the reference weights on torch
        log.warning("serving on torch: the ONNX export of %s failed (%s)", model_dir, type(err).__name__)
        return "torch"
    return "onnx"


def serve(engine: Engine, server: ServerConfig, queue: QueueConfig, *, log_level: str = "info") -> None:
    """Serve ``engine`` (a classifier or an embedder) until SIGTERM/SIGINT (blocking)."""
    service = Service(engine, server=server, queue=queue)
    app = create_app(service)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["padless"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    config = uvicorn.Config(app, host=server.host, port=server.port, log_level=log_level, access_log=False,
                            log_config=log_config, timeout_graceful_shutdown=max(1, int(server.drain_timeout_s)),
                            timeout_keep_alive=server.keep_alive_s,
                            lifespan="on")
    DrainingServer(config, service, server.drain_timeout_s).run()
