"""HTTP routes (FastAPI). One JSON error envelope for every failure; no exception text ever reaches a client.

Routes: ``POST /predict`` (Hugging Face TEI / Inference API text-classification shape), ``POST /v1/classify``
(padless's richer form), ``GET /health`` (live), ``GET /ready``, ``GET /info``, ``GET /metrics``.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from padless.errors import InputError, PadlessError, status_for
from padless.server.service import Service

log = logging.getLogger("padless.server")


# -- request and response schemas (they make /openapi.json accurate) ----------------------------------------------

class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(description="One text, or a list of texts")
    raw_scores: bool = Field(False, description="Logits instead of probabilities")
    truncate: bool = Field(True, description="Cut over-long input to the model's limit; false answers 422")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    text: str


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str | ClassifyItem] = Field(description="Texts, or {id, text} objects")
    top_k: int = Field(1, ge=0, description="Labels per item; 0 = all")
    raw_scores: bool = False
    truncate: bool = True


class ItemErrorBody(BaseModel):
    type: str
    message: str


class ClassifyResult(BaseModel):
    id: str
    label: str | None = None
    score: float | None = None
    scores: list[LabelScore] = Field(default_factory=list)
    tokens: int = 0
    cached: bool = False
    error: ItemErrorBody | None = None


class ClassifyResponse(BaseModel):
    request_id: str
    model: str
    results: list[ClassifyResult]
    timing_ms: dict[str, float]


class ErrorBody(BaseModel):
    error: str
    error_type: str
    request_id: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 413, 422, 429, 500, 503, 504)
}


# -- errors ---------------------------------------------------------------------------------------------------------

def error_response(status: int, error_type: str, message: str, request_id: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": message, "error_type": error_type, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={"X-Request-Id": request_id, **(headers or {})})


def _request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex[:16]
    return rid


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over the limit, whether declared (Content-Length) or streamed.

    Also reads every POST body as JSON whatever its declared content type."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
            # The API takes only JSON; `curl -d '{...}'` labels it form data, so read every POST body as JSON.
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", f"request body is over {self.max_bytes} bytes",
                                  uuid.uuid4().hex[:16])
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


# -- the app --------------------------------------------------------------------------------------------------------

def create_app(service: Service) -> FastAPI:
    """Build the FastAPI app around a (not yet started) :class:`Service`."""
    cfg = service.server_config

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="padless", version=service.info()["version"], lifespan=lifespan,
                  description="Text classification with token-budget batching.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in cfg.cors_origins.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    metrics = service.metrics

    @app.middleware("http")
    async def count_and_tag(request: Request, call_next: Any) -> Response:
        rid = _request_id(request)
        try:
            response = await call_next(request)
        except Exception:  # anything that escaped the handlers: generic, logged, never echoed
            log.exception("unhandled error in request %s", rid)
            response = error_response(500, "internal_error", "internal server error", rid)
        response.headers.setdefault("X-Request-Id", rid)
        metrics.requests.labels(request.url.path if request.url.path in _ROUTES else "other",
                                str(response.status_code)).inc()
        return response

    @app.exception_handler(PadlessError)
    async def padless_error(request: Request, err: PadlessError) -> JSONResponse:
        status = status_for(err)
        headers = {"Retry-After": "1"} if status == 429 else None
        message = str(err) if status < 500 or status in (503, 504) else "internal server error"
        return error_response(status, err.code, message, _request_id(request), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"invalid request: {first.get('msg', 'malformed body')}" + (f" at {where}" if where else "")
        return error_response(422, "validation_error", message[:300], _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, "http_error", str(err.detail)[:200], _request_id(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error in request %s", _request_id(request), exc_info=err)
        return error_response(500, "internal_error", "internal server error", _request_id(request))

    async def require_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, _: Exception) -> JSONResponse:
        return error_response(401, "unauthorized", "missing or invalid API key", _request_id(request),
                              {"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_key)]

    def deadline_for(request: Request) -> float:
        timeout = cfg.request_timeout_s
        header = request.headers.get("x-request-timeout")
        if header:
            try:
                asked = float(header)
            except ValueError:
                raise InputError("X-Request-Timeout must be a number of seconds") from None
            if not asked > 0:
                raise InputError("X-Request-Timeout must be positive")
            timeout = min(timeout, asked)  # a client may shorten the deadline, never lengthen it
        return time.monotonic() + timeout

    def check_count(n: int) -> None:
        if n == 0:
            raise InputError("inputs must not be empty")
        if n > cfg.max_inputs_per_request:
            raise InputError(f"{n} inputs is over the limit of {cfg.max_inputs_per_request} per request")

    @app.post("/predict", dependencies=auth, response_model=list[list[LabelScore]], responses=ERROR_RESPONSES)
    async def predict(body: PredictRequest, request: Request) -> Any:
        """Hugging Face compatible: one list of {label, score} per input, all labels, best first."""
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        check_count(len(texts))
        results, rows, _ = await service.classify(texts, truncate=body.truncate, deadline=deadline_for(request),
                                                  request_id=_request_id(request),
                                                  is_disconnected=request.is_disconnected)
        for i, result in enumerate(results):
            if result.error is not None:
                raise type(result.error)(f"input {i}: {result.error}")
        metrics.inputs.labels("ok").inc(len(texts))
        preds = service.clf.post(np.stack(rows), top_k=0, raw_scores=body.raw_scores)  # type: ignore[arg-type]
        return [[{"label": label, "score": score} for label, score in p.scores] for p in preds]

    @app.post("/v1/classify", dependencies=auth, response_model=ClassifyResponse, responses=ERROR_RESPONSES)
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        """padless's form: ids, top_k, per-item errors (the request still succeeds), token counts, timing."""
        check_count(len(body.inputs))
        ids = [item.id if isinstance(item, ClassifyItem) and item.id is not None else str(i)
               for i, item in enumerate(body.inputs)]
        texts = [item.text if isinstance(item, ClassifyItem) else item for item in body.inputs]
        started = time.monotonic()
        results, rows, timing = await service.classify(texts, truncate=body.truncate, deadline=deadline_for(request),
                                                       request_id=_request_id(request),
                                                       is_disconnected=request.is_disconnected)
        post_started = time.monotonic()
        out = []
        for item_id, result, row in zip(ids, results, rows):
            if result.error is not None:
                metrics.inputs.labels(result.error.code).inc()
                out.append(ClassifyResult(id=item_id, error=ItemErrorBody(type=result.error.code,
                                                                           message=str(result.error))))
                continue
            metrics.inputs.labels("ok").inc()
            pred = service.clf.post(row[None, :], top_k=body.top_k, raw_scores=body.raw_scores)[0]  # type: ignore[index]
            out.append(ClassifyResult(id=item_id, label=pred.label, score=pred.score, tokens=result.tokens,
                                      cached=result.cached,
                                      scores=[LabelScore(label=lab, score=sc) for lab, sc in pred.scores]))
        metrics.stage.labels("post").observe(time.monotonic() - post_started)
        total = time.monotonic() - started
        return ClassifyResponse(request_id=_request_id(request), model=service.clf.model_config.model, results=out,
                                timing_ms={"tokenize": timing.tokenize_s * 1e3,
                                           "queue_and_forward": timing.queue_and_forward_s * 1e3,
                                           "total": total * 1e3})

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process and its event loop answer."""
        return {"status": "ok"}

    @app.get("/ready", dependencies=auth, responses={503: {"model": ErrorBody}})
    async def ready(request: Request) -> Any:
        """Readiness: loaded, warmed, not draining, and a real 1-token forward pass answers."""
        ok, reason = await service.ready()
        if not ok:
            return error_response(503, "not_ready", reason, _request_id(request))
        return {"status": "ready"}

    @app.get("/info", dependencies=auth)
    async def info() -> dict[str, Any]:
        """Model, labels, limits, backend and version."""
        return service.info()

    @app.get("/metrics", dependencies=auth, response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class _Unauthorized(Exception):
    pass


_ROUTES = {"/predict", "/v1/classify", "/health", "/ready", "/info", "/metrics"}
