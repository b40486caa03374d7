"""The baseline a user would write: FastAPI calling ``transformers.pipeline`` once per request.

The same ``POST /predict`` batch shape as padless and TEI (``{"inputs": [[text], ...]}`` → one list of
``{label, score}`` per text), so one load generator drives both.
Run: ``python -m padless.bench.baseline_server MODEL_DIR PORT``.
The pipeline call is synchronous inside an ``async def`` route — exactly the common pattern — so requests are
served one at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    inputs: list[Annotated[list[str], Field(min_length=1, max_length=1)]]


def create_app(model_dir: str) -> Any:
    from fastapi import FastAPI
    from transformers import pipeline

    from padless.runtime.torch import auto_device

    # Where padless's torch backend runs on this machine (its device "auto"), so both servers get the same hardware.
    pipe = pipeline("text-classification", model=model_dir, device=auto_device(), top_k=None)
    app = FastAPI(title="pipeline baseline")

    @app.post("/predict")
    async def predict(body: PredictRequest) -> Any:
        texts = [seq[0] for seq in body.inputs]
        out: Any = pipe(texts, truncation=True)
        return [[{"label": d["label"], "score": d["score"]} for d in row] for row in out]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(create: Callable[[str], Any] = create_app) -> None:
    """``python -m … MODEL_DIR PORT``: serve ``create(MODEL_DIR)`` on loopback (the embedding baseline passes its
    own app)."""
    import uvicorn

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(create(model_dir), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
