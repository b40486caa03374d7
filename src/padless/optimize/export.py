"""Export a Hugging Face sequence classifier to ONNX and fuse it for ONNX Runtime.

The export traces the eager-attention model (``torch.onnx.export``, opset 17) with dynamic batch and sequence axes;
inputs ``input_ids`` and ``attention_mask``, output ``logits``. BERT-family graphs are then fused by ONNX Runtime's
transformer optimizer (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu), which is what makes ORT
faster than eager PyTorch on short inputs. Every export is checked against PyTorch fp32 on a batch with padding
before it is used: an export that disagrees by more than ``EXPORT_TOLERANCE`` is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ModelError

EXPORT_TOLERANCE = 1e-4
OPSET = 17
# Model types whose graphs ORT's transformer optimizer knows how to fuse as BERT.
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "distilbert": "bert"}


def export_onnx(model_dir: str | Path, out_file: str | Path, *, fuse: bool = True) -> dict[str, object]:
    """Export ``model_dir`` to ``out_file`` (written atomically); returns what was done, for the manifest."""
    import torch
    from transformers import AutoConfig

    from padless.models import load_model

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    config = AutoConfig.from_pretrained(str(model_dir))
    model = load_model(model_dir, attn_implementation="eager")
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2307, 102, 0, 0, 0]], dtype=torch.long)
    ids = ids.clamp(max=int(config.vocab_size) - 1)
    mask = (ids != 0).long()
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about traced Python conditionals in
        # transformers' mask code; the check below compares outputs on other shapes, which is what matters.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "logits": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    plain = tmp.with_name(out.name + ".plain")
    os.replace(tmp, plain)
    fused = False
    max_diff = float("nan")
    model_type = str(getattr(config, "model_type", ""))
    if fuse and model_type in FUSABLE:
        from onnxruntime.transformers import optimizer

        heads, width = _attention_shape(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimizer.optimize_model(str(plain), model_type=FUSABLE[model_type], num_heads=heads,
                                                 hidden_size=width, opt_level=1)
        if optimized.get_fused_operator_statistics().get("Attention", 0):
            optimized.save_model_to_file(str(tmp))
            # A fusion that guessed wrong (a head-pruned model has fewer heads than the config's count, and the
            # exported reshapes say -1) computes something else: keep it only if it still matches torch.
            max_diff = check_against_torch(model, tmp)
            fused = max_diff <= EXPORT_TOLERANCE
    if not fused:
        os.replace(plain, tmp)
        max_diff = check_against_torch(model, tmp)
    plain.unlink(missing_ok=True)
    if not max_diff <= EXPORT_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"the ONNX export of {model_dir} differs from PyTorch by {max_diff:.2e} "
                         f"(> {EXPORT_TOLERANCE}); refusing to use it")
    os.replace(tmp, out)
    return {"opset": OPSET, "fused": fused, "max_abs_diff_vs_torch": float(max_diff)}


def _attention_shape(model: Any) -> tuple[int, int]:
    """Heads per layer and their total width, for ORT's attention fusion. A pruned model (``padless prune``) keeps
    the same number of heads in every layer, fewer than its config's count; 0, 0 lets ORT infer them otherwise."""
    from padless.compress import structure

    config = model.config
    if not getattr(config, "pruned_heads", None):
        return int(config.num_attention_heads), int(config.hidden_size)
    counts = {structure.heads_in(model, i) for i in range(len(structure.layers_of(model)))}
    if len(counts) != 1:
        return 0, 0
    heads = counts.pop()
    return heads, heads * structure.head_size(model)


def check_against_torch(model: object, onnx_file: Path) -> float:
    """Max |Δ logit| between PyTorch and ORT on a padded batch of shapes other than the traced ones."""
    import torch

    from padless.runtime.base import ModelInfo
    from padless.runtime.onnx import OnnxRuntime

    rng = np.random.default_rng(0)
    vocab = int(model.config.vocab_size)  # type: ignore[attr-defined]
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(3, 23), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    info = ModelInfo(id2label={}, problem_type=None, model_type="", hidden_size=0, num_layers=0,
                     non_embedding_params=0)
    ort_logits = OnnxRuntime(onnx_file, info, threads=1).forward(ids, mask)
    with torch.inference_mode():
        ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()  # type: ignore[operator]
    return float(np.abs(ort_logits - ref).max())


def model_digest(model_dir: str | Path) -> str:
    """A content hash of a model folder's config and weights: the cache key for its exports."""
    h = hashlib.sha256()
    root = Path(model_dir)
    for name in sorted(p.name for p in root.iterdir() if p.is_file()):
        if name == "config.json" or name.endswith((".safetensors", ".bin")):
            h.update(name.encode())
            with open(root / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def ensure_onnx(model_dir: str | Path, *, int8: bool = False) -> Path:
    """The fp32 (or plain dynamic int8) ONNX file for a model folder, exported once and cached.

    A ``padless optimize`` folder carries its own exports under ``variants/``; other folders are exported into
    ``$PADLESS_CACHE/onnx/<content hash>/``.
    """
    from padless.models import cache_dir

    root = Path(model_dir)
    own = root / "variants" / ("onnx-int8-dynamic" if int8 else "onnx-fp32") / "model.onnx"
    if own.is_file():
        return own
    target = cache_dir() / "onnx" / model_digest(root)
    fp32 = target / "model.onnx"
    if not fp32.is_file():
        export_onnx(root, fp32)
    if not int8:
        return fp32
    q = target / "model-int8.onnx"
    if not q.is_file():
        from padless.optimize.quantize import quantize_dynamic_file

        quantize_dynamic_file(fp32, q)
    return q


def copy_model_folder(src: str | Path, dst: str | Path) -> None:
    """Copy a Hugging Face folder's top-level files (config, tokenizer, weights) into ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for p in Path(src).iterdir():
        if p.is_file() and p.name != "manifest.json":
            shutil.copy2(p, dst / p.name)
