"""ONNX Runtime backend: runs an exported (optionally fused and int8-quantized) ``model.onnx`` on the CPU.

The file comes from :mod:`padless.loader.export`: inputs ``input_ids``, ``attention_mask`` (and
``token_type_ids`` for BERT-family models: zeros for single texts, the segments of a text pair), output ``logits`` (the
embed task's graph: ``embeddings``, ``rows × D``, chosen by ``info.task``), with
dynamic batch and sequence axes. The session is set for this machine: all graph optimizations, intra-op threads =
usable cores, one inter-op thread (a transformer graph is a chain; parallel branches only add contention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ModelError
from padless.loader.export import output_name
from padless.runtime.base import ModelInfo, Runtime, check_graph_inputs, graph_feed, usable_cores


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
        self.spin = spin
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
        check_graph_inputs(self.input_names, self.file)
        self.output_name = output_name(info.embedding)
        outputs = [o.name for o in self.session.get_outputs()]
        if self.output_name not in outputs:
            raise ModelError(f"{self.file} has outputs {outputs}, not {self.output_name!r}: it is not a graph for the "
                             f"{info.task} task")

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        feed = graph_feed(self.input_names, self.file, input_ids, attention_mask, token_type_ids)
        (out,) = self.session.run([self.output_name], feed)
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.precision, "threads": self.threads, "file": self.file.name,
                **({} if self.spin else {"spin_wait": False})}
