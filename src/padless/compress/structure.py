"""Structural surgery on BERT-family classifiers: remove attention heads, FFN neurons and whole layers.

Contract: each function edits a transformers ``*ForSequenceClassification`` model in place, so that its weight
matrices really shrink (dense kernels then do less work), and keeps ``model.config`` describing the result, so that
``save_pretrained`` writes an ordinary Hugging Face folder:

* FFN neurons: the same number kept in every layer, so ``config.intermediate_size`` says it;
* layers: ``config.num_hidden_layers``;
* heads: ``config.pruned_heads`` (``{layer: [removed heads]}``, in the original numbering) — the key that
  transformers up to 4.x applied on load; transformers 5 ignores it, so :func:`padless.models.load_model` applies
  it. ``num_attention_heads`` keeps the original count, which keeps the head size (hidden / heads) right.

Supported: models whose encoder layers have BERT's module names (BERT, RoBERTa, XLM-R, ELECTRA):
``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from padless.errors import ModelError


def layers_of(model: Any) -> Any:
    """The encoder's layer list; refuses architectures without BERT's module names."""
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not all(
            hasattr(layer, "attention") and hasattr(layer.attention, "self") and hasattr(layer, "intermediate")
            for layer in layers):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ModelError(f"structured pruning supports BERT-family encoders (bert, roberta, xlm-roberta, electra); "
                         f"this model is {kind!r}")
    return layers


def head_size(model: Any) -> int:
    config: Any = model.config
    return int(config.hidden_size // config.num_attention_heads)


def heads_in(model: Any, layer: int) -> int:
    return int(layers_of(model)[layer].attention.self.query.out_features // head_size(model))


def remaining_heads(model: Any, layer: int) -> list[int]:
    """Original head numbers still present in ``layer``, in order."""
    gone = {int(h) for h in (_pruned(model).get(layer) or [])}
    return [h for h in range(int(model.config.num_attention_heads)) if h not in gone]


def _pruned(model: Any) -> dict[int, list[int]]:
    return {int(k): [int(h) for h in v] for k, v in (getattr(model.config, "pruned_heads", None) or {}).items()}


def _slice(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (``dim=0``) or input columns (``dim=1``) ``keep`` of ``linear``."""
    weight = linear.weight.detach().index_select(dim, keep).clone()
    bias: torch.Tensor | None = None
    if linear.bias is not None:
        bias = (linear.bias.detach().index_select(0, keep) if dim == 0 else linear.bias.detach()).clone()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def cut_heads(model: Any, keep: Mapping[int, Sequence[int]], *, record: bool = True) -> None:
    """Keep only heads ``keep[layer]`` (positions among the layer's *current* heads) in each named layer.

    ``record`` adds the removed heads, in the original numbering, to ``config.pruned_heads``; loading (which
    rebuilds the full-width model and replays the recorded pruning) passes False.
    """
    layers = layers_of(model)
    size = head_size(model)
    pruned = _pruned(model)
    for index, kept in keep.items():
        layer = layers[index]
        current = remaining_heads(model, index) if record else list(range(heads_in(model, index)))
        kept = sorted(set(int(k) for k in kept))
        if not kept:
            raise ModelError(f"layer {index} would lose every attention head; keep at least one")
        if kept[-1] >= len(current):
            raise ModelError(f"layer {index} has {len(current)} heads; cannot keep head {kept[-1]}")
        rows = torch.cat([torch.arange(k * size, (k + 1) * size) for k in kept])
        attn = layer.attention.self
        attn.query, attn.key, attn.value = (_slice(m, rows, 0) for m in (attn.query, attn.key, attn.value))
        layer.attention.output.dense = _slice(layer.attention.output.dense, rows, 1)
        if hasattr(attn, "all_head_size"):  # transformers' own bookkeeping, for code that reads it
            attn.all_head_size = len(kept) * size
            attn.num_attention_heads = len(kept)
        if record:
            removed = [current[k] for k in range(len(current)) if k not in kept]
            pruned[index] = sorted(set(pruned.get(index, [])) | set(removed))
    if record:
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
        layer.intermediate.dense = _slice(layer.intermediate.dense, idx, 0)
        layer.output.dense = _slice(layer.output.dense, idx, 1)
    model.config.intermediate_size = counts.pop()


def keep_layers(model: Any, indices: Sequence[int]) -> None:
    """Keep encoder layers ``indices`` (in that order); renumbers ``pruned_heads`` to match."""
    layers = layers_of(model)
    indices = [int(i) for i in indices]
    if not indices or len(set(indices)) != len(indices) or not all(0 <= i < len(layers) for i in indices):
        raise ModelError(f"cannot keep layers {indices} of a {len(layers)}-layer encoder")
    pruned = _pruned(model)
    model.base_model.encoder.layer = nn.ModuleList([layers[i] for i in indices])
    model.config.num_hidden_layers = len(indices)
    model.config.pruned_heads = {str(new): pruned[old] for new, old in enumerate(indices) if pruned.get(old)}


def apply_pruned_heads(model: Any) -> None:
    """Replay ``config.pruned_heads`` on a freshly built full-width model (before its weights are loaded)."""
    pruned = _pruned(model)
    heads = int(model.config.num_attention_heads)
    cut_heads(model, {layer: [h for h in range(heads) if h not in gone] for layer, gone in pruned.items()},
              record=False)


def linear_flops_per_token(model: Any) -> int:
    """Multiply-adds ×2 of the encoder's matrices per token: what structured pruning removes."""
    total = 0
    for layer in layers_of(model):
        for m in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                  layer.attention.output.dense, layer.intermediate.dense, layer.output.dense):
            total += 2 * m.in_features * m.out_features
    return total
