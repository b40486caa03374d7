"""Structural surgery on BERT-family classifiers: remove attention heads, FFN neurons and whole layers.

Contract: each function edits a transformers ``*ForSequenceClassification`` model in place, so that its weight
matrices really shrink (dense kernels then do less work), and keeps ``model.config`` describing the result, so that
``save_pretrained`` writes an ordinary Hugging Face folder:

* FFN neurons: the same number kept in every layer, so ``config.intermediate_size`` says it;
* layers: ``config.num_hidden_layers``;
* heads: ``config.pruned_heads`` (``{layer: [removed heads]}``, in the original numbering) — the key that
  transformers up to 4.x applied on load; transformers 5 ignores it, so :func:`padless.loader.folders.load_model`
  applies it (with :mod:`padless.loader.heads`, whose helpers this module builds on). ``num_attention_heads``
  keeps the original count, which keeps the head size (hidden / heads) right.

Supported: models whose encoder layers have BERT's module names (BERT, RoBERTa, XLM-R, ELECTRA):
``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from padless.errors import ModelError
from padless.loader.heads import head_size, heads_in, keep_heads, layers_of, pruned_heads, slice_linear

# The helpers that loading a pruned folder needs live in the loader; they are part of this module's API too.
__all__ = ["cut_heads", "cut_neurons", "head_size", "heads_in", "keep_layers", "layers_of", "linear_flops_per_token",
           "remaining_heads"]


def remaining_heads(model: Any, layer: int) -> list[int]:
    """Original head numbers still present in ``layer``, in order."""
    gone = {int(h) for h in (pruned_heads(model).get(layer) or [])}
    return [h for h in range(int(model.config.num_attention_heads)) if h not in gone]


def cut_heads(model: Any, keep: Mapping[int, Sequence[int]]) -> None:
    """Keep only heads ``keep[layer]`` (positions among the layer's *current* heads) in each named layer, and add
    the removed heads, in the original numbering, to ``config.pruned_heads``."""
    pruned = pruned_heads(model)
    for index, kept in keep.items():
        current = remaining_heads(model, index)
        kept = sorted(set(int(k) for k in kept))
        keep_heads(model, index, kept)
        removed = [current[k] for k in range(len(current)) if k not in kept]
        pruned[index] = sorted(set(pruned.get(index, [])) | set(removed))
    model.config.pruned_heads = {str(k): v for k, v in sorted(pruned.items()) if v}


def cut_neurons(model: Any, keep: Mapping[int, Sequence[int]]) -> None:
    """Keep FFN neurons ``keep[layer]`` in every layer; every layer must keep the same number (one config size)."""
    layers = layers_of(model)
    counts = {len(set(v)) for v in keep.values()}
    if set(keep) != set(range(len(layers))) or len(counts) != 1:
        raise ModelError("FFN pruning keeps the same number of neurons in every layer (one intermediate_size)")
    for index, kept in keep.items():
        idx = torch.tensor(sorted(set(int(k) for k in kept)), dtype=torch.long)
        layer = layers[index]
        layer.intermediate.dense = slice_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = slice_linear(layer.output.dense, idx, 1)
    model.config.intermediate_size = counts.pop()


def keep_layers(model: Any, indices: Sequence[int]) -> None:
    """Keep encoder layers ``indices`` (in that order); renumbers ``pruned_heads`` to match."""
    layers = layers_of(model)
    indices = [int(i) for i in indices]
    if not indices or len(set(indices)) != len(indices) or not all(0 <= i < len(layers) for i in indices):
        raise ModelError(f"cannot keep layers {indices} of a {len(layers)}-layer encoder")
    pruned = pruned_heads(model)
    model.base_model.encoder.layer = nn.ModuleList([layers[i] for i in indices])
    model.config.num_hidden_layers = len(indices)
    model.config.pruned_heads = {str(new): pruned[old] for new, old in enumerate(indices) if pruned.get(old)}


def linear_flops_per_token(model: Any) -> int:
    """Multiply-adds ×2 of the encoder's matrices per token: what structured pruning removes."""
    total = 0
    for layer in layers_of(model):
        for m in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                  layer.attention.output.dense, layer.intermediate.dense, layer.output.dense):
            total += 2 * m.in_features * m.out_features
    return total
