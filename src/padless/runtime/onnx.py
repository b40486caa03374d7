"""ONNX Runtime backend: runs an exported (optionally fused and int8-quantized) ``model.onnx`` on the CPU.

The file comes from :mod:`padless.loader.export`: inputs ``input_ids``, ``attention_mask`` (and
``token_type_ids`` for BERT-family models: zeros for single texts, the segments of a text pair), output ``logits``, with
dynamic batch and sequence axes. The session is set for this machine: all graph optimizations, intra-op threads =
usable cores, one inter-op thread (a transformer graph is a chain; parallel branches only add contention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ModelError
from padless.runtime.base import ModelInfo, Runtime, usable_cores


class OnnxRuntime(Runtime):
    name = "onnx"

    def __init__(self, onnx_file: str | Path, info: ModelInfo, *, threads: int = 0,
                 precision: str = "float32", spin: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:  # declared as a dependency; a broken install still deserves one clear line
            raise ModelError("the onnx backend needs onnxruntime: pip install onnxruntime") from None
        self.info = info
        self.file = Path(onnx_file)
        self.precision = precision
        self.threads = threads or usable_cores()
        if not self.file.is_file():
            raise ModelError(f"no ONNX model at {self.file}; export one with: padless optimize")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if not spin:
            # Sessions that take turns (the fallback pair) must not spin-wait: each session's idle pool spins
            # after its run and starves the other on a small machine (measured, 2 cores: the int8+fp32 pair ran
            # 120 texts/s spinning, 207 not). ORT's process-wide pool was faster still (228) but slowed every
            # other runtime in the process, torch included, so it is not used.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers are noise to a user
        try:
            self.session = ort.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for corrupt or unsupported files
            raise ModelError(f"ONNX Runtime cannot load {self.file}: {type(err).__name__}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self.input_names:
            raise ModelError(f"{self.file} has inputs {self.input_names}; padless expects input_ids, attention_mask "
                             "and optionally token_type_ids")

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        feed: dict[str, np.ndarray] = {"input_ids": input_ids}
        if "attention_mask" in self.input_names:
            feed["attention_mask"] = attention_mask
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        elif token_type_ids is not None and token_type_ids.any():
            # Scoring a pair without its segments would silently compute something else.
            raise ModelError(f"{self.file} was exported without token_type_ids, so it cannot score text pairs; "
                             "re-export it (delete the file, or rerun padless optimize)")
        (logits,) = self.session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.precision, "threads": self.threads, "file": self.file.name}
