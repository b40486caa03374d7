"""The GPU step's sizing rule, and its one line on a machine without a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from padless.tune import gpu


def test_budget_is_free_memory_less_the_model_over_bytes_per_token_with_a_margin() -> None:
    gib = 1024**3
    # 10 GiB free, a 2 GiB model, 64 KiB of activations per token, 80% of it: 8 GiB * 0.8 / 64 KiB = 104,857 tokens.
    assert gpu.budget_tokens(10 * gib, 2 * gib, 64 * 1024) == int(8 * gib * 0.8 / (64 * 1024))
    assert gpu.budget_tokens(1 * gib, 2 * gib, 1024) == 0  # the model alone does not fit: no budget at all
    assert gpu.budget_tokens(4 * gib, 0, 1024, margin=0.5) == 2 * gib // 1024
    with pytest.raises(ValueError, match="per_token_bytes"):
        gpu.budget_tokens(gib, 0, 0)


def test_skipped_with_one_line_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "gpu_available", lambda: False)
    said: list[str] = []
    engine = SimpleNamespace(runtime=SimpleNamespace(device="cpu"), backend="onnx")
    assert gpu.tune_gpu(engine, ["a text"], said.append) is None  # type: ignore[arg-type]
    assert said == ["GPU step skipped: no CUDA GPU on this machine"]


def test_skipped_for_a_backend_on_the_cpu_of_a_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "gpu_available", lambda: True)
    said: list[str] = []
    engine = SimpleNamespace(runtime=SimpleNamespace(), backend="onnx")
    assert gpu.tune_gpu(engine, ["a text"], said.append) is None  # type: ignore[arg-type]
    assert said == ["GPU step skipped: the onnx backend runs on the CPU here"]


def test_the_offline_search_starts_at_the_gpu_budget_and_stays_under_what_memory_allows() -> None:
    from padless.config import EngineSpec
    from padless.tune.offline import OfflineBench

    bench = object.__new__(OfflineBench)  # the dimensions need no engine: only the limits below
    bench.spec, bench.max_length, bench.has_streams, bench.default_layout = EngineSpec(), 512, False, (2, 0)
    start = {**bench.start(), "max_batch_tokens": 12_000}
    tokens = dict((d.name, d.values) for d in bench.dimensions(start, max_tokens=16_000))["max_batch_tokens"]
    assert tokens == (1024, 2048, 4096, 8192, 12_000)
    assert dict((d.name, d.values) for d in bench.dimensions())["max_batch_tokens"][-1] == 32768
