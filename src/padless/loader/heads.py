"""Attention heads of a head-pruned BERT-family classifier: the part of structural surgery that loading needs.

A ``padless prune`` folder records the heads it removed in ``config.pruned_heads`` (``{layer: [removed heads]}``,
in the original numbering). transformers up to 4.x replayed that key on load; transformers 5 ignores it, so
:func:`padless.loader.folders.load_model` builds the full-width model and calls :func:`apply_pruned_heads` before
loading the weights. The pruning itself (choosing heads, neurons and layers) is :mod:`padless.compress.structure`,
which builds on the helpers here.

Supported: models whose encoder layers have BERT's module names (BERT, RoBERTa, XLM-R, ELECTRA):
``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Heads the layer has now (its query projection's width over the head size)."""
    return int(layers_of(model)[layer].attention.self.query.out_features // head_size(model))


def pruned_heads(model: Any) -> dict[int, list[int]]:
    """``config.pruned_heads`` with integer keys and heads (JSON stores the layer numbers as strings)."""
    return {int(k): [int(h) for h in v] for k, v in (getattr(model.config, "pruned_heads", None) or {}).items()}


def slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
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


def keep_heads(model: Any, index: int, kept: Sequence[int]) -> None:
    """Shrink layer ``index`` to the heads at positions ``kept`` among its *current* heads (no bookkeeping in the
    config: that is the caller's)."""
    layer = layers_of(model)[index]
    size = head_size(model)
    current = heads_in(model, index)
    kept = sorted(set(int(k) for k in kept))
    if not kept:
        raise ModelError(f"layer {index} would lose every attention head; keep at least one")
    if kept[-1] >= current:
        raise ModelError(f"layer {index} has {current} heads; cannot keep head {kept[-1]}")
    rows = torch.cat([torch.arange(k * size, (k + 1) * size) for k in kept])
    attn = layer.attention.self
    attn.query, attn.key, attn.value = (slice_linear(m, rows, 0) for m in (attn.query, attn.key, attn.value))
    layer.attention.output.dense = slice_linear(layer.attention.output.dense, rows, 1)
    if hasattr(attn, "all_head_size"):  # transformers' own bookkeeping, for code that reads it
        attn.all_head_size = len(kept) * size
        attn.num_attention_heads = len(kept)


def apply_pruned_heads(model: Any) -> None:
    """Replay ``config.pruned_heads`` on a freshly built full-width model (before its weights are loaded)."""
    heads = int(model.config.num_attention_heads)
    for layer, gone in pruned_heads(model).items():
        keep_heads(model, layer, [h for h in range(heads) if h not in gone])
