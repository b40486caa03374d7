"""What an embedding model folder asks for: its pooling, normalisation, length limit and prompts, read from the
folder's JSON alone (no torch, no transformers).

A sentence-transformers folder (``modules.json``) is read module by module; padless runs exactly Transformer →
Pooling → Normalize (optional) and refuses anything else (Dense, LayerNorm, a custom module) in one line. A plain
Hugging Face encoder folder is what sentence-transformers makes of it: Transformer + mean pooling (last-token for a
``*ForCausalLM`` model), no Normalize. (TEI differs there: it pools a plain BERT-like folder by CLS and refuses
any other without ``--pooling``; padless follows sentence-transformers, the reference its vectors are checked against.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from padless.errors import ConfigError, ModelError

Pooling = Literal["mean", "cls", "max", "lasttoken", "mean_sqrt_len"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")
# sentence-transformers' names for them: its `pooling_mode` values and legacy `pooling_mode_*` flags, in its order.
_ST_MODES = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len",
             "weightedmean": "weightedmean", "lasttoken": "lasttoken"}
_ST_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
             "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
             "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True, kw_only=True)
class EmbeddingInfo:
    """How to turn an encoder's token states into a folder's sentence embedding."""

    pooling: Pooling
    normalize: bool
    max_seq_length: int | None  # sentence_bert_config.json's; None: the tokenizer's and model's own limit
    dimension: int | None  # the Pooling module's word_embedding_dimension (None for a plain folder)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True  # always True for now: folders that pool without their prompt are refused
    source: Literal["sentence-transformers", "plain"] = "plain"
    transformer_path: str = ""  # the Transformer module's subfolder (the Hugging Face model), "" for the root
    truncate_dim: int | None = None  # config_sentence_transformers.json's default Matryoshka truncation


def is_sentence_transformers(path: str | Path) -> bool:
    return (Path(path) / "modules.json").is_file()


def pooling_name(name: str) -> Pooling:
    """A padless pooling name from padless's or sentence-transformers' spelling; ConfigError for anything else."""
    mode = _ST_MODES.get(name, name)
    if mode not in POOLINGS:
        raise ConfigError(f"unknown pooling {name!r}; padless pools with one of: {', '.join(POOLINGS)}")
    return mode  # type: ignore[return-value]


def read_embedding_info(path: str | Path, pooling: str | None = None) -> EmbeddingInfo:
    """The folder's :class:`EmbeddingInfo`; ``pooling`` (if given) overrides the folder's. ModelError, one line, for
    a folder padless cannot run as sentence-transformers would."""
    path = Path(path)
    override = pooling_name(pooling) if pooling is not None else None
    if is_sentence_transformers(path):
        info = _read_st_folder(path)
    elif (path / "config.json").is_file():
        config = _json(path / "config.json")
        archs = config.get("architectures") or [""]
        causal = str(archs[0]).endswith("ForCausalLM") and config.get("is_causal", True)
        info = EmbeddingInfo(pooling="lasttoken" if causal else "mean", normalize=False, max_seq_length=None,
                             dimension=None, source="plain")
    else:
        raise ModelError(f"{path} is neither a sentence-transformers folder (modules.json) nor a Hugging Face "
                         "model folder (config.json)")
    return info if override is None else replace(info, pooling=override)


def apply_prompt(text: str, info: EmbeddingInfo, prompt_name: str | None = None, prompt: str | None = None) -> str:
    """``text`` with its prompt in front, as sentence-transformers' encode does: an explicit ``prompt`` wins over
    ``prompt_name`` (which must be one of the folder's prompts: ConfigError otherwise); with neither, the folder's
    default prompt, if it has one."""
    if prompt is None:
        prompt = named_prompt(info.prompts, prompt_name, default=info.default_prompt_name)
    return text if not prompt else prompt + text


def named_prompt(prompts: dict[str, str], name: str | None, *, default: str | None = None) -> str:
    """The text of the prompt called ``name`` (ConfigError, one line, if ``prompts`` has none by that name), or with
    no name the ``default`` prompt's ("" when there is none)."""
    if name is None:
        return prompts.get(default, "") if default is not None else ""
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise ConfigError(f"prompt name {name!r} is not one of the model's prompts ({known})")
    return prompts[name]


def _json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {file}: {err}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{file} is not a JSON object")
    return data


def read_prompts(path: Path) -> dict[str, str]:
    """The named prompts of a folder's ``config_sentence_transformers.json`` (a cross-encoder may have them too);
    empty where there is none."""
    file = path / "config_sentence_transformers.json"
    return _prompts_of(_json(file)) if file.is_file() else {}


def _prompts_of(st_config: dict[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (st_config.get("prompts") or {}).items()}


def _module_kind(entry: dict[str, Any]) -> str:
    kind = str(entry.get("type", ""))
    return kind.rsplit(".", 1)[-1] if kind.startswith("sentence_transformers.") else kind


def _read_st_folder(path: Path) -> EmbeddingInfo:
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {path / 'modules.json'}: {err}") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelError(f"{path / 'modules.json'} is not a list of modules")
    kinds = [_module_kind(m) for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        other = [f"{k} ({m.get('path', '')})" for k, m in zip(kinds, modules)
                 if k not in ("Transformer", "Pooling", "Normalize")]
        what = f"a module padless cannot run: {', '.join(other)}" if other else f"modules {kinds}"
        raise ModelError(f"{path} has {what}; padless runs Transformer → Pooling → Normalize (optional)")
    transformer_path, pooling_path = str(modules[0].get("path", "")), str(modules[1].get("path", ""))
    bert = path / transformer_path / "sentence_bert_config.json"
    bert_config = _json(bert) if bert.is_file() else {}
    if bert_config.get("do_lower_case"):
        raise ModelError(f"{bert} sets do_lower_case, which padless does not apply; lowercase the texts "
                         "yourself and set it to false")
    if bert_config.get("module_output_name", "token_embeddings") != "token_embeddings":
        raise ModelError(f"{bert}: the Transformer module outputs {bert_config['module_output_name']!r}, not token "
                         "embeddings for padless to pool")
    normalize = len(modules) == 3
    norm_config = path / str(modules[2].get("path", "")) / "config.json" if normalize else None
    if norm_config is not None and norm_config.is_file():
        target = _json(norm_config).get("module_input_name", "sentence_embedding")
        if target != "sentence_embedding":
            raise ModelError(f"{norm_config}: padless only normalises the sentence embedding, not {target!r}")
    pool = _json(path / pooling_path / "config.json")
    if pool.get("include_prompt", True) is False:
        raise ModelError(f"{path / pooling_path}: include_prompt is false (prompt tokens left out of the pooling), "
                         "which padless does not support yet")
    st_config_file = path / "config_sentence_transformers.json"
    st_config = _json(st_config_file) if st_config_file.is_file() else {}
    if st_config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        raise ModelError(f"{path} is a sentence-transformers {st_config['model_type']}, not a SentenceTransformer")
    prompts = _prompts_of(st_config)
    default = st_config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelError(f"{st_config_file}: default_prompt_name {default!r} is not one of its prompts")
    max_len, dim, cut = (bert_config.get("max_seq_length"),
                         pool.get("word_embedding_dimension", pool.get("embedding_dimension")),
                         st_config.get("truncate_dim"))
    return EmbeddingInfo(pooling=_folder_pooling(path / pooling_path, pool), normalize=normalize,
                         max_seq_length=None if max_len is None else int(max_len),
                         dimension=None if dim is None else int(dim), prompts=prompts, default_prompt_name=default,
                         source="sentence-transformers", transformer_path=transformer_path,
                         truncate_dim=None if cut is None else int(cut))


def _folder_pooling(where: Path, pool: dict[str, Any]) -> Pooling:
    """The one pooling mode of a Pooling module's config, in its current (``pooling_mode``) or legacy (the
    ``pooling_mode_*`` flags; none set means mean, as in sentence-transformers) form."""
    mode = pool.get("pooling_mode")
    if mode is None:
        modes = [name for flag, name in _ST_FLAGS.items() if pool.get(flag)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1:
        raise ModelError(f"{where} concatenates pooling modes {modes}; padless pools with exactly one")
    try:
        return pooling_name(str(modes[0]))
    except ConfigError:
        raise ModelError(f"{where} pools with {modes[0]!r}, which padless does not support; it pools with one "
                         f"of: {', '.join(POOLINGS)}") from None
