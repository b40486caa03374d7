"""Model loading, the low layer under the runtimes, the engine and the optimizer; it imports none of them.

* :mod:`~padless.loader.folders`: a model name to a local folder, the folder's task (:func:`detect_task`) and
  :class:`ModelInfo` (a classifier's, or an embedding model's with its pooling), and its weights loaded as a PyTorch
  classifier;
* :mod:`~padless.loader.sentence` and :mod:`~padless.loader.embedding`: an embedding folder's pooling,
  normalisation and prompts, and the encoder + pooling module the runtimes run and export for the embed task;
* :mod:`~padless.loader.heads`: replaying a head-pruned folder's ``pruned_heads`` on load;
* :mod:`~padless.loader.export`: the checked ONNX export of a folder, cached by content;
* :mod:`~padless.loader.int8`: the plain dynamic-int8 ONNX file made from that export;
* :mod:`~padless.loader.openvino`: the checked OpenVINO IR of a folder and its NNCF int8 IR, cached by content, and
  OpenVINO's compiled-model cache;
* :mod:`~padless.loader.manifest`: what a ``padless optimize`` folder records, and its load-time checks.

Building padless's own ``default`` model (fine-tuning, then evaluating it) sits above the engine, in
:mod:`padless.default_model`; :func:`resolve` only finds it.
"""

from __future__ import annotations

from padless.loader.folders import (
    BASE_ENCODER_PACKAGE,
    DEFAULT_NAME,
    ModelInfo,
    base_encoder_path,
    cache_dir,
    check_head,
    default_model_dir,
    detect_task,
    is_model_dir,
    load_model,
    read_info,
    resolve,
)

__all__ = ["BASE_ENCODER_PACKAGE", "DEFAULT_NAME", "ModelInfo", "base_encoder_path", "cache_dir", "check_head",
           "default_model_dir", "detect_task", "is_model_dir", "load_model", "read_info", "resolve"]
