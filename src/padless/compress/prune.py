"""Pruning a classifier: structured (attention heads, FFN neurons, optionally whole layers) or unstructured.

Contract: :func:`prune` reads a model folder and texts (labels optional), writes a smaller model folder and returns
its card (also saved as ``padless_prune.json``). Steps:

1. **Importance** on a sample of the user's text: a mask of ones multiplies the input of each layer's attention
   output projection (one entry per head) and of its FFN down projection (one per neuron); the gradient of the
   loss with respect to a mask entry is gradient × activation summed over the tokens (Michel et al., 2019; Molchanov
   et al., 2019). Its magnitude, summed over the sample, ranks heads and neurons. The loss is cross-entropy against
   the gold labels, or against the model's own top label where there are none.
2. **Cut** (structured): in every layer keep the most important ``1 − sparsity`` of the heads and of the FFN
   neurons (:mod:`padless.compress.structure`; the same count per layer, so the folder stays an ordinary Hugging
   Face one), and with ``drop_layers`` remove the layers whose kept units matter least in total.
   **Unstructured** (``method="magnitude"``): zero the smallest ``sparsity`` of every encoder weight matrix instead;
   shapes stay dense, so dense CPU kernels do exactly the same work — reports must show that it is no faster.
3. **Recovery**: a short fine-tune (:mod:`padless.compress.trainer`) towards the original model's own outputs
   (soft targets), plus the gold labels where given; in magnitude mode the zeros are kept zero after every step.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padless.compress import structure
from padless.compress.trainer import TrainSpec, train
from padless.errors import ConfigError

METHODS = ("structured", "magnitude")


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """How much to remove and how to recover. See ``padless prune --help``."""

    sparsity: float | None = None  # share of heads and FFN neurons (or weights, magnitude) removed
    target_speedup: float | None = None  # instead: remove 1 − 1/x of the encoder's matrix work (structured)
    drop_layers: int = 0
    method: str = "structured"
    sample_rows: int = 512  # texts that score importance
    recovery: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=1.0, learning_rate=5e-5))

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown pruning method {self.method!r}; choose {' or '.join(METHODS)}")
        if (self.sparsity is None) == (self.target_speedup is None):
            raise ConfigError("give exactly one of --sparsity and --target-speedup")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity is a share in [0, 1), got {self.sparsity}")
        if self.target_speedup is not None and (self.target_speedup < 1 or self.method != "structured"):
            raise ConfigError("--target-speedup is ≥ 1 and applies to structured pruning (magnitude pruning "
                              "removes no work from dense kernels)")
        if self.drop_layers < 0 or (self.drop_layers and self.method != "structured"):
            raise ConfigError("--drop-layers is a non-negative count and applies to structured pruning")
        if self.sample_rows < 1:
            raise ConfigError("sample_rows must be positive")
        self.recovery.validate()

    @property
    def share_removed(self) -> float:
        if self.sparsity is not None:
            return self.sparsity
        assert self.target_speedup is not None
        return 1 - 1 / self.target_speedup  # matrix work falls in proportion to the heads and neurons kept


def importance(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], *,
               batch_size: int = 16, max_length: int = 128) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, |d loss / d mask| summed over ``texts``: one score per head and one per FFN neuron."""
    layers = structure.layers_of(model)
    size = structure.head_size(model)
    head_masks = [torch.ones(structure.heads_in(model, i), requires_grad=True) for i in range(len(layers))]
    neuron_masks = [torch.ones(layer.intermediate.dense.out_features, requires_grad=True) for layer in layers]
    heads = [torch.zeros(len(m)) for m in head_masks]
    neurons = [torch.zeros(len(m)) for m in neuron_masks]
    hooks = []
    for layer, hm, nm in zip(layers, head_masks, neuron_masks):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(
            lambda _m, args, hm=hm: (args[0] * hm.repeat_interleave(size),)))
        hooks.append(layer.output.dense.register_forward_pre_hook(lambda _m, args, nm=nm: (args[0] * nm,)))
    model.eval()  # no dropout: the scores should not depend on the noise
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels[start:start + batch_size]))
            grads = torch.autograd.grad(loss, [*head_masks, *neuron_masks])
            for i in range(len(layers)):
                heads[i] += grads[i].abs()
                neurons[i] += grads[len(layers) + i].abs()
    finally:
        for h in hooks:
            h.remove()
    return heads, neurons


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    return sorted(torch.argsort(scores, descending=True)[:keep].tolist())


def cut(model: Any, heads: list[torch.Tensor], neurons: list[torch.Tensor], *, share_removed: float,
        drop_layers: int) -> dict[str, Any]:
    """Remove the least important heads and neurons (same count per layer) and layers; returns what was kept."""
    n_layers = len(heads)
    if drop_layers >= n_layers:
        raise ConfigError(f"cannot drop {drop_layers} of {n_layers} layers")
    keep_heads = max(1, round(len(heads[0]) * (1 - share_removed)))
    keep_neurons = max(1, round(len(neurons[0]) * (1 - share_removed)))
    head_keep = {i: _top(h, keep_heads) for i, h in enumerate(heads)}
    neuron_keep = {i: _top(n, keep_neurons) for i, n in enumerate(neurons)}
    # A layer's worth is what its kept units contribute, each kind normalised over the whole model so that heads
    # and neurons weigh alike.
    h_total = sum(float(h.sum()) for h in heads) or 1.0
    n_total = sum(float(n.sum()) for n in neurons) or 1.0
    worth = [float(heads[i][head_keep[i]].sum()) / h_total + float(neurons[i][neuron_keep[i]].sum()) / n_total
             for i in range(n_layers)]
    kept_layers = sorted(sorted(range(n_layers), key=lambda i: -worth[i])[: n_layers - drop_layers])
    structure.cut_heads(model, head_keep)
    structure.cut_neurons(model, neuron_keep)
    if drop_layers:
        structure.keep_layers(model, kept_layers)
    return {"heads_per_layer": keep_heads, "neurons_per_layer": keep_neurons, "layers_kept": kept_layers,
            "layer_worth": [round(w, 4) for w in worth]}


def magnitude_masks(model: Any, sparsity: float) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude ``sparsity`` of each encoder weight matrix; returns the masks (1 = kept)."""
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and ".encoder." in f".{name}":
                k = int(p.numel() * sparsity)
                if k:
                    threshold = p.abs().flatten().kthvalue(k).values
                    masks[name] = (p.abs() > threshold).to(p.dtype)
                    p.mul_(masks[name])
    return masks


def prune(model_dir: str | Path, out_dir: str | Path, texts: Sequence[str], labels: Sequence[int] | None,
          cfg: PruneConfig, *, sources: Sequence[str] = (), on_step: Callable[[int, int, float], None] | None = None,
          say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Prune ``model_dir`` into ``out_dir`` (see the module docstring); returns the card. ``sources`` describes
    where the texts came from, for the card."""
    from transformers import AutoTokenizer

    from padless.engine import Classifier
    from padless.loader import load_model

    cfg.validate()
    started = time.perf_counter()
    torch.manual_seed(cfg.recovery.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    say(f"scoring the original model on {len(texts)} texts (soft targets for recovery)")
    reference = Classifier(str(model_dir), backend="onnx", max_length=cfg.recovery.max_length)
    teacher = reference.logits(list(texts))[0]
    if np.isnan(teacher).any():
        raise ConfigError("some texts could not be scored (empty?); clean the data first")
    targets = list(labels) if labels is not None else teacher.argmax(1).tolist()
    model = load_model(model_dir, attn_implementation="eager")
    flops_before = structure.linear_flops_per_token(model)
    params_before = sum(p.numel() for p in model.parameters())
    after_step = None
    if cfg.method == "structured":
        sample = random.Random(cfg.recovery.seed).sample(range(len(texts)), min(cfg.sample_rows, len(texts)))
        say(f"importance of heads and neurons on {len(sample)} texts")
        heads, neurons = importance(model, tokenizer, [texts[i] for i in sample], [targets[i] for i in sample],
                                    max_length=cfg.recovery.max_length)
        kept = cut(model, heads, neurons, share_removed=cfg.share_removed, drop_layers=cfg.drop_layers)
    else:
        assert cfg.sparsity is not None
        masks = magnitude_masks(model, cfg.sparsity)
        params = dict(model.named_parameters())

        def after_step() -> None:
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)

        kept = {"zeroed_weight_share": cfg.sparsity, "matrices": len(masks)}
    say("recovery fine-tune")
    steps, _ = train(model, tokenizer, texts, spec=cfg.recovery, teacher_logits=teacher,
                  labels=list(labels) if labels is not None else None, on_step=on_step, after_step=after_step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    flops_after = structure.linear_flops_per_token(model)
    card = {
        "kind": "pruned", "method": cfg.method, "source": str(model_dir), "config": asdict(cfg),
        "texts": len(texts), "data": list(sources), "labelled": labels is not None, **kept,
        "parameters": {"before": params_before, "after": sum(p.numel() for p in model.parameters())},
        "matrix_flops_per_token": {"before": flops_before, "after": flops_after,
                                   "ratio": round(flops_after / flops_before, 4)},
        "recovery_steps": steps, "seconds": round(time.perf_counter() - started, 1),
    }
    if cfg.method == "magnitude":
        card["note"] = ("unstructured: the zeroed weights are still stored and multiplied; dense CPU kernels do the "
                        "same work, so expect no speed-up (padless optimize measures it)")
    (out / "padless_prune.json").write_text(json.dumps(card, indent=2) + "\n")
    return card

