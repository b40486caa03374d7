"""Where a real model matters: the torch backend behind the server must give what transformers gives for each text
alone, even when texts of very different lengths are padded into one batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch_server(server_factory: Callable[..., Server]) -> Iterator[Server]:
    server = server_factory("--threads", "1", backend="torch")
    yield server
    server.stop()


def test_torch_predictions_match_transformers(torch_server: Server, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    texts = ["great film", "a dull, plodding and far too long story " * 8, "ok", "the acting was wonderful, truly"]
    with torch_server.client() as c:
        r = c.post("/predict", json={"inputs": [[t] for t in texts]})  # TEI's batch of single texts
        info = c.get("/info").json()
    assert r.status_code == 200, r.text
    assert info["backend"]["backend"] == "torch"
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = BertForSequenceClassification.from_pretrained(str(tiny_model_dir)).eval()
    for text, scores in zip(texts, r.json()):
        with torch.no_grad():
            probs = torch.softmax(model(**tok(text, return_tensors="pt")).logits[0].double(), -1).tolist()
        expected = sorted(((model.config.id2label[i], p) for i, p in enumerate(probs)), key=lambda x: -x[1])
        assert [s["label"] for s in scores] == [label for label, _ in expected]
        for s, (_, p) in zip(scores, expected):
            assert s["score"] == pytest.approx(p, abs=1e-4)


@pytest.fixture(scope="module")
def optimized_server(server_factory: Callable[..., Server], tiny_model_dir: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`padless serve --model DIR` on a padless optimize folder of the tiny model (ONNX fp32 forced selected)."""
    from padless.optimize.search import OptimizeConfig, optimize

    out = tmp_path_factory.mktemp("opt") / "tiny-opt"
    optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set="vader-nyt", candidates=("torch-fp32", "onnx-fp32"),
                                                      calibration_rows=20, bench_texts=20, long_texts=2, rounds=1),
             say=lambda _: None)
    server = server_factory("--threads", "1", model_dir=out, backend="auto")
    yield server
    server.stop()


def test_an_optimized_folder_serves_its_selected_variant(optimized_server: Server, torch_server: Server) -> None:
    import json

    texts = ["great film", "a dull, plodding and far too long story " * 8, "ok"]
    with optimized_server.client() as c:
        info = c.get("/info").json()
        got = c.post("/predict", json={"inputs": [[t] for t in texts], "raw_scores": True}).json()
    manifest = json.loads((Path(info["model_path"]) / "manifest.json").read_text())
    assert info["backend"]["variant"] == manifest["selected"]
    assert info["backend"]["backend"] == ("onnx" if manifest["selected"].startswith("onnx") else "torch")
    with torch_server.client() as c:
        want = c.post("/predict", json={"inputs": [[t] for t in texts], "raw_scores": True}).json()
    for g, w in zip(got, want):  # both selections are fp32: the same logits within 1e-4
        assert [s["label"] for s in g] == [s["label"] for s in w]
        assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(g, w))


def test_auto_serves_a_plain_folder_on_onnx_with_torchs_outputs(server_factory: Callable[..., Server],
                                                                 torch_server: Server) -> None:
    """`padless serve` with the default --backend auto: ONNX Runtime fp32, the same logits as torch within 1e-4."""
    texts = ["great film", "a dull, plodding and far too long story " * 8, "ok"]
    server = server_factory("--threads", "1", backend="auto")
    try:
        with server.client() as c:
            info = c.get("/info").json()
            got = c.post("/predict", json={"inputs": [[t] for t in texts], "raw_scores": True}).json()
    finally:
        server.stop()
    assert info["backend"]["backend"] == "onnx" and info["backend"]["dtype"] == "float32"
    with torch_server.client() as c:
        want = c.post("/predict", json={"inputs": [[t] for t in texts], "raw_scores": True}).json()
    for g, w in zip(got, want):
        assert [s["label"] for s in g] == [s["label"] for s in w]
        assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(g, w))
