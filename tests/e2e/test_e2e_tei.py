"""TEI parity on a real server: Hugging Face's own client unchanged, TEI's input rule and shapes, pairs, /rerank,
/tokenize, /decode, the health routes and /info.

Every score is checked against the dummy backend's logits for that input alone (computed in this process from the
tokenizer's own ids and token_type_ids), so a pair read as two texts, or a batch scrambled, shows up as a wrong value.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import Server, softmax

LABELS = ["negative", "neutral", "positive"]
MAX_LENGTH = 16  # the shared server runs with --max-length 16


def _unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def dummy_logits(tiny_model_dir: Path, tokenizer: Any) -> Callable[..., np.ndarray]:
    """The dummy backend's logits for one text, or one (text, text_pair), scored alone."""
    from padless.loader import read_info
    from padless.runtime.dummy import DummyRuntime

    runtime = DummyRuntime(read_info(tiny_model_dir))

    def compute(text: str, text_pair: str | None = None, max_length: int = MAX_LENGTH) -> np.ndarray:
        enc = tokenizer(text, text_pair, truncation=True, max_length=max_length)
        ids = np.asarray([enc["input_ids"]], dtype=np.int64)
        types = np.asarray([enc["token_type_ids"]], dtype=np.int64) if text_pair is not None else None
        return runtime.forward(ids, np.ones_like(ids), types)[0].astype(np.float64)

    return compute


def _check(scores: list[Any], logits: np.ndarray, labels: list[str] = LABELS, k: int | None = None) -> None:
    """`scores` (dicts or huggingface_hub elements) are the best-first top-k of softmax(logits)."""
    probs = softmax(logits)
    order = sorted(range(len(labels)), key=lambda i: -probs[i])[: k or len(labels)]
    got = [(s["label"], s["score"]) if isinstance(s, dict) else (s.label, s.score) for s in scores]
    assert [label for label, _ in got] == [labels[i] for i in order]
    assert [score for _, score in got] == pytest.approx([float(probs[i]) for i in order], abs=1e-6)


# -- Hugging Face's own client, unchanged ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["base_url", "model"])
def test_inference_client_text_classification(server: Server, dummy_logits: Callable[..., np.ndarray],
                                              monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from huggingface_hub import InferenceClient

    monkeypatch.delenv("HF_TOKEN", raising=False)
    text = _unique("a great film")
    with InferenceClient(**{how: server.url}, timeout=30) as client:  # the server root, as for TEI
        every = client.text_classification(text)
        top1 = client.text_classification(text, top_k=1)
        top2 = client.text_classification(text, top_k=2)
    _check(every, dummy_logits(text))
    _check(top1, dummy_logits(text), k=1)
    _check(top2, dummy_logits(text), k=2)


def test_async_inference_client_text_classification(server: Server, dummy_logits: Callable[..., np.ndarray],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import AsyncInferenceClient

    monkeypatch.delenv("HF_TOKEN", raising=False)
    texts = [_unique("dull and far too long"), _unique("wonderful"), _unique("fine")]

    async def run() -> list[Any]:
        async with AsyncInferenceClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.text_classification(t, top_k=2) for t in texts))

    for text, out in zip(texts, asyncio.run(run())):
        _check(out, dummy_logits(text), k=2)


# -- TEI's input rule, over plain HTTP -------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["/", "/invocations", "/predict"])
def test_tei_shapes_singles_pairs_and_batches(server: Server, dummy_logits: Callable[..., np.ndarray],
                                              route: str) -> None:
    a, b, c = _unique("A man is eating."), _unique("Someone eats food."), _unique("nobody eats")
    with server.client() as client:
        one = client.post(route, json={"inputs": a})
        one_listed = client.post(route, json={"inputs": [a]})
        pair = client.post(route, json={"inputs": [a, b]})
        batch = client.post(route, json={"inputs": [[a], [a, b], [c], [b, c]]})
        three = client.post(route, json={"inputs": [a, b, c]})
    for r in (one, one_listed, pair, batch):
        assert r.status_code == 200, r.text
    _check(one.json(), dummy_logits(a))
    _check(one_listed.json(), dummy_logits(a))
    _check(pair.json(), dummy_logits(a, b))
    assert not np.allclose(dummy_logits(a, b), dummy_logits(f"{a} {b}")), "a pair must differ from its joined text"
    body = batch.json()
    assert len(body) == 4
    for scores, (x, y) in zip(body, [(a, None), (a, b), (c, None), (b, c)]):
        _check(scores, dummy_logits(x, y))
    assert three.status_code == 422
    assert three.json()["error_type"] == "validation_error" and "ambiguous" in three.json()["error"]


def test_pair_is_truncated_longest_first(server: Server, dummy_logits: Callable[..., np.ndarray],
                                         tokenizer: Any) -> None:
    short, long = _unique("short"), _unique("a much longer hypothesis that runs on " * 4)
    with server.client() as client:
        r = client.post("/predict", json={"inputs": [short, long]})
        refused = client.post("/predict", json={"inputs": [short, long], "truncate": False})
        info = client.post("/v1/classify", json={"inputs": [{"text": short, "text_pair": long}]})
    assert r.status_code == 200, r.text
    _check(r.json(), dummy_logits(short, long))  # transformers' truncation="longest_first" to max_length
    assert refused.status_code == 422 and refused.json()["error_type"] == "too_long"
    assert info.json()["results"][0]["tokens"] == MAX_LENGTH
    assert len(tokenizer(short, long)["input_ids"]) > MAX_LENGTH


def test_v1_classify_text_pair_matches_predict(server: Server, dummy_logits: Callable[..., np.ndarray]) -> None:
    a, b = _unique("the premise"), _unique("the hypothesis")
    with server.client() as client:
        r = client.post("/v1/classify", json={"inputs": [{"id": "p", "text": a, "text_pair": b}, a,
                                                         {"id": "bad", "text": a, "text_pair": "  "}], "top_k": 0})
    assert r.status_code == 200, r.text
    pair, single, bad = r.json()["results"]
    assert pair["id"] == "p"
    _check(pair["scores"], dummy_logits(a, b))
    _check(single["scores"], dummy_logits(a))
    assert bad["error"]["type"] == "empty_input" and "text_pair" in bad["error"]["message"]


def test_health_routes(server: Server) -> None:
    with server.client() as client:
        for path in ("/", "/ping", "/ready"):
            r = client.get(path)
            assert r.status_code == 200 and r.json() == {"status": "ready"}, (path, r.text)
        assert client.get("/health").json() == {"status": "ok"}


def test_info_has_teis_fields(server: Server) -> None:
    with server.client() as client:
        info = client.get("/info").json()
    assert info["model_type"] == {"classifier": {"id2label": {"0": "negative", "1": "neutral", "2": "positive"},
                                                 "label2id": {"negative": 0, "neutral": 1, "positive": 2}}}
    assert info["max_input_length"] == MAX_LENGTH and info["max_client_batch_size"] == 8
    assert info["labels"] == LABELS  # padless's own fields stay


# -- /tokenize and /decode ------------------------------------------------------------------------------------------

def test_tokenize_and_decode(server: Server, tokenizer: Any) -> None:
    text = "Hello world, héllo!"
    with server.client() as client:
        r = client.post("/tokenize", json={"inputs": text})
        plain = client.post("/tokenize", json={"inputs": [text, "two"], "add_special_tokens": False})
    assert r.status_code == 200, r.text
    (tokens,) = r.json()
    assert [t["id"] for t in tokens] == tokenizer(text)["input_ids"]
    assert tokens[0] == {"id": tokenizer.cls_token_id, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1]["text"] == "[SEP]" and tokens[-1]["special"] is True
    for t in tokens[1:-1]:
        assert t["special"] is False and t["text"] == text[t["start"]:t["stop"]]
    first, second = plain.json()
    assert [t["id"] for t in first] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [t["text"] for t in second] == ["two"]
    ids = [t["id"] for t in tokens]
    with server.client() as client:
        single = client.post("/decode", json={"ids": ids})
        batch = client.post("/decode", json={"ids": [ids, ids], "skip_special_tokens": False})
        outside = client.post("/decode", json={"ids": [ids[0], 10**9]})
    assert single.json() == [tokenizer.decode(ids, skip_special_tokens=True)]
    assert batch.json() == [tokenizer.decode(ids)] * 2 and batch.json()[0].startswith("[CLS]")
    assert outside.status_code == 422 and "vocabulary" in outside.json()["error"]


# -- /rerank --------------------------------------------------------------------------------------------------------

def test_rerank_needs_a_one_label_model(server: Server) -> None:
    with server.client() as client:
        r = client.post("/rerank", json={"query": "q", "texts": ["a", "b"]})
    assert r.status_code == 424
    assert set(r.json()) == {"error", "error_type", "request_id"} and "re-ranker" in r.json()["error"]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny 1-label BERT (a cross-encoder's shape: one relevance logit per (query, text) pair)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-reranker")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, num_labels=1, id2label={0: "relevance"}, label2id={"relevance": 0})
    BertForSequenceClassification(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_rerank_orders_by_score(server_factory: Callable[..., Server], reranker_dir: Path, tokenizer: Any) -> None:
    from padless.loader import read_info
    from padless.runtime.dummy import DummyRuntime

    runtime = DummyRuntime(read_info(reranker_dir))
    query = "what is deep learning?"
    texts = ["Deep learning is a kind of machine learning.", "cheese", "neural networks with many layers", "x"]

    def logit(text: str) -> float:
        enc = tokenizer(query, text, truncation=True, max_length=64)
        ids = np.asarray([enc["input_ids"]], dtype=np.int64)
        return float(runtime.forward(ids, np.ones_like(ids), np.asarray([enc["token_type_ids"]]))[0, 0])

    server = server_factory("--max-length", "64", model_dir=reranker_dir)
    try:
        with server.client() as client:
            ranked = client.post("/rerank", json={"query": query, "texts": texts})
            raw = client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True,
                                               "return_text": True})
            info = client.get("/info").json()
            empty = client.post("/rerank", json={"query": query, "texts": []})
    finally:
        server.stop()
    assert ranked.status_code == 200, ranked.text
    logits = [logit(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -logits[i])
    assert [r["index"] for r in ranked.json()] == order
    assert all(set(r) == {"index", "score"} for r in ranked.json())  # no text unless return_text
    for r in ranked.json():
        assert r["score"] == pytest.approx(1 / (1 + np.exp(-logits[r["index"]])), abs=1e-6)
    for r in raw.json():
        assert r["score"] == pytest.approx(logits[r["index"]], abs=1e-6) and r["text"] == texts[r["index"]]
    assert "reranker" in info["model_type"]
    assert empty.status_code == 422
