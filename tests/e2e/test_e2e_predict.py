"""The happy paths of a real server: /predict, /v1/classify, /metrics, /info, /openapi.json, and HF compatibility.

Scores are checked against values computed in this process (the dummy backend's logits for each text alone, then a
softmax), so a mix-up inside batching, caching or ordering shows up as a wrong number, not just a wrong status.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Server, metric, softmax

LABELS = ["negative", "neutral", "positive"]
MAX_LENGTH = 16  # the shared server runs with --max-length 16

Expected = Callable[[str, int], tuple[Any, int]]


def _unique(text: str) -> str:
    """A text no other test sent, so the result cache can not answer it."""
    return f"{text} {uuid.uuid4().hex[:8]}"


def _check_all_labels(scores: list[dict[str, Any]], expected: Any, *, probabilities: bool) -> None:
    assert [set(s) for s in scores] == [{"label", "score"}] * len(LABELS)
    assert sorted(s["label"] for s in scores) == sorted(LABELS)
    values = [s["score"] for s in scores]
    assert values == sorted(values, reverse=True), "scores must be best first"
    for s in scores:
        assert isinstance(s["score"], float) and math.isfinite(s["score"])
        assert s["score"] == pytest.approx(float(expected[LABELS.index(s["label"])]), abs=1e-9)
    if probabilities:
        assert sum(values) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= v <= 1.0 for v in values)


def test_health_and_ready(server: Server) -> None:
    with server.client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json() == {"status": "ready"}


def test_predict_one_string(server: Server, expected_logits: Expected) -> None:
    text = _unique("great film")
    with server.client() as c:
        r = c.post("/predict", json={"inputs": text})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert len(r.headers["x-request-id"]) >= 8
    body = r.json()  # TEI's shape: one input, one list of {label, score}
    assert isinstance(body, list) and len(body) == len(LABELS)
    logits, _ = expected_logits(text, MAX_LENGTH)
    _check_all_labels(body, softmax(logits), probabilities=True)


def test_predict_list_keeps_order_and_values(server: Server, expected_logits: Expected) -> None:
    # Different lengths (one over max_length, so truncated) land in different places of the length-sorted batches.
    texts = [_unique("a long and winding review " * 6), _unique("ok"), _unique("dull, far too long"),
             _unique("x"), _unique("the best thing I saw this year, truly wonderful acting")]
    with server.client() as c:
        r = c.post("/predict", json={"inputs": [[t] for t in texts]})  # TEI's batch: a list of [text]
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body) == len(texts)
    for text, scores in zip(texts, body):
        logits, _ = expected_logits(text, MAX_LENGTH)
        _check_all_labels(scores, softmax(logits), probabilities=True)


def test_predict_raw_scores_are_logits(server: Server, expected_logits: Expected) -> None:
    text = _unique("raw scores please")
    with server.client() as c:
        raw = c.post("/predict", json={"inputs": [text], "raw_scores": True})
        prob = c.post("/predict", json={"inputs": [text]})
    assert raw.status_code == 200 and prob.status_code == 200
    logits, _ = expected_logits(text, MAX_LENGTH)
    _check_all_labels(raw.json(), logits, probabilities=False)
    _check_all_labels(prob.json(), softmax(logits), probabilities=True)
    # The same ranking either way.
    assert [s["label"] for s in raw.json()] == [s["label"] for s in prob.json()]


def test_predict_truncate_false_names_the_limit(server: Server, tokenizer: Any) -> None:
    long_text = _unique("word " * 40)
    short_text = _unique("fits")
    assert len(tokenizer(long_text)["input_ids"]) > MAX_LENGTH
    with server.client() as c:
        refused = c.post("/predict", json={"inputs": long_text, "truncate": False})
        mixed = c.post("/predict", json={"inputs": [[short_text], [long_text]], "truncate": False})
        fits = c.post("/predict", json={"inputs": short_text, "truncate": False})
        cut = c.post("/predict", json={"inputs": long_text})  # truncation on (the default): answered
    for r in (refused, mixed):
        assert r.status_code == 422, r.text
        body = r.json()
        assert set(body) == {"error", "error_type", "request_id"}
        assert body["error_type"] == "too_long"
        assert str(MAX_LENGTH) in body["error"] and "max_length" in body["error"]
        assert body["request_id"] == r.headers["x-request-id"]
    assert "input 1" in mixed.json()["error"]
    assert fits.status_code == 200 and len(fits.json()) == 3
    assert cut.status_code == 200 and len(cut.json()) == 3


def test_predict_accepts_curl_style_content_type(server: Server) -> None:
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the server reads every POST body as JSON."""
    with server.client() as c:
        r = c.post("/predict", content=b'{"inputs": "plain curl"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert len(r.json()) == 3


# -- /v1/classify ---------------------------------------------------------------------------------------------------

def test_classify_ids_errors_top_k_tokens_timing(server: Server, expected_logits: Expected,
                                                 tiny_model_dir: Path) -> None:
    good = _unique("a fine film")
    plain = _unique("a plain string input with quite a few words in it to pass sixteen tokens")
    nameless = _unique("no id given")
    inputs: list[Any] = [{"id": "first", "text": good}, plain, {"text": nameless}, {"id": "empty", "text": ""},
                         {"id": "blank", "text": "   \n\t"}]
    with server.client() as c:
        r = c.post("/v1/classify", json={"inputs": inputs, "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"request_id", "model", "results", "timing_ms"}
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["model"] == str(tiny_model_dir)
    results = body["results"]
    assert [res["id"] for res in results] == ["first", "1", "2", "empty", "blank"]
    for res, text in zip(results[:3], (good, plain, nameless)):
        logits, n_tokens = expected_logits(text, MAX_LENGTH)
        probs = softmax(logits)
        assert res["error"] is None
        assert res["tokens"] == n_tokens and 3 <= n_tokens <= MAX_LENGTH
        assert res["cached"] is False
        assert len(res["scores"]) == 2
        best = int(probs.argmax())
        assert res["label"] == LABELS[best] and res["score"] == pytest.approx(float(probs[best]), abs=1e-9)
        assert res["scores"][0] == {"label": res["label"], "score": res["score"]}
        assert res["scores"][0]["score"] >= res["scores"][1]["score"]
        second = sorted(range(3), key=lambda i: -probs[i])[1]
        assert res["scores"][1]["label"] == LABELS[second]
    assert results[1]["tokens"] == MAX_LENGTH  # the plain string was truncated to the limit
    for res in results[3:]:
        assert res["error"]["type"] == "empty_input" and res["error"]["message"]
        assert res["label"] is None and res["score"] is None and res["scores"] == []
    timing = body["timing_ms"]
    assert {"tokenize", "queue_and_forward", "total"} <= set(timing)
    assert all(isinstance(v, float) and 0.0 <= v < 30_000 for v in timing.values())
    assert timing["total"] >= timing["queue_and_forward"]


@pytest.mark.parametrize("top_k,expected", [(0, 3), (1, 1), (3, 3), (7, 3)])
def test_classify_top_k(server: Server, top_k: int, expected: int) -> None:
    with server.client() as c:
        r = c.post("/v1/classify", json={"inputs": [_unique("top k")], "top_k": top_k})
    assert r.status_code == 200, r.text
    scores = r.json()["results"][0]["scores"]
    assert len(scores) == expected
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)


def test_classify_default_top_k_and_raw_scores(server: Server, expected_logits: Expected) -> None:
    text = _unique("raw classify")
    with server.client() as c:
        r = c.post("/v1/classify", json={"inputs": [text], "raw_scores": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    logits, _ = expected_logits(text, MAX_LENGTH)
    assert len(res["scores"]) == 1
    assert res["label"] == LABELS[int(logits.argmax())]
    assert res["score"] == pytest.approx(float(logits.max()), abs=1e-9)


def test_classify_all_errors_is_still_200(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/classify", json={"inputs": ["", " "]})
    assert r.status_code == 200, r.text
    assert [res["error"]["type"] for res in r.json()["results"]] == ["empty_input", "empty_input"]


def test_classify_second_call_is_cached_with_same_answer(server: Server) -> None:
    text = _unique("cache me")
    with server.client() as c:
        first = c.post("/v1/classify", json={"inputs": [{"id": "x", "text": text}], "top_k": 0}).json()["results"][0]
        second = c.post("/v1/classify", json={"inputs": [{"id": "x", "text": text}], "top_k": 0}).json()["results"][0]
    assert first["cached"] is False and second["cached"] is True
    assert second["tokens"] == first["tokens"]
    assert second["scores"] == first["scores"]


# -- /metrics, /info, /openapi.json ---------------------------------------------------------------------------------

def test_metrics_exposes_queue_batches_padding_stages_and_cache(server: Server) -> None:
    text = _unique("count my cache hit")
    before = server.metrics()
    with server.client() as c:
        a = c.post("/predict", json={"inputs": [[text], [_unique("and a second, longer text to force padding here")]]})
        b = c.post("/predict", json={"inputs": text})
        assert a.status_code == 200 and b.status_code == 200
        assert a.json()[0] == b.json()
        raw = c.get("/metrics")
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/plain")
    after = server.metrics()
    assert metric(after, "padless_cache_hits_total") - metric(before, "padless_cache_hits_total") == 1
    assert metric(after, "padless_cache_misses_total") - metric(before, "padless_cache_misses_total") == 2
    for name in ("padless_queue_inputs", "padless_queue_tokens", "padless_admitted_inputs",
                 "padless_padding_fraction"):
        assert any(n == name for n, _ in after), f"{name} missing from /metrics"
    assert metric(after, "padless_queue_inputs") == 0 and metric(after, "padless_admitted_inputs") == 0
    assert metric(after, "padless_batch_size_count") > metric(before, "padless_batch_size_count")
    assert metric(after, "padless_batch_size_sum") - metric(before, "padless_batch_size_sum") >= 2
    assert metric(after, "padless_batch_tokens_count") == metric(after, "padless_batch_size_count")
    assert metric(after, "padless_batch_size_bucket", le="+Inf") == metric(after, "padless_batch_size_count")
    real = metric(after, "padless_batch_real_tokens_total")
    padded = metric(after, "padless_batch_padded_tokens_total")
    assert 0 < real <= padded
    assert metric(after, "padless_padding_fraction") == pytest.approx(1 - real / padded, abs=1e-9)
    for stage in ("tokenize", "queue", "forward", "post"):
        assert metric(after, "padless_stage_seconds_count", stage=stage) > 0, stage
    assert metric(after, "padless_requests_total", route="/predict", status="200") >= 2


def test_info(server: Server, tiny_model_dir: Path) -> None:
    import padless

    with server.client() as c:
        info = c.get("/info").json()
    assert info["model"] == str(tiny_model_dir)
    assert info["labels"] == LABELS
    assert info["version"] == padless.__version__
    assert info["backend"]["backend"] == "dummy"
    assert info["backend"]["width_multiple"] == 1  # exact widths: the dummy backend asks for no rounding
    limits = info["limits"]
    assert limits["max_length"] == MAX_LENGTH
    assert limits["max_inputs_per_request"] == 8
    assert limits["max_body_bytes"] == 20000
    assert limits["max_queue_inputs"] > 0 and limits["request_timeout_s"] > 0
    assert len(info["revision"]) == 16


def test_openapi_lists_the_routes(server: Server) -> None:
    with server.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert "post" in spec["paths"]["/predict"] and "post" in spec["paths"]["/v1/classify"]
    assert "get" in spec["paths"]["/health"] and "get" in spec["paths"]["/info"]
    for route in ("/predict", "/v1/classify"):
        responses = spec["paths"][route]["post"]["responses"]
        assert {"200", "422", "429", "504"} <= set(responses)


# -- Hugging Face compatibility -------------------------------------------------------------------------------------

def test_response_parses_with_huggingface_types(server: Server) -> None:
    """With the Inference API's `parameters`, the body is what huggingface_hub parses for text-classification (a
    list of lists of label/score, of which it takes element 0)."""
    from huggingface_hub.inference._generated.types import TextClassificationOutputElement

    with server.client() as c:
        r = c.post("/predict", json={"inputs": _unique("great film"), "parameters": {}})
    parsed = TextClassificationOutputElement.parse_obj_as_list(r.content)[0]
    assert sorted(e.label for e in parsed) == sorted(LABELS)
    assert sum(e.score for e in parsed) == pytest.approx(1.0)


def test_huggingface_inference_client(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import InferenceClient

    monkeypatch.delenv("HF_TOKEN", raising=False)
    # The client posts to base_url as given (no route appended), so it must name the /predict route.
    with InferenceClient(base_url=f"{server.url}/predict", timeout=30) as client:
        out = client.text_classification("great film")
        assert sorted(e.label for e in out) == sorted(LABELS)
        assert sum(e.score for e in out) == pytest.approx(1.0)
        top = client.text_classification("great film", top_k=1)
        assert len(top) == 1


def test_openapi_declares_the_input_count_limits(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    inputs = schemas["ClassifyRequest"]["properties"]["inputs"]
    assert inputs.get("minItems") == 1 and inputs.get("maxItems") == 8, inputs
    options = [o for o in schemas["PredictRequest"]["properties"]["inputs"]["anyOf"] if o["type"] == "array"]
    pair, batch = options  # [text] or [text, text_pair]; a batch of those
    assert pair.get("minItems") == 1 and pair.get("maxItems") == 2, pair
    assert batch.get("minItems") == 1 and batch.get("maxItems") == 8, batch
    assert batch["items"]["maxItems"] == 2
