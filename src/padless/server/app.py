"""HTTP routes (FastAPI). One JSON error envelope for every failure; no exception text ever reaches a client.

Routes: the Text Embeddings Inference (TEI) set in :mod:`padless.server.tei` (``POST /``, ``/invocations``,
``/predict``, ``/rerank``, ``/tokenize``, ``/decode``) and :mod:`padless.server.embed` (``/embed``,
``/similarity``, OpenAI's ``/v1/embeddings``; ``POST /`` and ``/invocations`` follow the model's task);
``POST /v1/classify`` (padless's richer form); ``GET /health``
(live, no auth); ``GET /ready``, ``GET /`` and ``GET /ping`` (readiness: the model answers); ``GET /info``;
``GET /metrics``. Request and response bodies are in :mod:`padless.server.schemas`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from padless.errors import PadlessError, status_for
from padless.server.embed import add_embed_routes
from padless.server.http import check_count, deadline_for, error_response
from padless.server.http import request_id as _request_id
from padless.server.middleware import Gatekeeper
from padless.server.schemas import (
    ERROR_RESPONSES,
    ClassifyItem,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyResult,
    ErrorBody,
    ItemErrorBody,
    LabelScore,
    declare_input_limit,
    declare_model_options,
)
from padless.server.service import Service
from padless.server.tei import add_tei_routes, with_prompt

log = logging.getLogger("padless.server")


# -- the app --------------------------------------------------------------------------------------------------------

def create_app(service: Service) -> FastAPI:
    """Build the FastAPI app around a (not yet started) :class:`Service`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    what = "Text classification" if service.task == "classify" else "Text embeddings"
    app = FastAPI(title="padless", version=service.info()["version"], lifespan=lifespan,
                  description=f"{what} with token-budget batching.")
    app.state.service = service
    _declare_limits(app, service)
    _add_middleware(app, service)
    _add_error_handlers(app)
    add_tei_routes(app, service)
    add_embed_routes(app, service)
    _add_classify_route(app, service)
    _add_status_routes(app, service)
    return app


def _declare_limits(app: FastAPI, service: Service) -> None:
    """The OpenAPI schema states the server's per-request input limit and the model's prompt names and vector size
    (built once, on first use)."""
    default_openapi = app.openapi
    max_inputs = service.server_config.max_inputs_per_request
    dimension = service.embedder.output_width if service.task == "embed" else None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = declare_input_limit(default_openapi(), max_inputs)
            app.openapi_schema = declare_model_options(schema, service.prompt_names(), dimension)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_middleware(app: FastAPI, service: Service) -> None:
    """Body size, API key and request counting (:class:`Gatekeeper`), and CORS where origins are configured."""
    cfg, metrics = service.server_config, service.metrics
    app.add_middleware(Gatekeeper, max_body_bytes=cfg.max_body_bytes, api_key=cfg.api_key,
                       count=lambda route, status: metrics.requests.labels(route, str(status)).inc())
    # Added last, so outermost: a browser's preflight is answered before the API key is asked for.
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in cfg.cors_origins.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["*"])


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure as the one JSON error envelope: padless's errors by :func:`~padless.errors.status_for`, request
    validation, HTTP errors (404, 405, 413), and anything else as a generic 500."""

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
        # loc holds pydantic's union-member tags ("list[constrained-str]", "constrained-str"); a client only needs
        # the field path (padless's field names have neither brackets nor hyphens).
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body" and not set(str(p)) & set("[-"))
        if short is not None and where:
            message = f"invalid request: {where} must not be empty"
        else:
            message = f"invalid request: {first.get('msg', 'malformed body')}" + (f" at {where}" if where else "")
        return error_response(422, "validation_error", message[:300], _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kinds = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}
        kind = kinds.get(err.status_code, "http_error")
        headers = dict(err.headers or {})
        if err.status_code == 405:
            # Starlette names only the first route that matched the path; `/` has a GET route and a POST route.
            allowed = {m for r in app.routes if getattr(r, "path", None) == request.url.path
                       for m in getattr(r, "methods", None) or ()}
            headers["Allow"] = ", ".join(sorted(allowed - {"HEAD"})) or headers.get("Allow", "")
        return error_response(err.status_code, kind, str(err.detail)[:200], _request_id(request), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error in request %s", _request_id(request), exc_info=err)
        return error_response(500, "internal_error", "internal server error", _request_id(request))


def _add_classify_route(app: FastAPI, service: Service) -> None:
    """``POST /v1/classify``, padless's own form."""
    cfg, metrics = service.server_config, service.metrics

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERROR_RESPONSES)
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        """padless's form: ids, top_k, per-item errors (the request still succeeds), token counts, timing."""
        check_count(len(body.inputs), cfg)
        prompt = service.prompt(body.prompt_name)  # a request the spec refuses is a 422 whatever the model
        clf = service.classifier  # an embedding model answers 424
        ids = [item.id if isinstance(item, ClassifyItem) and item.id is not None else str(i)
               for i, item in enumerate(body.inputs)]
        texts = with_prompt([_classify_input(item) for item in body.inputs], prompt)
        started = time.monotonic()
        results, rows, timing = await service.run(texts, truncate=body.truncate,
                                                  direction=body.truncation_direction,
                                                  deadline=deadline_for(request, cfg), request_id=_request_id(request),
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
            pred = clf.post(row[None, :], top_k=body.top_k, raw_scores=body.raw_scores)[0]  # type: ignore[index]
            out.append(ClassifyResult(id=item_id, label=pred.label, score=pred.score, tokens=result.tokens,
                                      cached=result.cached,
                                      scores=[LabelScore(label=lab, score=sc) for lab, sc in pred.scores]))
        metrics.stage.labels("post").observe(time.monotonic() - post_started)
        total = time.monotonic() - started
        return ClassifyResponse(request_id=_request_id(request), model=clf.model_config.model, results=out,
                                timing_ms={"tokenize": timing.tokenize_s * 1e3,
                                           "queue_and_forward": timing.queue_and_forward_s * 1e3,
                                           "total": total * 1e3})


def _add_status_routes(app: FastAPI, service: Service) -> None:
    """Liveness (``/health``), readiness (``/ready``, ``/``, ``/ping``), ``/info`` and ``/metrics``."""
    metrics = service.metrics

    @app.get("/health", responses={503: {"model": ErrorBody}})
    async def health(request: Request) -> Any:
        """Liveness: the process and its event loop answer, and the model worker is not stuck (no auth)."""
        if service.scorer is not None and not service.scorer.healthy:
            return error_response(503, "unhealthy", "the model worker is unhealthy", _request_id(request))
        return {"status": "ok"}

    async def ready(request: Request) -> Any:
        """Readiness: loaded, warmed, not draining, and a real 1-token forward pass answers."""
        ok, reason = await service.ready()
        if not ok:
            return error_response(503, "not_ready", reason, _request_id(request))
        return {"status": "ready"}

    # `GET /` and `/ping` (SageMaker) are TEI's health checks, which mean that the model answers.
    for path in ("/ready", "/", "/ping"):
        app.add_api_route(path, ready, methods=["GET"], responses={503: {"model": ErrorBody}},
                          name=f"ready{path.replace('/', '_')}")

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model, labels, limits, backend and version."""
        return service.info()

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _classify_input(item: str | ClassifyItem) -> str | tuple[str, str]:
    if isinstance(item, str):
        return item
    return item.text if item.text_pair is None else (item.text, item.text_pair)
