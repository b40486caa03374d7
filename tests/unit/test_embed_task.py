"""The embed task's model metadata: detect_task from a folder's JSON, read_info(task="embed") on plain and
sentence-transformers folders (no head needed, no labels, FLOPs figures as for classifiers), the classify path as
before, and the dummy runtime's deterministic vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from padless.errors import ConfigError, ModelError
from padless.loader import ModelInfo, detect_task, read_info
from padless.loader.sentence import EmbeddingInfo
from padless.runtime.dummy import DummyRuntime

BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "vocab_size": 100}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _plain(root: Path, archs: list[str] | None, **extra: object) -> Path:
    config = {**BERT, **extra, **({} if archs is None else {"architectures": archs})}
    _write(root / "config.json", config)
    return root


def _sentence_transformers(root: Path, *, normalize: bool = True) -> Path:
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    _write(root / "modules.json", modules)
    _write(root / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
    _write(root / "0_Transformer" / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    _plain(root / "0_Transformer", ["BertModel"])
    return root


def test_detect_task(tmp_path: Path) -> None:
    assert detect_task(_sentence_transformers(tmp_path / "st")) == "embed"
    assert detect_task(_plain(tmp_path / "cls", ["BertForSequenceClassification"])) == "classify"
    assert detect_task(_plain(tmp_path / "enc", ["BertModel"])) == "embed"
    assert detect_task(_plain(tmp_path / "mlm", ["BertForMaskedLM"])) == "embed"
    assert detect_task(_plain(tmp_path / "none", None)) == "embed"
    with pytest.raises(ModelError, match="cannot read the model config"):
        detect_task(tmp_path / "missing")


def test_read_info_embed_on_a_plain_encoder(tmp_path: Path) -> None:
    folder = _plain(tmp_path / "enc", ["BertModel"])
    info = read_info(folder, task="embed")
    assert info.task == "embed" and info.id2label == {} and info.problem_type is None
    assert info.embedding == EmbeddingInfo(pooling="mean", normalize=False, max_seq_length=None, dimension=None)
    # The FLOPs figures as for a classifier: per layer 4·h·h + 2·h·inter.
    assert (info.hidden_size, info.num_layers, info.attention_width) == (32, 2, 64)
    assert info.non_embedding_params == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert read_info(folder, task="embed", pooling="cls").embedding.pooling == "cls"  # type: ignore[union-attr]
    with pytest.raises(ModelError, match="no sequence-classification head"):
        read_info(folder)  # the classify path still refuses it


def test_read_info_embed_reads_the_transformer_module_of_a_sentence_transformers_folder(tmp_path: Path) -> None:
    info = read_info(_sentence_transformers(tmp_path / "st"), task="embed")
    assert info.embedding is not None and info.embedding.transformer_path == "0_Transformer"
    assert (info.embedding.pooling, info.embedding.normalize, info.embedding.max_seq_length) == ("cls", True, 128)
    assert (info.model_type, info.hidden_size, info.num_layers) == ("bert", 32, 2)


def test_the_classify_path_is_unchanged(tmp_path: Path) -> None:
    folder = _plain(tmp_path / "cls", ["BertForSequenceClassification"], id2label={"0": "neg", "1": "pos"},
                    problem_type="single_label_classification")
    info = read_info(folder)
    assert info.task == "classify" and info.embedding is None
    assert info.id2label == {0: "neg", 1: "pos"} and info.problem_type == "single_label_classification"
    assert info == read_info(folder, task="classify")
    with pytest.raises(ConfigError, match="embed task only"):
        read_info(folder, pooling="mean")
    with pytest.raises(ConfigError, match="unknown task"):
        read_info(folder, task="rank")  # type: ignore[arg-type]


def _embed_info(dimension: int | None, normalize: bool) -> ModelInfo:
    return ModelInfo(id2label={}, problem_type=None, model_type="bert", hidden_size=16, num_layers=1,
                     non_embedding_params=100,
                     embedding=EmbeddingInfo(pooling="mean", normalize=normalize, max_seq_length=None,
                                             dimension=dimension))


def test_the_dummy_runtime_returns_deterministic_vectors() -> None:
    ids = np.array([[5, 6, 7, 0], [5, 6, 7, 8], [9, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    unit = DummyRuntime(_embed_info(12, True)).forward(ids, mask)
    assert unit.dtype == np.float32 and unit.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    alone = DummyRuntime(_embed_info(12, True)).forward(ids[:1, :3], mask[:1, :3])
    np.testing.assert_array_equal(alone[0], unit[0])  # the padding changes nothing
    assert not np.allclose(unit[0], unit[1])
    raw = DummyRuntime(_embed_info(None, False)).forward(ids, mask)
    assert raw.shape == (3, 16)  # hidden_size where the folder names no dimension
