"""`padless bench` machinery on the tiny model: the figures are derived from what was really computed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from padless.bench.offline import run_offline_bench
from padless.bench.offline_configs import chunk_padded_tokens
from padless.bench.workload import MIXES, make_workload, token_lengths
from padless.errors import ConfigError
from padless.machine import simd_flags

pytestmark = pytest.mark.slow


def test_chunk_padded_tokens() -> None:
    assert chunk_padded_tokens([3, 5, 2, 9, 1], 2) == 2 * 5 + 2 * 9 + 1 * 1


@pytest.mark.parametrize("mix", ["realistic", "long"])
def test_workload_hits_its_length_mix(tiny_model_dir: Path, mix: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    texts = make_workload(tok, mix, n=100, seed=1)
    assert texts == make_workload(tok, mix, n=100, seed=1)
    lengths = token_lengths(tok, texts)
    lo = min(b.min_tokens for b in MIXES[mix])
    hi = max(b.max_tokens for b in MIXES[mix])
    assert all(lo - 1 <= n <= hi + 1 for n in lengths)
    if mix == "realistic":
        short = sum(n <= 10 for n in lengths) / len(lengths)
        long_ = sum(n > 50 for n in lengths) / len(lengths)
        assert 0.15 <= short <= 0.25 and 0.15 <= long_ <= 0.25


def test_offline_bench_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_offline_bench(str(tiny_model_dir), mix="realistic", n=40, rounds=2, seed=0, out_dir=tmp_path,
                               peak_size=256)
    configs = result["configs"]
    assert set(configs) == {"pipeline-b1", "pipeline-b32", "pad512-b32", "padless"}
    real = result["workload"]["real_tokens"]
    assert configs["padless"]["stats_real_tokens"] == real  # padless computed exactly the workload's tokens
    assert configs["pipeline-b1"]["padding_fraction"] == 0.0
    assert configs["pad512-b32"]["padding_fraction"] == pytest.approx(1 - real / (512 * 40))
    assert configs["padless"]["padding_fraction"] < configs["pipeline-b32"]["padding_fraction"]
    for entry in configs.values():
        assert entry["texts_per_s"] == pytest.approx(statistics.median(40 / s for s in entry["seconds_per_round"]))
        assert entry["agreement_with_pipeline_b1"] == 1.0  # same fp32 model: same labels
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["ratios"].keys() == {"padless_vs_pipeline-b1", "padless_vs_pipeline-b32", "padless_vs_pad512-b32"}
    assert saved["machine"]["cpu_flags"] == simd_flags()  # the flags its figures were measured with
    here = "cuda" if torch.cuda.is_available() else "cpu"  # padless's torch device "auto"; the baselines follow it
    assert {entry["device"] for entry in configs.values()} == {here} and set(saved["peak"]["by_device"]) == {here}
    # a GPU's first call of each batch shape is slow: there the warm-up covers the whole workload
    assert saved["method"]["warmup_texts"] == (40 if here == "cuda" else 8)
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_refuses_unknown_config(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError):
        run_offline_bench(str(tiny_model_dir), n=4, rounds=1, configs=["pipeline-b2"])


def test_offline_bench_runs_padless_on_several_backends(tiny_model_dir: Path) -> None:
    result = run_offline_bench(str(tiny_model_dir), n=30, rounds=2, seed=0, peak_size=256,
                               configs=["pipeline-b1", "padless", "padless-onnx"], backends=["torch", "onnx"])
    configs = result["configs"]
    assert set(configs) == {"pipeline-b1", "padless", "padless-onnx"}
    assert result["backends"]["padless-onnx"]["backend"] == "onnx"
    assert configs["padless-onnx"]["agreement_with_pipeline_b1"] == 1.0  # fp32 export: the same labels
    assert configs["padless-onnx"]["stats_real_tokens"] == result["workload"]["real_tokens"]
    ratio = result["ratios"]["padless-onnx_vs_padless"]
    per_round = [b / a for a, b in zip(configs["padless-onnx"]["seconds_per_round"],
                                       configs["padless"]["seconds_per_round"])]
    assert ratio == pytest.approx(statistics.median(per_round))  # paired per round, as documented
    with pytest.raises(ConfigError, match="padless-onnx-int8"):
        run_offline_bench(str(tiny_model_dir), n=4, rounds=1, configs=["padless-onnx-int8"], backends=["onnx"])


def test_int8_config_is_held_against_the_int8_matmul_peak(tiny_model_dir: Path) -> None:
    result = run_offline_bench(str(tiny_model_dir), n=30, rounds=1, seed=0, peak_size=256,
                               configs=["padless", "padless-onnx-int8"], backends=["torch", "onnx-int8"])
    int8 = result["configs"]["padless-onnx-int8"]
    # ONNX Runtime computes on the CPU; the torch reference beside it on a GPU where there is one
    peaks = result["peak"]["by_device"][int8["device"]]
    assert int8["device"] == "cpu" and set(peaks) >= {"float32", "int8"}
    assert all(p["gflops"] > 0 for p in peaks.values())
    assert int8["precision"] == "int8" and result["configs"]["padless"]["precision"] == "float32"
    # the same useful work over the same seconds, divided by the int8 peak instead of the fp32 one
    useful = result["workload"]["useful_gflops"]
    assert int8["model_flops_pct_of_precision_peak"] == pytest.approx(
        100 * useful / int8["seconds"] / peaks["int8"]["gflops"])
    assert result["configs"]["padless"]["model_flops_pct_of_precision_peak"] == pytest.approx(
        result["configs"]["padless"]["model_flops_pct_of_peak"])


@pytest.mark.gpu
def test_offline_bench_on_a_gpu_runs_every_torch_config_there(tiny_model_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    result = run_offline_bench(str(tiny_model_dir), n=30, rounds=1, seed=0, peak_size=256,
                               configs=["pipeline-b32", "pad512-b32", "padless", "padless-torch-fp16", "padless-onnx"],
                               backends=["torch", "torch-fp16", "onnx"])
    configs = result["configs"]
    assert {name: entry["device"] for name, entry in configs.items()} == {
        "pipeline-b32": "cuda", "pad512-b32": "cuda", "padless": "cuda", "padless-torch-fp16": "cuda",
        "padless-onnx": "cpu"}
    peaks = result["peak"]["by_device"]
    assert set(peaks) == {"cuda", "cpu"} and set(peaks["cuda"]) == {"float32", "float16"}
    assert result["peak"]["gflops"] == peaks["cuda"]["float32"]["gflops"]
    useful = result["workload"]["useful_gflops"]
    onnx = configs["padless-onnx"]  # held against the CPU it ran on, not the GPU beside it
    cpu_fp32 = peaks["cpu"]["float32"]["gflops"]
    assert onnx["model_flops_pct_of_peak"] == pytest.approx(100 * useful / onnx["seconds"] / cpu_fp32)
