"""The routes a Text Embeddings Inference (TEI) client expects of a classifier, with TEI's shapes and semantics.

``POST /predict`` classifies (the input rule is in :mod:`padless.server.schemas`), and so do ``POST /`` and
``POST /invocations`` (SageMaker) on a classifier (on an embedding model they embed: :mod:`padless.server.embed`);
every classify route takes TEI's ``truncation_direction`` and ``prompt_name`` and answers an embedding model with
TEI's 424; ``POST /rerank`` ranks texts against a query with a 1-label model (anything else:
424, as TEI answers); ``POST /tokenize`` and ``POST /decode`` expose the model's tokenizer. ``GET /`` and
``GET /ping`` are readiness checks (what TEI's health route means: the model answers), registered beside
``/ready`` in :mod:`padless.server.app`. Errors keep padless's one envelope and status table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, Request

from padless.errors import ModelError
from padless.server.http import check_count, deadline_for, request_id
from padless.server.schemas import (
    ERROR_RESPONSES,
    RERANK_RESPONSES,
    DecodeRequest,
    PredictParameters,
    PredictRequest,
    PredictResponse,
    Rank,
    RerankRequest,
    SimpleToken,
    TokenizeRequest,
)
from padless.server.service import Service

Item = str | tuple[str, str]


def read_predict_inputs(inputs: Any) -> tuple[list[Item], bool]:
    """TEI's reading of ``inputs`` (already validated by the schema): the items, and whether it was one input."""
    if isinstance(inputs, str):
        return [inputs], True
    if inputs and isinstance(inputs[0], str):  # [text] or [text, text_pair]: one input
        return [_item(inputs)], True
    return [_item(seq) for seq in inputs], False


def _item(seq: list[str]) -> Item:
    return seq[0] if len(seq) == 1 else (seq[0], seq[1])


def with_prompt(items: list[Any], prompt: str) -> list[Any]:
    """``items`` with ``prompt`` in front of each text (of a pair: in front of its first text)."""
    if not prompt:
        return items
    return [(prompt + item[0], item[1]) if isinstance(item, tuple) else prompt + item for item in items]


def add_tei_routes(app: FastAPI, service: Service) -> None:
    """Register the TEI routes on ``app`` (see the module docstring)."""
    cfg = service.server_config

    async def scored_rows(items: list[Item], body: PredictRequest | RerankRequest, request: Request) -> np.ndarray:
        """Logit rows for every item, or raise for the request: TEI fails the request on any item's error."""
        check_count(len(items), cfg)
        prompt = service.prompt(body.prompt_name)  # a request the spec refuses is a 422 whatever the model
        service.classifier  # noqa: B018 - an embedding model answers 424 before anything runs
        items = with_prompt(items, prompt)
        rows, _ = await service.run_whole(items, truncate=body.truncate, direction=body.truncation_direction,
                                          deadline=deadline_for(request, cfg), request_id=request_id(request),
                                          receive=request.receive)
        return rows

    async def predict(body: PredictRequest, request: Request) -> Any:
        """Classify a text, a pair or a batch (TEI's input rule); every label, best first."""
        items, single = read_predict_inputs(body.inputs)
        rows = await scored_rows(items, body, request)
        params = body.parameters or PredictParameters(top_k=None, function_to_apply=None)
        preds = service.classifier.post(rows, top_k=params.top_k or 0, raw_scores=body.raw_scores,
                                 function=params.function_to_apply)
        lists = [[{"label": label, "score": score} for label, score in p.scores] for p in preds]
        # TEI answers one input with one list; the Inference API (whose client sends `parameters`) with a list of
        # lists, and its client takes element [0] of the answer.
        return lists[0] if single and body.parameters is None else lists

    for path in ("/", "/invocations", "/predict") if service.task == "classify" else ("/predict",):
        app.add_api_route(path, predict, methods=["POST"], response_model=PredictResponse,
                          responses=ERROR_RESPONSES, name=f"predict{path.replace('/', '_')}")

    @app.post("/rerank", response_model=list[Rank], response_model_exclude_none=True, responses=RERANK_RESPONSES)
    async def rerank(body: RerankRequest, request: Request) -> Any:
        """Score each (query, text) pair with a 1-label model; best first. Other models answer 424."""
        check_count(len(body.texts), cfg)  # a request that breaks the schema is a 422 whatever the model
        service.prompt(body.prompt_name)
        labels = service.classifier.labels
        if len(labels) != 1:
            raise ModelError(f"model is not a re-ranker model: /rerank needs a 1-label (cross-encoder) model and "
                             f"this one has {len(labels)} labels; use /predict")
        rows = await scored_rows([(body.query, text) for text in body.texts], body, request)
        preds = service.classifier.post(rows, top_k=1, raw_scores=body.raw_scores)
        order = sorted(range(len(preds)), key=lambda i: (-preds[i].score, i))
        return [Rank(index=i, score=preds[i].score, text=body.texts[i] if body.return_text else None) for i in order]

    @app.post("/tokenize", response_model=list[list[SimpleToken]], responses=ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest, request: Request) -> Any:
        """The model's tokens for each text: id, text, whether special, character offsets (not truncated)."""
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        check_count(len(texts), cfg)
        return await service.tokenize(texts, add_special_tokens=body.add_special_tokens,
                                      deadline=deadline_for(request, cfg))

    @app.post("/decode", response_model=list[str], responses=ERROR_RESPONSES)
    async def decode(body: DecodeRequest, request: Request) -> Any:
        """Text for each list of token ids."""
        batch = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]
        check_count(len(batch), cfg)
        return await service.decode(batch, skip_special_tokens=body.skip_special_tokens,  # type: ignore[arg-type]
                                    deadline=deadline_for(request, cfg))
