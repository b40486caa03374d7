"""`padless bench embed`: padless's Embedder against SentenceTransformer.encode. The padding that sentence-transformers
computes is reproduced from its sort and batching (checked by hand here); end to end on the tiny BERT read as an
embedding model (a plain folder: sentence-transformers and padless both mean-pool it)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import run_cli

from padless.bench.embed import OUTPUT, cosines, run_embed_bench, st_computed_tokens, st_order
from padless.machine import simd_flags


def test_st_order_is_longest_first_by_characters() -> None:
    assert st_order([3, 10, 1, 7]) == [1, 3, 0, 2]


def test_st_computed_tokens_by_hand() -> None:
    # Characters decide the order (longest first), tokens the padding: text 2 has the most characters but few
    # tokens, so the first batch of two (texts 2 and 0) is padded to text 0's 9 tokens.
    chars = [50, 10, 80, 30, 20]
    tokens = [9, 3, 4, 6, 5]
    # order: 2 (80), 0 (50), 3 (30), 4 (20), 1 (10) -> tokens 4, 9 | 6, 5 | 3
    assert st_computed_tokens(chars, tokens, 2) == 2 * 9 + 2 * 6 + 1 * 3
    assert st_computed_tokens(chars, tokens, 5) == 5 * 9
    assert st_computed_tokens(chars, tokens, 1) == sum(tokens)
    with pytest.raises(ValueError):
        st_computed_tokens(chars, tokens[:-1], 2)


@pytest.fixture(scope="module")
def tiny_st(tiny_model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def test_st_order_and_tokens_are_what_encode_really_runs(tiny_st: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy on the batches encode preprocesses: their texts come in st_order (ties included), and their padded
    shapes add up to st_computed_tokens."""
    texts = ["bb", "a", "dddd dddd", "ccc", "ee", "f", "gggggg gg gg", "hh", "the same length?", "ee"]
    batches: list[list[str]] = []
    computed = 0
    real_preprocess = tiny_st.preprocess

    def spy(inputs: list[str], *args: Any, **kwargs: Any) -> Any:
        nonlocal computed
        batches.append(list(inputs))
        features = real_preprocess(inputs, *args, **kwargs)
        computed += int(features["input_ids"].shape[0] * features["input_ids"].shape[1])
        return features

    monkeypatch.setattr(tiny_st, "preprocess", spy)
    tiny_st.encode(texts, batch_size=3, show_progress_bar=False)
    order = st_order([len(t) for t in texts])
    assert [t for batch in batches for t in batch] == [texts[i] for i in order]
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    tokens = [len(ids) for ids in tiny_st.tokenizer(texts)["input_ids"]]
    assert st_computed_tokens([len(t) for t in texts], tokens, 3) == computed


def test_cosines() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert cosines(a, b) == pytest.approx([1.0, 2 ** -0.5])


@pytest.fixture(scope="module")
def embed_result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-embed")
    return run_embed_bench(str(tiny_model_dir), mix="realistic", n=20, rounds=1, seed=0, out_dir=out,
                           peak_size=256, command=["test"]), out


def test_embed_bench_end_to_end(embed_result: tuple[dict[str, Any], Path], tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from padless.bench.workload import make_workload
    from padless.embedder import Embedder

    result, out = embed_result
    saved = json.loads((out / OUTPUT).read_text())
    configs = saved["configs"]
    assert list(configs) == ["st-b32", "st-b128", "padless"]
    assert saved["machine"]["cpu_flags"] == simd_flags()
    assert saved["command"] == ["test"] and saved["method"]["rounds"] == 1
    for entry in configs.values():
        assert entry["texts_per_s"] == pytest.approx(statistics.median(20 / s for s in entry["seconds_per_round"]))
        assert 0 < entry["model_flops_pct_of_peak"]
    # ratios: one round, so each is exactly the quotient of the texts/s
    ratios = saved["ratios"]
    assert set(ratios) == {"st-b128_vs_st-b32", "padless_vs_st-b32", "padless_vs_st-b128"}
    for key, value in ratios.items():
        name, other = key.split("_vs_")
        assert value == pytest.approx(configs[name]["texts_per_s"] / configs[other]["texts_per_s"])
    # the same fp32 model on torch: the same vectors
    assert configs["padless"]["min_cosine_vs_st_b32"] >= 0.99999
    assert configs["padless"]["stats_real_tokens"] == saved["workload"]["real_tokens"]
    assert saved["workload"]["st_token_lengths_match"]
    # sentence-transformers' padding, computed independently from the texts: its sort, its batches
    emb = Embedder(str(tiny_model_dir), backend="torch")
    texts = make_workload(emb.encoder.tokenizer, "realistic", 20, 0)
    st = SentenceTransformer(str(tiny_model_dir), device="cpu")
    tokens = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]
    ordered = sorted(range(20), key=lambda i: -len(texts[i]))
    assert len({len(t) for t in texts}) == 20  # no ties, so a stable sort gives the same order
    for name, size in (("st-b32", 32), ("st-b128", 128)):
        # 20 texts: one batch either way, padded to the longest
        computed = sum(max(tokens[i] for i in ordered[k:k + size]) * len(ordered[k:k + size])
                       for k in range(0, 20, size))
        assert configs[name]["computed_tokens"] == computed == 20 * max(tokens)
        assert configs[name]["padding_fraction"] == pytest.approx(1 - sum(tokens) / computed)
    assert configs["padless"]["padding_fraction"] < configs["st-b32"]["padding_fraction"]


@pytest.mark.slow
def test_bench_embed_cli(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["bench", "--model", str(tiny_model_dir), "-n", "12", "--out-dir", str(tmp_path),
                              "embed", "--rounds", "1"], monkeypatch, capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / OUTPUT).read_text())
    assert saved["workload"]["n"] == 12 and set(saved["configs"]) == {"st-b32", "st-b128", "padless"}
    assert saved["command"][:2] == ["padless", "bench"]
    assert "st-b32" in out and "wrote" in out


@pytest.mark.slow
def test_bench_embed_with_the_classify_twin(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--classify adds padless's Classifier on the same encoder and texts: the same real tokens through the engine,
    and the embed-over-classify ratio, paired per round like every other ratio."""
    code, out, err = run_cli(["bench", "--model", str(tiny_model_dir), "-n", "16", "--out-dir", str(tmp_path),
                              "embed", "--rounds", "2", "--classify"], monkeypatch, capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / OUTPUT).read_text())
    twin = saved["configs"]["padless-classify"]
    assert twin["stats_real_tokens"] == saved["configs"]["padless"]["stats_real_tokens"]
    assert twin["stats_real_tokens"] == saved["workload"]["real_tokens"] and "min_cosine_vs_st_b32" not in twin
    per_round = [c / e for c, e in zip(twin["seconds_per_round"], saved["configs"]["padless"]["seconds_per_round"])]
    assert saved["ratios"]["padless_vs_padless-classify"] == pytest.approx(statistics.median(per_round))
    assert "padless-classify" in out


@pytest.mark.slow
def test_embed_bench_with_onnx(tiny_model_dir: Path) -> None:
    result = run_embed_bench(str(tiny_model_dir), n=12, rounds=2, backends=["onnx"], peak_size=256, command=[])
    configs, ratios = result["configs"], result["ratios"]
    assert list(configs) == ["st-b32", "st-b128", "padless", "padless-onnx"]
    assert {"padless-onnx_vs_st-b32", "padless-onnx_vs_st-b128"} <= set(ratios)
    assert configs["padless-onnx"]["min_cosine_vs_st_b32"] >= 0.9999
    assert result["method"]["orders"][1][0] == "st-b128"  # the order rotates from round to round
    assert len(configs["padless-onnx"]["seconds_per_round"]) == 2


def test_gated_variant_reports_the_manifests_fidelity_figures(tmp_path: Path) -> None:
    """An optimize folder's selected variant comes with the three figures its gate measured; a plain folder none."""
    from padless.bench.embed import gated_variant
    from padless.loader import manifest as mf

    assert gated_variant(tmp_path) is None
    figures = {"cosine_mean": 0.99998, "cosine_p1": 0.99996, "recall_at_10": 0.992, "rows": 2000, "queries": 200,
               "passed": True, "cosine_min": 0.9999}
    mf.write(tmp_path, {"selected": "openvino-bf16", "gate": {"min_recall_at_10": 0.95},
                        "candidates": [{"name": "torch-fp32", "eval": {**figures, "recall_at_10": 1.0}},
                                       {"name": "openvino-bf16", "eval": figures}]})
    got = gated_variant(tmp_path)
    assert got == {"selected": "openvino-bf16", "gate": {"min_recall_at_10": 0.95},
                   **{k: v for k, v in figures.items() if k != "cosine_min"}}
