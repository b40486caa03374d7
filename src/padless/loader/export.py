"""Export a Hugging Face sequence classifier or embedding model to ONNX, fuse it for ONNX Runtime, and cache the result.

The export traces the eager-attention model (``torch.onnx.export``, opset 17) with dynamic batch and sequence axes;
inputs ``input_ids``, ``attention_mask`` and, for models with more than one segment type (BERT and MiniLM have two,
RoBERTa one; sentence-pair models need it), ``token_type_ids``; output ``logits`` for a classifier, ``embeddings``
(``rows × D``, the folder's pooling and normalisation inside the graph: :class:`padless.loader.embedding.PooledEncoder`)
for the embed task. BERT-family graphs are then fused
by ONNX Runtime's transformer optimizer (EmbedLayerNormalization, which takes the segment ids, Attention,
SkipLayerNormalization, BiasGelu), which is what makes ORT faster than eager PyTorch on short inputs. Every export is
checked against PyTorch fp32 on a padded batch with a two-segment row before it is used: an export that disagrees by
more than ``EXPORT_TOLERANCE`` is refused.

:func:`ensure_onnx` exports a model folder once into ``$PADLESS_CACHE/onnx/<digest>/``; the digest covers the
folder's config and weights and ``EXPORT_FORMAT``, so files written by an older exporter are never reused; for the
embed task also the task, pooling and normalisation (:func:`task_key`), so that a folder's classify and embed exports
never share a cache entry.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ConfigError, ModelError
from padless.loader.folders import cache_dir, load_model
from padless.loader.sentence import EmbeddingInfo

EXPORT_TOLERANCE = 1e-4
OPSET = 17
# Bumped whenever the exported graph changes shape (its inputs, outputs or axes); part of every cache key.
# 2: token_type_ids is an input for models with more than one segment type.
EXPORT_FORMAT = 2
# Model types whose graphs ORT's transformer optimizer knows how to fuse as BERT.
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "distilbert": "bert"}
# The graph's one output, per task: a classifier's logits, an embedding model's pooled vectors.
LOGITS = "logits"
EMBEDDINGS = "embeddings"


def output_name(embedding: EmbeddingInfo | None) -> str:
    """The name of the exported graph's output: ``embeddings`` for the embed task, ``logits`` for a classifier."""
    return LOGITS if embedding is None else EMBEDDINGS


def task_key(embedding: EmbeddingInfo | None) -> str:
    """What the task adds to an export's cache key: nothing for a classifier (its keys stay as they were), else the
    task, pooling and normalisation, which the embed graph computes."""
    if embedding is None:
        return ""
    return f";embed;pooling={embedding.pooling};normalize={int(embedding.normalize)}"


def load_for_export(model_dir: str | Path, embedding: EmbeddingInfo | None, *, attn_implementation: str) -> Any:
    """The fp32 module a graph is made from: the classifier, or for the embed task the encoder with its pooling
    (:func:`padless.loader.embedding.load_pooled_encoder`)."""
    if embedding is None:
        return load_model(model_dir, attn_implementation=attn_implementation)
    from padless.loader.embedding import load_pooled_encoder

    return load_pooled_encoder(model_dir, embedding, attn_implementation=attn_implementation)


def encoder_dir(model_dir: str | Path, embedding: EmbeddingInfo | None) -> Path:
    """The folder holding the weights that are exported (a sentence-transformers folder's Transformer module)."""
    return Path(model_dir) / (embedding.transformer_path if embedding is not None else "")


def takes_segments(model: Any) -> bool:
    """True when the model's forward takes ``token_type_ids`` and its embeddings tell more than one segment apart."""
    return ("token_type_ids" in inspect.signature(model.forward).parameters
            and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1)


def export_onnx(model_dir: str | Path, out_file: str | Path, *, fuse: bool = True,
                embedding: EmbeddingInfo | None = None) -> dict[str, object]:
    """Export ``model_dir`` to ``out_file`` (written atomically); returns what was done, for the manifest. With
    ``embedding``, the embed task's graph (output ``embeddings``), else the classifier's (``logits``)."""
    import torch

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    model = load_for_export(model_dir, embedding, attn_implementation="eager")
    config = model.config
    inputs = example_inputs(model)
    output = output_name(embedding)
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about traced Python conditionals in
        # transformers' mask code; the check below compares outputs on other shapes, which is what matters.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (), str(tmp), kwargs=inputs, input_names=list(inputs), output_names=[output],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in inputs}, output: {0: "batch"}},
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
    return {"opset": OPSET, "fused": fused, "inputs": list(inputs), "max_abs_diff_vs_torch": float(max_diff)}


def example_inputs(model: Any) -> dict[str, Any]:
    """The tensors a graph is traced with: a padded batch of two rows, and their segments where the model reads them
    (:func:`takes_segments`), so that the traced graph has a ``token_type_ids`` input."""
    import torch

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2307, 102, 0, 0, 0]], dtype=torch.long)
    ids = ids.clamp(max=int(model.config.vocab_size) - 1)
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    if takes_segments(model):
        inputs["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.long)
    return inputs


def _attention_shape(model: Any) -> tuple[int, int]:
    """Heads per layer and their total width, for ORT's attention fusion. A pruned model (``padless prune``) keeps
    the same number of heads in every layer, fewer than its config's count; 0, 0 lets ORT infer them otherwise."""
    config = model.config
    if not getattr(config, "pruned_heads", None):
        return int(config.num_attention_heads), int(config.hidden_size)
    if hasattr(model, "pooling"):  # a PooledEncoder: let ORT infer the heads
        return 0, 0
    from padless.loader.heads import head_size, heads_in, layers_of

    counts = {heads_in(model, i) for i in range(len(layers_of(model)))}
    if len(counts) != 1:
        return 0, 0
    heads = counts.pop()
    return heads, heads * head_size(model)


def check_against_torch(model: Any, onnx_file: Path) -> float:
    """Max |Δ| of the graph's one output (logits or embeddings) between PyTorch and ONNX Runtime on
    :func:`check_feed`'s padded batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    feed = check_feed(int(model.config.vocab_size), segments="token_type_ids" in {i.name for i in session.get_inputs()})
    (got,) = session.run([session.get_outputs()[0].name], feed)
    return float(np.abs(np.asarray(got, dtype=np.float32) - torch_logits(model, feed)).max())


def check_feed(vocab: int, *, segments: bool) -> dict[str, np.ndarray]:
    """The batch every converted graph is checked on: 3 rows padded to 23 tokens, shapes other than the traced ones.

    With ``segments`` (the graph takes ``token_type_ids``) the first row is a text pair (segment 0, then segment 1),
    so a conversion that drops or mishandles the segment embeddings is caught; the padded rows are single texts."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(3, 23), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    feed = {"input_ids": ids, "attention_mask": mask}
    if segments:
        types = np.zeros_like(ids)
        types[0, 11:] = 1
        feed["token_type_ids"] = types
    return feed


def torch_logits(model: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The reference: PyTorch fp32 output for a feed of int64 arrays (a classifier's logits, a
    :class:`~padless.loader.embedding.PooledEncoder`'s embeddings)."""
    import torch

    with torch.inference_mode():
        out = model(**{name: torch.from_numpy(a) for name, a in feed.items()})
        return (out if isinstance(out, torch.Tensor) else out.logits).float().numpy()


def graph_inputs(onnx_file: str | Path) -> list[str]:
    """The input names of an ONNX file (without loading its weights)."""
    import onnx

    return [i.name for i in onnx.load(str(onnx_file), load_external_data=False).graph.input]


def model_digest(model_dir: str | Path, *, export_format: str | None = None) -> str:
    """A content hash of a model folder's config and weights and of the export format (default: this module's ONNX
    export, ``padless-onnx-export/<EXPORT_FORMAT>``): the cache key for its exports."""
    h = hashlib.sha256(f"{export_format or f'padless-onnx-export/{EXPORT_FORMAT}'};".encode())
    root = Path(model_dir)
    for name in sorted(p.name for p in root.iterdir() if p.is_file()):
        if name == "config.json" or name.endswith((".safetensors", ".bin")):
            h.update(name.encode())
            with open(root / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def ensure_onnx(model_dir: str | Path, *, int8: bool = False, embedding: EmbeddingInfo | None = None) -> Path:
    """The fp32 (or plain dynamic int8) ONNX file for a model folder, exported once and cached.

    A ``padless optimize`` folder carries its own (classifier) exports under ``variants/``; other folders are
    exported into ``$PADLESS_CACHE/onnx/<digest>/`` (:func:`model_digest`, keyed also by :func:`task_key`). With
    ``embedding``, the embed task's graph (fp32 only for now).
    """
    root = Path(model_dir)
    if embedding is not None and int8:
        raise ConfigError("onnx-int8 is not available for the embed task yet; use onnx (fp32)")
    own = root / "variants" / ("onnx-int8-dynamic" if int8 else "onnx-fp32") / "model.onnx"
    if embedding is None and own.is_file():
        return own
    key = f"padless-onnx-export/{EXPORT_FORMAT}{task_key(embedding)}"
    target = cache_dir() / "onnx" / model_digest(encoder_dir(root, embedding), export_format=key)
    fp32 = target / "model.onnx"
    if not fp32.is_file():
        export_onnx(root, fp32, embedding=embedding)
    if not int8:
        return fp32
    q = target / "model-int8.onnx"
    if not q.is_file():
        from padless.loader.int8 import quantize_dynamic_file

        quantize_dynamic_file(fp32, q)
    return q
