"""The ONNX export (padless.loader.export): which inputs it takes, and that the fused graph still equals torch on
text pairs, whose second segment has token_type_ids 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from padless.loader import load_model
from padless.loader.export import EXPORT_TOLERANCE, ensure_onnx, export_onnx, graph_inputs, model_digest

PAIRS = [("A man is eating food.", "Someone is having a meal at a table outside."), ("ok", "not at all"),
         ("The film was long.", "It was short.")]


def _pair_batch(model_dir: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    enc = tokenizer([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True, return_tensors="np")
    batch = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert batch["token_type_ids"].any() and not batch["attention_mask"].all()  # two segments, and padding
    return batch


def _ort(onnx_file: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], feed)[0])


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "trained_minilm_dir"])
def test_bert_graphs_take_segments_and_match_torch_on_pairs(fixture: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    out = tmp_path / "model.onnx"
    notes = export_onnx(model_dir, out)
    assert notes["fused"] is True and float(notes["max_abs_diff_vs_torch"]) <= EXPORT_TOLERANCE  # type: ignore[arg-type]
    assert graph_inputs(out) == ["input_ids", "attention_mask", "token_type_ids"]
    embed = [n for n in onnx.load(str(out)).graph.node if n.op_type == "EmbedLayerNormalization"]
    assert len(embed) == 1 and embed[0].input[1].startswith("token_type_ids")  # the fused op reads the segments
    feed = _pair_batch(model_dir)
    with torch.inference_mode():
        ref = load_model(model_dir)(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    got = _ort(out, feed)
    assert np.abs(got - ref).max() <= EXPORT_TOLERANCE
    # Not vacuous: the segments change the logits, so a graph that ignored them would fail the comparison.
    blind = _ort(out, {**feed, "token_type_ids": np.zeros_like(feed["token_type_ids"])})
    assert np.abs(blind - ref).max() > 100 * EXPORT_TOLERANCE


def test_a_model_with_one_segment_type_keeps_two_inputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """RoBERTa has ``type_vocab_size`` 1: it takes token_type_ids in forward, but they can only be zeros."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128, max_position_embeddings=514, num_labels=2,
                           type_vocab_size=1, pad_token_id=0)
    folder = tmp_path / "tiny-roberta"
    RobertaForSequenceClassification(config).eval().save_pretrained(folder)
    notes = export_onnx(folder, tmp_path / "roberta.onnx")
    assert graph_inputs(tmp_path / "roberta.onnx") == ["input_ids", "attention_mask"]
    assert notes["inputs"] == ["input_ids", "attention_mask"]
    assert float(notes["max_abs_diff_vs_torch"]) <= EXPORT_TOLERANCE  # type: ignore[arg-type]


def test_the_cache_key_covers_the_export_format(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files cached by an exporter with other inputs (format 1 had no token_type_ids) are never picked up."""
    from padless.loader import cache_dir, export

    current = model_digest(tiny_model_dir)
    with monkeypatch.context() as patch:  # not monkeypatch.undo(): that would also drop the isolated cache
        patch.setattr(export, "EXPORT_FORMAT", 1)
        older = model_digest(tiny_model_dir)
    assert current != older
    stale = cache_dir() / "onnx" / older / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an export by an older padless")
    assert ensure_onnx(tiny_model_dir) == cache_dir() / "onnx" / current / "model.onnx"
    assert "token_type_ids" in graph_inputs(ensure_onnx(tiny_model_dir))
