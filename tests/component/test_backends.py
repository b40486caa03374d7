"""Golden checks per backend against the torch fp32 reference on a fixed set of real texts.

Tolerances (stated here, asserted below): fp32 backends (ONNX Runtime, fused) within 1e-4 of torch on every logit;
reduced precision within ``MAX_DIFF`` on every logit and agreeing on at least ``MIN_AGREEMENT`` of the top labels,
on a MiniLM with a fitted sentiment head (``trained_minilm_dir``), whose logits span about ±2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from padless.datasets import load
from padless.engine import Classifier
from padless.errors import ConfigError

FP32_TOLERANCE = 1e-4
MAX_DIFF = {"onnx-int8": 1.0, "torch-int8": 1.0, "torch-int8-static": 1.5, "torch-bf16": 0.25}
# Measured on this test model: onnx-int8 95.7%, torch-int8 92.1%, torch-int8-static 86.5% (max |Δ| 1.2, ranges
# calibrated on other text), torch-bf16 99.3% agreement (its head has small
# margins, so int8 noise flips more labels than on the default model, where ORT int8 agrees on 98.5%).
MIN_AGREEMENT = {"onnx-int8": 0.94, "torch-int8": 0.90, "torch-int8-static": 0.83, "torch-bf16": 0.98}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load("vader-movies-test").texts[:300] + ["ok", "a", "Not bad at all!!!", "long " * 600]


@pytest.fixture(scope="module")
def reference(trained_minilm_dir: Path, texts: list[str]) -> np.ndarray:
    return Classifier(str(trained_minilm_dir), backend="torch").logits(texts)[0]


def test_onnx_fp32_matches_torch_within_1e_4(trained_minilm_dir: Path, texts: list[str],
                                             reference: np.ndarray) -> None:
    clf = Classifier(str(trained_minilm_dir), backend="onnx")
    assert clf.describe()["backend"] == "onnx" and clf.describe()["dtype"] == "float32"
    got = clf.logits(texts)[0]
    assert np.abs(got - reference).max() <= FP32_TOLERANCE


def test_onnx_export_is_cached_by_content(trained_minilm_dir: Path, tmp_path: Path) -> None:
    from padless.loader import cache_dir
    from padless.loader.export import ensure_onnx, model_digest

    first = ensure_onnx(trained_minilm_dir)
    assert first == cache_dir() / "onnx" / model_digest(trained_minilm_dir) / "model.onnx"
    mtime = first.stat().st_mtime_ns
    assert ensure_onnx(trained_minilm_dir) == first and first.stat().st_mtime_ns == mtime  # not exported again


@pytest.mark.parametrize("backend", ["onnx-int8", "torch-int8", "torch-bf16"])
def test_reduced_precision_within_stated_tolerance(backend: str, trained_minilm_dir: Path, texts: list[str],
                                                   reference: np.ndarray) -> None:
    got = Classifier(str(trained_minilm_dir), backend=backend).logits(texts)[0]
    agreement = float((got.argmax(1) == reference.argmax(1)).mean())
    assert np.abs(got - reference).max() <= MAX_DIFF[backend]
    assert agreement >= MIN_AGREEMENT[backend]
    assert np.abs(got - reference).max() > 0  # really reduced precision, not the fp32 model under another name


@pytest.mark.slow
def test_compiled_bf16_within_the_bf16_tolerance(trained_minilm_dir: Path, texts: list[str],
                                                 reference: np.ndarray) -> None:
    """torch.compile (inductor, dynamic shapes, frozen weights) keeps bf16's tolerance on every batch shape the
    planner makes, the 600-token input truncated to 512 among them."""
    from padless.runtime.torch import can_compile

    if not can_compile():
        pytest.skip("torch.compile needs a C++ compiler")
    clf = Classifier(str(trained_minilm_dir), backend="torch-bf16", runtime_options={"compile": True})
    assert clf.describe()["compiled"].startswith("torch.compile")
    clf.runtime.warmup()
    got = clf.logits(texts)[0]
    assert np.abs(got - reference).max() <= MAX_DIFF["torch-bf16"]
    assert float((got.argmax(1) == reference.argmax(1)).mean()) >= MIN_AGREEMENT["torch-bf16"]
    assert np.abs(got - reference).max() > 0


def test_torch_static_int8_runs_quantized_kernels_within_tolerance(trained_minilm_dir: Path, texts: list[str],
                                                                    reference: np.ndarray, tmp_path: Path) -> None:
    """Static int8: every encoder Linear becomes a quantized Linear whose input range was calibrated on other text
    (VADER Amazon reviews) and stored; loading re-quantizes from those ranges."""
    import json

    from padless.loader import load_model
    from padless.runtime.torch import calibrate_static_ranges

    clf = Classifier(str(trained_minilm_dir), backend="torch")
    encoded = clf.encoder.encode(load("vader-amazon").texts[:200])
    feeds = []
    for batch in clf.plan([len(e) for e in encoded]):
        ids = np.zeros((len(batch.indices), batch.width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, k in enumerate(batch.indices):
            ids[r, : len(encoded[k])] = encoded[k]  # type: ignore[arg-type]
            mask[r, : len(encoded[k])] = 1  # type: ignore[arg-type]
        feeds.append((ids, mask))
    ranges = calibrate_static_ranges(load_model(trained_minilm_dir), feeds)
    assert len(ranges) == 6 * 6 and all(lo < hi for r in ranges.values() for lo, hi in r.values())
    (tmp_path / "ranges.json").write_text(json.dumps(ranges))
    static = Classifier(str(trained_minilm_dir), backend="torch-int8",
                        runtime_options={"static_ranges_file": str(tmp_path / "ranges.json")})
    kinds = {type(m).__module__ for m in static.runtime.model.modules()}  # type: ignore[attr-defined]
    assert "torch.ao.nn.quantized.modules.linear" in kinds
    got = static.logits(texts)[0]
    assert np.abs(got - reference).max() <= MAX_DIFF["torch-int8-static"]
    assert float((got.argmax(1) == reference.argmax(1)).mean()) >= MIN_AGREEMENT["torch-int8-static"]
    assert np.abs(got - reference).max() > 0


def test_torch_int8_keeps_named_layers_in_fp32(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from padless.runtime.torch import quantize_linear_int8

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir)).eval()
    keep = "bert.encoder.layer.0.output.dense"
    quantized = quantize_linear_int8(model, [keep])
    kinds = {name: type(m).__module__ + "." + type(m).__name__ for name, m in quantized.named_modules()}
    assert kinds[keep] == "torch.nn.modules.linear.Linear"
    assert "quantized" in kinds["bert.encoder.layer.1.output.dense"]


def test_fp16_on_cpu_is_refused_in_one_line(tiny_model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; fp16 is allowed there")
    with pytest.raises(ConfigError, match="float16 needs a CUDA GPU"):
        Classifier(str(tiny_model_dir), backend="torch-fp16")


@pytest.mark.gpu
def test_torch_int8_stays_on_the_cpu_of_a_gpu_machine(tiny_model_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    assert Classifier(str(tiny_model_dir), backend="torch").describe()["device"] == "cuda"
    # dynamic int8 is a CPU kernel: refusing it because a GPU is present would leave the backend unusable there
    assert Classifier(str(tiny_model_dir), backend="torch-int8").describe()["device"] == "cpu"


def test_a_gpu_plans_fewer_larger_batches(tiny_model_dir: Path) -> None:
    from padless.runtime.torch import CUDA_BATCH_OVERHEAD_TOKENS

    lengths = [3 + (17 * i) % 290 for i in range(2000)]  # a spread of lengths, as in the realistic mix
    cpu = Classifier(str(tiny_model_dir), backend="onnx")
    assert cpu.batch_overhead_tokens == 32
    many, few = cpu.plan(lengths), cpu.with_options()
    few.runtime = type("Priced", (), {"batch_overhead_tokens": CUDA_BATCH_OVERHEAD_TOKENS, "width_multiple": 1})()
    fewer = few.plan(lengths)
    assert len(fewer) < len(many) / 2  # the GPU's price of a call buys far fewer cuts, at a little more padding
    if torch.cuda.is_available():
        assert Classifier(str(tiny_model_dir), backend="torch").batch_overhead_tokens == CUDA_BATCH_OVERHEAD_TOKENS


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-fp16", "torch-bf16"])
def test_half_precision_on_gpu(backend: str, trained_minilm_dir: Path, texts: list[str],
                               reference: np.ndarray) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    clf = Classifier(str(trained_minilm_dir), backend=backend)
    assert clf.describe()["device"] == "cuda"
    got = clf.logits(texts)[0]
    assert np.abs(got - reference).max() <= 0.25
    assert float((got.argmax(1) == reference.argmax(1)).mean()) >= 0.98
