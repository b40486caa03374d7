"""PyTorch backend: ``AutoModelForSequenceClassification`` (the embed task: the encoder with its pooling and
normalisation, :class:`padless.loader.embedding.PooledEncoder`) in inference mode with SDPA attention.

Precisions: ``float32`` (the reference), ``bfloat16`` (weights and activations; on CPUs with native bf16 —
avx512_bf16 or AMX — or on CUDA), ``float16`` (CUDA only), and ``int8`` (CPU dynamic quantization of every
``nn.Linear`` except those named in ``keep_fp32``: int8 weights per channel, activations quantized per batch; or,
with ``static_ranges_file``, static: every encoder Linear's input and output quantized with fixed ranges calibrated
on the user's text by ``padless optimize``, see :func:`calibrate_static_ranges`; classifiers only: the embed task
refuses int8).
Threads default to every core the process may use (:func:`padless.runtime.base.usable_cores`).

``compile=True`` runs the model through ``torch.compile`` (inductor, dynamic batch and sequence shapes, weights
frozen into the graph so oneDNN can pre-pack them). It needs a C++ compiler at run time and costs about a minute
of compilation on the first batches (2 cores, MiniLM), after which, in bf16 on a CPU with native bf16, it ran
3.1× eager fp32 on the realistic mix (eager bf16: 2.2×). :meth:`TorchRuntime.warmup` compiles every shape class
up front, so no request pays for it.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from padless.errors import ConfigError, ModelError

# The probe lives with the other machine facts (the OpenVINO backend needs it without importing torch); named here
# too, where callers look for it.
from padless.machine import cpu_has_native_bf16 as cpu_has_native_bf16
from padless.runtime.base import ModelInfo, Runtime, usable_cores

PRECISIONS = ("float32", "bfloat16", "float16", "int8")
# The planner's price of one more batch on a CUDA GPU, in tokens (Runtime.batch_overhead_tokens): chosen from a sweep
# on an H200 (README, "On a GPU"); the CPU's 32 cut 5,000 texts of the realistic mix into 108 batches of a few ms each,
# nearly all of it launch and synchronisation.
CUDA_BATCH_OVERHEAD_TOKENS = 2048


def auto_device(precision: str = "float32") -> str:
    """Where device "auto" puts a model: a CUDA GPU where torch sees one, except int8 (CPU dynamic quantization),
    which stays on the CPU."""
    return "cuda" if torch.cuda.is_available() and precision != "int8" else "cpu"


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, path: str, info: ModelInfo, *, threads: int = 0, precision: str = "float32",
                 device: str = "auto", keep_fp32: Sequence[str] = (), compile: bool = False,
                 static_ranges_file: str | None = None) -> None:
        from padless.loader import load_model

        if precision not in PRECISIONS:
            raise ConfigError(f"unknown torch precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if device == "auto":
            device = auto_device(precision)
        self.device = device
        if device.startswith("cuda"):
            self.batch_overhead_tokens = CUDA_BATCH_OVERHEAD_TOKENS
        if precision == "float16" and self.device != "cuda":
            raise ConfigError("float16 needs a CUDA GPU; on a CPU use bfloat16 or int8")
        if precision == "int8" and self.device != "cpu":
            raise ConfigError("the torch int8 backend is CPU-only (dynamic quantization)")
        if info.embedding is not None and precision == "int8":
            # Measured on all-MiniLM-L6-v2: dynamic int8 moved vectors to cosine 0.90-0.98 of fp32's, ungated.
            raise ConfigError("torch-int8 is not available for the embed task yet (dynamic int8 moves the vectors "
                              "too far from fp32's); use torch or torch-bf16")
        self.info = info
        self.precision = precision
        self.threads = threads or usable_cores()
        torch.set_num_threads(self.threads)
        if info.embedding is None:
            model = load_model(path, attn_implementation="sdpa")
        else:
            from padless.loader.embedding import load_pooled_encoder

            model = load_pooled_encoder(path, info.embedding, attn_implementation="sdpa")
        self.takes_segments = "token_type_ids" in inspect.signature(model.forward).parameters
        if precision == "int8" and static_ranges_file:
            import json
            from pathlib import Path

            model = quantize_linear_static(model, json.loads(Path(static_ranges_file).read_text()))
        elif precision == "int8":
            model = quantize_linear_int8(model, keep_fp32)
        elif precision != "float32":
            model = model.to(getattr(torch, precision))
        self.model = model.to(self.device)
        self.compiled = bool(compile)
        if self.compiled:
            if not can_compile():
                raise ConfigError("compile needs a C++ compiler (g++ or c++ on PATH) for torch.compile's kernels")
            with warnings.catch_warnings():
                # torch.compile imports torch.utils.mkldnn, which warns that torch.jit.script_method is deprecated:
                # torch's internals, nothing padless calls.
                warnings.simplefilter("ignore", DeprecationWarning)
                # freezing folds the (constant) weights into the graph: oneDNN pre-packs them once, not per call.
                self.model = torch.compile(self.model, dynamic=True, options={"freezing": True})

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        inputs = {"input_ids": ids, "attention_mask": torch.from_numpy(attention_mask).to(self.device)}
        if self.takes_segments:
            # Always passed (zeros for single texts): a compiled graph then has one signature, so the first pair
            # never triggers a recompilation on a request, and zeros are what the model assumes without them.
            types = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
        elif token_type_ids is not None and token_type_ids.any():
            raise ModelError("this model takes no token_type_ids, so its tokenizer should not have produced segments")
        out = self.model(**inputs)
        # A classifier's logits, or the embed task's pooled vectors (a PooledEncoder returns them as a tensor).
        return (out if isinstance(out, torch.Tensor) else out.logits).float().cpu().numpy()

    def warmup(self, max_rows: int = 8, max_width: int = 64) -> None:
        """One forward pass; compiled, one per shape class as well. Dynamic shapes still specialise sizes 1 (one
        row, one token), so those compile separately; doing it here keeps the compilation out of real batches."""
        shapes = [(max_rows, max_width)]
        if self.compiled:
            shapes += [(1, max_width), (max_rows, 1), (1, 1), (max(2, max_rows // 2), max(2, max_width // 2))]
        for rows, width in shapes:
            ids = np.ones((rows, width), dtype=np.int64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # inductor's one-off notes while compiling
                self.forward(ids, np.ones_like(ids))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.precision, "device": self.device, "threads": self.threads,
                "attention": "sdpa", **({"compiled": "torch.compile (inductor, dynamic, frozen)"} if self.compiled
                                        else {})}


def can_compile() -> bool:
    """torch.compile's CPU kernels are C++ built at run time: a compiler must be on PATH."""
    import shutil

    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def quantize_linear_int8(model: torch.nn.Module, keep_fp32: Sequence[str] = ()) -> torch.nn.Module:
    """Dynamic int8 for every encoder ``nn.Linear`` whose qualified name is not in ``keep_fp32``.

    The pooler and classification head stay fp32, as in the ONNX variants (ORT's dynamic quantizer leaves ``Gemm``
    alone): they are a negligible share of the FLOPs and sit right before the logits.
    """
    keep = set(keep_fp32)
    names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name not in keep
             and ".encoder." in f".{name}."}
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency of padless; the
        # dynamic path still works and is what this backend measures.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # Per-channel weight scales, as in the ORT variants: per-tensor scales cost several points on MiniLM.
        spec = {name: per_channel_dynamic_qconfig for name in names}
        return quantize_dynamic(model, spec, dtype=torch.qint8)  # type: ignore[arg-type]


def _static_wrap(model: torch.nn.Module) -> dict[str, Any]:
    """Wrap every encoder ``nn.Linear`` as quantize → Linear → dequantize (eager-mode static quantization)."""
    from torch.ao.quantization import DeQuantStub, QConfig, QuantStub
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    class Wrapped(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.quant, self.linear, self.dequant = QuantStub(), linear, DeQuantStub()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dequant(self.linear(self.quant(x)))

    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                qscheme=torch.per_channel_symmetric))
    wrapped = {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, torch.nn.Linear) and ".encoder." in f".{full}.":
                w = Wrapped(child)
                w.qconfig = qconfig  # type: ignore[assignment]
                setattr(parent, name, w)
                wrapped[full] = w
    return wrapped


def calibrate_static_ranges(model: torch.nn.Module,
                            batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Input and output ranges (min, max) of every encoder Linear over ``batches`` of padded ids and masks (MinMax):
    a quantized Linear takes int8 input and also produces int8 output, so both scales are fixed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's eager quantization API announces its deprecation
        from torch.ao.quantization import prepare

        wrapped = _static_wrap(model)
        prepare(model, inplace=True)
        with torch.inference_mode():
            for ids, mask in batches:
                model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return {name: {side: [float(obs.min_val), float(obs.max_val)] for side, obs in _observers(w).items()}
            for name, w in wrapped.items()}


def _observers(wrapped: Any) -> dict[str, Any]:
    return {"input": wrapped.quant.activation_post_process, "output": wrapped.linear.activation_post_process}


def quantize_linear_static(model: torch.nn.Module, ranges: dict[str, dict[str, list[float]]]) -> torch.nn.Module:
    """Static int8 for every encoder Linear: weights per channel, inputs and outputs with the stored
    calibrated ranges."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import convert, prepare

        torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        wrapped = _static_wrap(model)
        if set(wrapped) != set(ranges):
            raise ModelError("the static int8 ranges do not match this model's layers; rebuild with padless optimize")
        prepare(model, inplace=True)
        for name, w in wrapped.items():
            for side, observer in _observers(w).items():
                observer.min_val.fill_(ranges[name][side][0])
                observer.max_val.fill_(ranges[name][side][1])
        convert(model, inplace=True)
    return model
