"""Which engine a model runs as: :attr:`~padless.config.ModelConfig.task` resolved against the model's folder, and
the engine built for it. Every face that takes any model (``padless serve``, its Ray Serve tiers, ``padless bench
serve``) loads through :func:`load_engine`, so a task decides only what the graph outputs and how a row is finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from padless import loader
from padless.config import EngineSpec
from padless.embedder import DEFAULT, Embedder, resolve_model
from padless.engine import Classifier, Engine
from padless.errors import ConfigError
from padless.loader import manifest as optimized
from padless.runtime import ModelInfo


def resolve_task(model: str, task: str = "auto") -> str:
    """``classify`` or ``embed``: ``task`` unless it is ``auto``, then the folder's own (``default`` is padless's
    default classifier; ``default`` with ``embed`` is the default embedding model)."""
    if task in ("classify", "embed"):
        return task
    if task != "auto":
        raise ConfigError(f"unknown task {task!r}; choose one of auto, classify, embed")
    if model == DEFAULT:
        return "classify"
    return str(loader.detect_task(loader.resolve(model)))


def model_path(model: str, task: str) -> Path:
    """The folder ``model`` names for a resolved ``task``."""
    return resolve_model(model) if task == "embed" else loader.resolve(model)


def serving_info(path: Path, task: str) -> ModelInfo | None:
    """What a server's graph computes for an embedding folder: pooled vectors *without* the folder's normalisation
    (TEI's ``normalize`` and OpenAI's route decide it per request), except in a ``padless optimize`` folder, whose
    variants were built and gated as the folder says. None for a classifier."""
    if task != "embed":
        return None
    from dataclasses import replace

    info = loader.read_info(path, task="embed")
    if info.embedding is None or optimized.is_optimized(path):
        return info
    return replace(info, embedding=replace(info.embedding, normalize=False))


def load_engine(spec: EngineSpec, *, serving: bool = False, runtime_options: dict[str, Any] | None = None) -> Engine:
    """The :class:`~padless.engine.Classifier` or :class:`~padless.embedder.Embedder` that runs ``spec`` (validated
    first). ``serving``: an embedder whose graph leaves normalisation to the request (:func:`serving_info`)."""
    spec.validate()
    task = resolve_task(spec.model.model, spec.model.task)
    spec = spec.replace(task=task)
    if task == "classify":
        return Classifier.from_spec(spec, runtime_options=runtime_options)
    # Serving a plain folder: the graph leaves normalisation to the request (as serving_info says); an optimize
    # folder's variant runs as it was built. None: the folder's own choice.
    plain = serving and not optimized.is_optimized(model_path(spec.model.model, task))
    return Embedder.from_spec(spec, runtime_options=runtime_options, normalize=False if plain else None)
