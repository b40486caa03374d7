"""The embedding routes, with TEI's and OpenAI's shapes and semantics.

``POST /embed`` (TEI): a text or a list → a list of vectors; ``normalize`` (default true), ``truncate``,
``truncation_direction``, ``prompt_name``, ``dimensions``. ``POST /similarity`` (TEI): the cosine of
``source_sentence`` with each of ``sentences``. ``POST /v1/embeddings`` and ``POST /embeddings`` (OpenAI):
normalised vectors as float lists or base64 float32, with token usage. On an embedding model ``POST /`` and
``POST /invocations`` take an ``/embed`` or a ``/similarity`` body, as TEI routes by the model's task; on a
classifier these routes answer TEI's 424 (:attr:`Service.embedder`).

Every route runs the same path as classification (:meth:`Service.run`: cache, admission, batcher, deadlines), and
fails the whole request on any input's error, as TEI does. The graph's vectors are finished per request
(:func:`finish`), so one cached vector serves every ``normalize`` and ``dimensions``.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

from padless.errors import InputError
from padless.pooling import NORM_EPS
from padless.server.embed_schemas import (
    EmbedRequest,
    EmbedResponse,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    SimilarityRequest,
    SimilarityResponse,
)
from padless.server.http import check_count, deadline_for, request_id
from padless.server.schemas import ERROR_RESPONSES
from padless.server.service import Service

EMBED_RESPONSES = ERROR_RESPONSES


def finish(rows: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """The vectors a request asked for from the graph's: the first ``dimensions`` columns, then L2-normalised when
    ``normalize`` (Matryoshka order, as sentence-transformers' ``truncate_dim`` with ``normalize_embeddings``)."""
    out = np.ascontiguousarray(rows[:, :dimensions], dtype=np.float32)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), NORM_EPS)
    return out


def json_response(body: Any) -> Response:
    """A JSON response serialised by orjson, float32 arrays included (no per-float Python objects)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def add_embed_routes(app: FastAPI, service: Service) -> None:
    """Register the embedding routes on ``app`` (see the module docstring)."""
    cfg = service.server_config

    async def vectors(texts: list[str], request: Request, *, truncate: bool, direction: str,
                      prompt_name: str | None, dimensions: int | None, normalize: bool) -> tuple[np.ndarray, int]:
        """The finished vectors (input order) and the tokens they took; any input's error fails the request."""
        prompt = service.prompt(prompt_name)  # a request the spec refuses is a 422 whatever the model
        emb = service.embedder
        width = emb.dimensions if dimensions is None else dimensions
        if width > emb.output_width:
            raise InputError(f"dimensions must be in 1..{emb.output_width} (the model's embedding size); got {width}")
        rows, results = await service.run_whole([prompt + t for t in texts], truncate=truncate, direction=direction,
                                                deadline=deadline_for(request, cfg), request_id=request_id(request),
                                                receive=request.receive)
        return finish(rows, width, normalize), sum(r.tokens for r in results)

    async def embed(body: EmbedRequest, request: Request) -> Any:
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        check_count(len(texts), cfg)
        out, _ = await vectors(texts, request, truncate=body.truncate, direction=body.truncation_direction,
                               prompt_name=body.prompt_name, dimensions=body.dimensions, normalize=body.normalize)
        return json_response(out)

    async def similarity(body: SimilarityRequest, request: Request) -> Any:
        check_count(len(body.inputs.sentences), cfg)
        texts = [body.inputs.source_sentence, *body.inputs.sentences]
        out, _ = await vectors(texts, request, truncate=body.truncate, direction=body.truncation_direction,
                               prompt_name=body.prompt_name, dimensions=None, normalize=True)
        return json_response(out[1:] @ out[0])

    async def compat(body: EmbedRequest | SimilarityRequest, request: Request) -> Any:
        """TEI's ``POST /`` on an embedding model: an ``/embed`` body or a ``/similarity`` body."""
        return await (similarity(body, request) if isinstance(body, SimilarityRequest) else embed(body, request))

    app.add_api_route("/embed", embed, methods=["POST"], response_model=EmbedResponse, responses=EMBED_RESPONSES,
                      summary="Embed", description="Vectors for a text or a list of texts (TEI's /embed).")
    app.add_api_route("/similarity", similarity, methods=["POST"], response_model=SimilarityResponse,
                      responses=EMBED_RESPONSES, summary="Similarity",
                      description="Cosine of source_sentence with each of sentences (TEI's /similarity).")
    if service.task == "embed":
        for path in ("/", "/invocations"):
            app.add_api_route(path, compat, methods=["POST"], response_model=EmbedResponse | SimilarityResponse,
                              responses=EMBED_RESPONSES, name=f"embed{path.replace('/', '_')}",
                              description="An /embed or a /similarity body (TEI routes by the model's task).")

    async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Any:
        """OpenAI's embeddings: normalised vectors, float or base64, with token usage."""
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        check_count(len(texts), cfg)
        out, tokens = await vectors(texts, request, truncate=True, direction="right", prompt_name=None,
                                    dimensions=body.dimensions, normalize=True)
        if body.encoding_format == "base64":
            data: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in out]
        else:
            data = list(out)
        return json_response({
            "object": "list", "model": service.engine.model_config.model,
            "data": [{"object": "embedding", "index": i, "embedding": vec} for i, vec in enumerate(data)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    for path in ("/v1/embeddings", "/embeddings"):
        app.add_api_route(path, openai_embeddings, methods=["POST"], response_model=OpenAIEmbeddingResponse,
                          responses=EMBED_RESPONSES, name=f"openai{path.replace('/', '_')}",
                          summary="OpenAI embeddings")
