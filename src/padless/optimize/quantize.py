"""int8 quantization of ONNX graphs: dynamic, static (calibrated), and mixed precision by sensitivity.

* Dynamic: int8 weights (per output channel), activations quantized per batch at run time. No calibration
  (:func:`padless.loader.int8.quantize_dynamic_file`, which the plain ``onnx-int8`` backend also uses).
* Static: activations quantized with ranges measured on a calibration sample of the user's text (QDQ format).
* Mixed precision: :func:`sensitivity` quantizes one node at a time and measures how far the logits move on a
  sample; :func:`mixed_precision` then keeps the most sensitive nodes in fp32, one more at a time, until the
  quantized model agrees with fp32 on the sample as often as the gate asks.

Node names refer to the (fused) fp32 graph from :mod:`padless.loader.export`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from padless.loader.int8 import onnx_default_float, quantize_dynamic_file, quiet_quantizer

# Ops whose weights dynamic quantization turns into int8 (ORT's IntegerOps registry, minus ops without weights).
QUANTIZABLE_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gemm")


def quantizable_nodes(onnx_file: str | Path) -> list[str]:
    """Names of the nodes that carry weights int8 could apply to, in graph order."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS and any(i in weights for i in n.input)]


class _Feeds:
    """ORT's CalibrationDataReader protocol over a list of ready input dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_static_file(src: str | Path, dst: str | Path, feeds: Sequence[dict[str, np.ndarray]], *,
                         exclude: Sequence[str] = (), per_channel: bool = True) -> None:
    """Static int8 (QDQ) with activation ranges calibrated on ``feeds`` (padded batches of the user's text)."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    onnxruntime.set_default_logger_severity(3)  # calibration sessions warn about initializers the quantizer left
    with quiet_quantizer():
        quantize_static(str(src), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={**onnx_default_float(), "ActivationSymmetric": False})


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose top label is the same."""
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean()) if len(a) else 1.0


@dataclass(frozen=True)
class MixedResult:
    """What the mixed-precision search chose and what it saw at each step."""

    kept_fp32: tuple[str, ...]
    sensitivity: dict[str, float]  # node -> mean |Δ logit| on the sample when only that node is int8
    steps: tuple[tuple[int, float], ...]  # (nodes kept in fp32, agreement with fp32 on the sample)
    reached: bool


def sensitivity(fp32_file: Path, work_dir: Path, logits_of: Callable[[Path], np.ndarray],
                reference: np.ndarray, nodes: Sequence[str] | None = None) -> dict[str, float]:
    """Mean |Δ logit| on the sample when each node alone is quantized (everything else fp32)."""
    scores: dict[str, float] = {}
    one = work_dir / "sensitivity-one.onnx"
    for node in nodes if nodes is not None else quantizable_nodes(fp32_file):
        quantize_dynamic_file(fp32_file, one, only=[node])
        scores[node] = float(np.abs(logits_of(one) - reference).mean())
    one.unlink(missing_ok=True)
    return scores


def mixed_precision(fp32_file: Path, out_file: Path, logits_of: Callable[[Path], np.ndarray],
                    reference: np.ndarray, *, min_agreement: float, max_kept: int | None = None,
                    on_step: Callable[[int, float], None] | None = None) -> MixedResult:
    """Dynamic int8 keeping the most sensitive nodes in fp32 until agreement on the sample ≥ ``min_agreement``.

    Callers should aim above the gate's own threshold: the sample is not the eval set, and agreement measured on a
    few hundred texts moves by a point between samples.

    ``logits_of(file)`` scores the calibration sample with an ONNX file; ``reference`` is fp32's logits there.
    Stops at ``max_kept`` nodes (default: half of them: past that the variant is barely faster than fp32).
    """
    scores = sensitivity(fp32_file, out_file.parent, logits_of, reference)
    order = [n for n in sorted(scores, key=lambda n: -scores[n]) if scores[n] > 0]
    limit = len(order) // 2 if max_kept is None else min(max_kept, len(order))
    steps: list[tuple[int, float]] = []
    for k in range(limit + 1):
        quantize_dynamic_file(fp32_file, out_file, exclude=order[:k])
        agree = agreement(logits_of(out_file), reference)
        steps.append((k, agree))
        if on_step:
            on_step(k, agree)
        if agree >= min_agreement:
            return MixedResult(tuple(order[:k]), scores, tuple(steps), True)
    return MixedResult(tuple(order[:limit]), scores, tuple(steps), False)
