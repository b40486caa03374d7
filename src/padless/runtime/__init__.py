"""Backends: each turns a padded batch of token ids into logits, or for the embed task (``info.embedding`` set) into
pooled vectors computed inside the same graph. See :mod:`padless.runtime.base`.

Backend names (``--backend``):

* ``auto``: the variant a ``padless optimize`` folder selected (its manifest says which), else ``torch``;
* ``torch``, ``torch-bf16``, ``torch-fp16`` (CUDA), ``torch-int8`` (CPU dynamic quantization);
* ``onnx``: ONNX Runtime fp32 with BERT-family fusions; ``onnx-int8``: the same, dynamically quantized to int8
  (every quantizable node, not gated: ``padless optimize`` finds the variant that passes the accuracy gate);
  with the options ``fallback_file`` and ``fallback_margin`` (set by an optimize folder's manifest) an ONNX
  runtime recomputes low-margin rows with a second, exact file (:mod:`padless.runtime.fallback`);
* ``openvino``: OpenVINO on an IR converted from the model (checked within 1e-4 of torch), precision hint f32;
  ``openvino-bf16``: the same IR with the bf16 hint (CPUs with avx512_bf16 or AMX); ``openvino-int8``: an NNCF int8
  IR (on a plain folder calibrated on padless's generic sample, :func:`padless.loader.openvino.ensure_openvino`)
  with the f32 hint; ``openvino-int8-bf16``: that IR with the bf16 hint. Options: ``ir_file`` (an explicit IR, set
  by an optimize folder's manifest) and ``precision`` (``float32`` or ``bfloat16``, overriding the name's);
* ``dummy``: deterministic, weightless, for tests.

The embed task (``info.embedding`` set, :func:`padless.loader.read_info` with ``task="embed"``) runs ``torch``,
``torch-bf16``, ``torch-fp16``, ``onnx``, ``openvino``, ``openvino-bf16`` and ``dummy``, each returning ``rows × D``
float32 vectors, pooled (and normalised, where the folder says so) inside the model or graph; its exports are cached
apart from the classifier's. The int8 backends (and the ONNX fallback pair) refuse it for now.
"""

from __future__ import annotations

import os
from typing import Any

from padless.errors import ConfigError
from padless.runtime.base import ModelInfo, Runtime

TORCH_PRECISION = {"torch": "float32", "torch-bf16": "bfloat16", "torch-fp16": "float16", "torch-int8": "int8"}
# backend -> (int8 IR, precision hint)
OPENVINO = {"openvino": (False, "float32"), "openvino-bf16": (False, "bfloat16"), "openvino-int8": (True, "float32"),
            "openvino-int8-bf16": (True, "bfloat16")}
BACKENDS = ("auto", *TORCH_PRECISION, "onnx", "onnx-int8", *OPENVINO, "dummy")


def load_runtime(backend: str, path: str, info: ModelInfo, *, threads: int = 0, streams: int = 1,
                 **options: Any) -> Runtime:
    """Instantiate the named backend for a resolved model folder (``auto`` is resolved by the caller).

    ``streams``: batches computed at once, OpenVINO only (0: OpenVINO's THROUGHPUT choice); the other backends
    run one at a time and ignore it. The option ``model_dir`` runs another folder's weights (a pruned or distilled
    student of an optimize folder) with the caller's tokenizer and limits."""
    path = str(options.pop("model_dir", path))
    # ``spin`` (ONNX Runtime only): False where the threads share cores with another busy runtime, so that an idle
    # pool sleeps instead of spin-waiting on a core another needs. Other backends take it and ignore it.
    spin = bool(options.pop("spin", True))
    if backend in TORCH_PRECISION:
        from padless.runtime.torch import TorchRuntime

        return TorchRuntime(path, info, threads=threads, **{"precision": TORCH_PRECISION[backend], **options})
    if backend in ("onnx", "onnx-int8"):
        from padless.loader.export import ensure_onnx
        from padless.runtime.onnx import OnnxRuntime

        onnx_file = options.pop("onnx_file", None) or ensure_onnx(path, int8=backend == "onnx-int8",
                                                                 embedding=info.embedding)
        precision = options.pop("precision", "int8" if backend == "onnx-int8" else "float32")
        fallback_file = options.pop("fallback_file", None)
        fallback_margin = options.pop("fallback_margin", None)
        if fallback_file is None:
            return OnnxRuntime(onnx_file, info, threads=threads, precision=precision, spin=spin, **options)
        from padless.runtime.fallback import FallbackRuntime

        if info.embedding is not None:
            raise ConfigError("fallback_file (low-margin rows redone) applies to classifiers, not the embed task")
        if fallback_margin is None:
            raise ConfigError("fallback_file needs fallback_margin (the decision margin below which rows are redone)")
        return FallbackRuntime(
            OnnxRuntime(onnx_file, info, threads=threads, precision=precision, spin=False, **options),
            OnnxRuntime(fallback_file, info, threads=threads, spin=False), margin=float(fallback_margin))
    if backend in OPENVINO:
        from padless.loader.openvino import ensure_openvino
        from padless.runtime.openvino import OpenVinoRuntime, precision_hint

        int8, precision = OPENVINO[backend]
        precision = options.pop("precision", precision)
        precision_hint(precision)  # refuse bf16 on this CPU before seconds of conversion and calibration
        ir_file = options.pop("ir_file", None) or ensure_openvino(path, int8=int8, embedding=info.embedding)
        return OpenVinoRuntime(ir_file, info, threads=threads, precision=precision, streams=streams, **options)
    if backend == "dummy":
        from padless.runtime.dummy import DummyRuntime

        # The dummy backend is a test tool; its artificial latency comes from the environment so that
        # subprocess tests (resume after kill, load tests) can slow it down without a CLI flag for users.
        delay = float(os.environ.get("PADLESS_DUMMY_DELAY_PER_TOKEN_S", "0") or 0)
        return DummyRuntime(info, **{"delay_per_token_s": delay, **options})
    raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "ModelInfo", "Runtime", "load_runtime"]
