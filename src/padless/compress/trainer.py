"""The training loop shared by pruning's recovery fine-tune and distillation: soft and/or hard targets, on the CPU.

Contract: :func:`train` updates ``model`` in place on ``texts``, with the loss

* soft (``teacher_logits`` given): ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, the teacher's full
  distribution at temperature ``T`` (Hinton et al., 2015);
* hard (``labels`` given; ``-1`` marks a row without one): cross-entropy against the label;
* both: ``alpha · soft + (1 − alpha) · hard`` on rows with a label, soft alone on the others.

Batches are grouped by length (the training twin of the inference planner) in an order fixed by the seed, so the
same seed, data and thread count give the same weights. With a ``state_dir`` it checkpoints every
``checkpoint_every`` steps (model, optimiser, schedule, step, RNG; written atomically) and ``resume=True`` carries
on from the last checkpoint to the same weights an uninterrupted run gives.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from padless.train import _length_grouped_batches, adamw_with_warmup, padded_batch

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """Hyper-parameters of one training run (see the module docstring for the loss)."""

    epochs: float = 1.0  # fractions allowed: 0.5 runs half an epoch's batches
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_length: int = 128
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft loss on rows that also have a hard label
    seed: int = 42
    checkpoint_every: int = 100
    threads: int = 0

    def validate(self) -> None:
        from padless.errors import ConfigError

        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0 or self.max_length < 2:
            raise ConfigError("epochs, batch_size, learning_rate and max_length must be positive")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ConfigError(f"temperature must be > 0 and alpha in 0..1 (got {self.temperature}, {self.alpha})")
        if self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be at least 1")


def _batches(lengths: Sequence[int], spec: TrainSpec) -> list[list[int]]:
    rng = random.Random(spec.seed)
    whole = math.ceil(spec.epochs)
    batches = [b for _ in range(whole) for b in _length_grouped_batches(lengths, spec.batch_size, rng)]
    per_epoch = math.ceil(len(lengths) / spec.batch_size)
    return batches[: max(1, round(per_epoch * spec.epochs))]


def train(model: Any, tokenizer: Any, texts: Sequence[str], *, spec: TrainSpec,
          teacher_logits: np.ndarray | None = None, labels: Sequence[int] | None = None,
          state_dir: Path | None = None, resume: bool = False, stop_after: int | None = None,
          on_step: Callable[[int, int, float], None] | None = None,
          after_step: Callable[[], None] | None = None) -> tuple[int, int]:
    """Train ``model`` (see the module docstring); returns the optimiser steps done so far and the run's total.

    ``stop_after`` ends the run after that many steps, leaving a checkpoint (for tests of resume); ``after_step``
    runs after every optimiser step (pruning masks use it to keep removed weights at zero).
    """
    spec.validate()
    if teacher_logits is None and labels is None:
        raise ValueError("train needs teacher logits, labels, or both")
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    encoded = tokenizer(list(texts), truncation=True, max_length=spec.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    batches = _batches(lengths, spec)
    soft = torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32)) if teacher_logits is not None else None
    hard = torch.tensor(list(labels), dtype=torch.long) if labels is not None else None

    total = len(batches)
    optimizer, scheduler = adamw_with_warmup(model, learning_rate=spec.learning_rate,
                                             weight_decay=spec.weight_decay, total_steps=total,
                                             warmup_fraction=spec.warmup_fraction)
    step = 0
    checkpoint = state_dir / CHECKPOINT if state_dir is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])

    pad_id = tokenizer.pad_token_id or 0
    model.train()
    for batch in batches[step:]:
        ids, mask = padded_batch(encoded, batch, pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = _loss(logits, soft[batch] if soft is not None else None, hard[batch] if hard is not None else None,
                     spec)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"training diverged at step {step} (loss {value})")
        if on_step is not None:
            on_step(step, total, value)
        if checkpoint is not None and (step % spec.checkpoint_every == 0 or step == stop_after):
            _save(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step})
        if stop_after is not None and step >= stop_after:
            break
    model.eval()
    return step, total


def _loss(logits: torch.Tensor, soft: torch.Tensor | None, hard: torch.Tensor | None,
          spec: TrainSpec) -> torch.Tensor:
    t = spec.temperature
    soft_loss = None
    if soft is not None:
        per_row = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(soft / t, dim=-1), log_target=True,
                           reduction="none").sum(-1) * t * t
        soft_loss = per_row
    if hard is None:
        assert soft_loss is not None
        return soft_loss.mean()
    has = hard >= 0
    hard_loss = torch.zeros(len(logits), dtype=logits.dtype)
    if has.any():
        hard_loss[has] = F.cross_entropy(logits[has], hard[has], reduction="none")
    if soft_loss is None:
        return hard_loss[has].sum() / has.sum().clamp(min=1)
    weight = torch.where(has, torch.tensor(spec.alpha), torch.tensor(1.0))
    return (weight * soft_loss + torch.where(has, 1 - weight, torch.tensor(0.0)) * hard_loss).mean()


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
