"""The embedding model the runtimes run and export: a Hugging Face encoder followed by its folder's pooling and, when
the folder says so, L2 normalisation — sentence-transformers' Transformer → Pooling → Normalize as one module.

Pooling is written with tensor ops only (no Python branching on tensor values), so the module traces and exports
(torch.onnx.export, openvino.convert_model) with dynamic batch and sequence axes. Rows are right-padded, as padless
pads them: only the positions the attention mask marks real are pooled, and ``cls`` is position 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from padless.errors import ModelError
from padless.loader.sentence import EmbeddingInfo, Pooling

MEAN_EPS = 1e-9  # sentence-transformers' clamp on the token count
NORM_EPS = 1e-12  # torch.nn.functional.normalize's default


def pool_states(states: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """Right-padded ``[rows, T, D]`` token states to ``[rows, D]``, over each row's real tokens (``attention_mask``
    1): their mean (``mean_sqrt_len``: their sum over √count), the first token (``cls``), their per-component
    maximum (``max``) or the last real token (``lasttoken``)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    if pooling in ("mean", "mean_sqrt_len"):
        count = mask.sum(dim=1).clamp(min=MEAN_EPS)
        return (states * mask).sum(dim=1) / (count if pooling == "mean" else count.sqrt())
    if pooling == "cls":
        return states[:, 0]
    if pooling == "max":
        return states.masked_fill(mask == 0, torch.finfo(states.dtype).min).max(dim=1).values
    if pooling == "lasttoken":
        # Position of each token (a cumulative sum needs no Python int for the length), the largest one masked in.
        positions = torch.ones_like(attention_mask, dtype=torch.int64).cumsum(dim=1) - 1
        last = (positions * attention_mask.to(torch.int64)).amax(dim=1)
        index = last.view(-1, 1, 1).expand(-1, 1, states.shape[-1])
        return torch.gather(states, 1, index).squeeze(1)
    raise ValueError(f"unknown pooling {pooling!r}")


class PooledEncoder(torch.nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids=None) -> [rows, D]`` float32 sentence embeddings,
    unit-length when ``info.normalize``; a row's vector does not depend on the padding around it."""

    def __init__(self, encoder: torch.nn.Module, info: EmbeddingInfo) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling: Pooling = info.pooling
        self.normalize = info.normalize

    @property
    def config(self) -> Any:
        """The encoder's config, so that padless's export helpers (example inputs, segments) take this module."""
        return self.encoder.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        states = self.encoder(**inputs).last_hidden_state.float()
        pooled = pool_states(states, attention_mask, self.pooling)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=NORM_EPS) if self.normalize else pooled


def load_pooled_encoder(path: str | Path, info: EmbeddingInfo, *, attn_implementation: str = "sdpa") -> PooledEncoder:
    """The folder's encoder (``info.transformer_path`` inside ``path``) in fp32 with ``info``'s pooling, eval mode;
    ModelError when transformers cannot load it."""
    from transformers import AutoModel

    where = Path(path) / info.transformer_path
    try:
        encoder = AutoModel.from_pretrained(str(where), attn_implementation=attn_implementation, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load an encoder from {where}: {err}") from None
    return PooledEncoder(encoder, info).eval()
