"""The embedding baseline a user would write: FastAPI calling ``SentenceTransformer.encode`` once per request.

The same ``POST /embed`` shape as padless and TEI (``{"inputs": [text, ...]}`` → one vector per text, normalised),
so one load generator drives both. Run: ``python -m padless.bench.baseline_embed_server MODEL_DIR PORT``.
``encode`` is synchronous inside an ``async def`` route, the common pattern, so requests are served one at a time,
each as one ``encode`` call with its default ``batch_size=32``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field


class EmbedRequest(BaseModel):
    inputs: str | Annotated[list[str], Field(min_length=1)]
    truncate: bool = True


def create_app(model_dir: str) -> Any:
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    from padless.runtime.torch import auto_device

    # Where padless's torch backend runs on this machine, so both servers get the same hardware.
    model = SentenceTransformer(model_dir, device=auto_device())
    app = FastAPI(title="sentence-transformers baseline")

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> Any:
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        return model.encode(texts, normalize_embeddings=True).tolist()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    from padless.bench import baseline_server

    baseline_server.main(create_app)


if __name__ == "__main__":
    main()
