"""HTTP routes (FastAPI). One JSON error envelope for every failure; no exception text ever reaches a client.

Routes: ``POST /predict`` (Hugging Face TEI / Inference API text-classification shape), ``POST /v1/classify``
(padless's richer form), ``GET /health`` (live), ``GET /ready``, ``GET /info``, ``GET /metrics``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from padless.errors import InputError, PadlessError, status_for
from padless.server.middleware import Gatekeeper
from padless.server.service import Service

log = logging.getLogger("padless.server")


# -- request and response schemas (they make /openapi.json accurate) ----------------------------------------------

def _utf8(value: str | None) -> str | None:
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid UTF-8 text (no lone surrogates)") from None
    return value


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" admits 5.0 but not "5" or true; pydantic's strict int refuses the first and its lax
    # int accepts the others. This follows the schema the spec publishes.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


class PredictParameters(BaseModel):
    """The Hugging Face Inference API's text-classification parameters (its client always sends the object)."""

    model_config = ConfigDict(extra="forbid")
    # The bound goes before the validator: after it, pydantic writes a non-standard "ge" into the JSON schema.
    top_k: Annotated[int, Field(ge=1), BeforeValidator(_json_integer)] | None = Field(
        None, description="Labels per input (default: all)")
    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = Field(
        None, description="Override the model's scoring function")


# A text /predict can score has at least one non-space character; the schema says so, so generated clients and
# schema-driven fuzzers know that "" and "   " are refused (422) rather than learning it from the server.
Text = Annotated[str, Field(pattern=r"\S", description="Text with at least one non-space character")]



class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Text | Annotated[list[Text], Field(min_length=1)] = Field(description="One text, or a list of texts")
    raw_scores: StrictBool = Field(False, description="Logits instead of probabilities")
    truncate: StrictBool = Field(True, description="Cut over-long input to the model's limit; false answers 422")
    parameters: PredictParameters | None = None


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    text: str

    _check_id = field_validator("id")(_utf8)  # the id is echoed back, so it must be encodable


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[list[str | ClassifyItem], Field(min_length=1)] = Field(
        description="Texts, or {id, text} objects")
    top_k: JsonInt = Field(1, ge=0, description="Labels per item; 0 = all")
    raw_scores: StrictBool = False
    truncate: StrictBool = True


def _declare_input_limit(schema: dict[str, Any], max_inputs: int) -> dict[str, Any]:
    """Write the server's own ``max_inputs_per_request`` into the spec as maxItems of every ``inputs`` list.

    The limit is a server option, so the static models cannot carry it; check_count enforces it with the same words.
    """
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("PredictRequest", "ClassifyRequest"):
        inputs = schemas.get(name, {}).get("properties", {}).get("inputs", {})
        for option in [inputs, *inputs.get("anyOf", [])]:
            if option.get("type") == "array":
                option["maxItems"] = max_inputs
    return schema


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
    code: {"model": ErrorBody} for code in (400, 401, 413, 422, 429, 500, 503, 504)
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
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _declare_input_limit(default_openapi(), cfg.max_inputs_per_request)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    metrics = service.metrics

    app.add_middleware(Gatekeeper, max_body_bytes=cfg.max_body_bytes, api_key=cfg.api_key,
                       count=lambda route, status: metrics.requests.labels(route, str(status)).inc())
    # Added last, so outermost: a browser's preflight is answered before the API key is asked for.
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in cfg.cors_origins.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(PadlessError)
    async def padless_error(request: Request, err: PadlessError) -> JSONResponse:
        status = status_for(err)
        headers = {"Retry-After": "1"} if status == 429 else None
        message = str(err) if status < 500 or status in (503, 504) else "internal server error"
        return error_response(status, err.code, message, _request_id(request), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        # A union field (str | list[str]) reports one error per member; an empty list is the too_short one,
        # whichever member pydantic happened to list first.
        short = next((e for e in errors if e.get("type") == "too_short"), None)
        first = short or (errors[0] if errors else {})
        # loc holds pydantic's union-member tags ("list[constrained-str]"); a client only needs the field path.
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body" and "[" not in str(p))
        if short is not None and where:
            message = f"invalid request: {where} must not be empty"
        else:
            message = f"invalid request: {first.get('msg', 'malformed body')}" + (f" at {where}" if where else "")
        return error_response(422, "validation_error", message[:300], _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kinds = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}
        kind = kinds.get(err.status_code, "http_error")
        return error_response(err.status_code, kind, str(err.detail)[:200], _request_id(request),
                              dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error in request %s", _request_id(request), exc_info=err)
        return error_response(500, "internal_error", "internal server error", _request_id(request))

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

    @app.post("/predict", response_model=list[list[LabelScore]], responses=ERROR_RESPONSES)
    async def predict(body: PredictRequest, request: Request) -> Any:
        """Hugging Face compatible: one list of {label, score} per input, all labels, best first."""
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        check_count(len(texts))
        results, rows, _ = await service.classify(texts, truncate=body.truncate, deadline=deadline_for(request),
                                                  request_id=_request_id(request),
                                                  receive=request.receive)
        for i, result in enumerate(results):
            if result.error is not None:
                raise type(result.error)(f"input {i}: {result.error}")
        metrics.inputs.labels("ok").inc(len(texts))
        params = body.parameters or PredictParameters(top_k=None, function_to_apply=None)
        preds = service.clf.post(np.stack(rows), top_k=params.top_k or 0,  # type: ignore[arg-type]
                                 raw_scores=body.raw_scores, function=params.function_to_apply)
        return [[{"label": label, "score": score} for label, score in p.scores] for p in preds]

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERROR_RESPONSES)
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        """padless's form: ids, top_k, per-item errors (the request still succeeds), token counts, timing."""
        check_count(len(body.inputs))
        ids = [item.id if isinstance(item, ClassifyItem) and item.id is not None else str(i)
               for i, item in enumerate(body.inputs)]
        texts = [item.text if isinstance(item, ClassifyItem) else item for item in body.inputs]
        started = time.monotonic()
        results, rows, timing = await service.classify(texts, truncate=body.truncate, deadline=deadline_for(request),
                                                       request_id=_request_id(request),
                                                       receive=request.receive)
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

    @app.get("/ready", responses={503: {"model": ErrorBody}})
    async def ready(request: Request) -> Any:
        """Readiness: loaded, warmed, not draining, and a real 1-token forward pass answers."""
        ok, reason = await service.ready()
        if not ok:
            return error_response(503, "not_ready", reason, _request_id(request))
        return {"status": "ready"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model, labels, limits, backend and version."""
        return service.info()

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


