"""Unit tests for padless.config.EngineSpec: one value for the resolved engine settings, built from flat keywords,
refusing what ModelConfig and BatchConfig refuse, with the same one-line messages."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from padless.config import BatchConfig, EngineSpec, ModelConfig
from padless.errors import ConfigError
from padless.planner import BATCH_OVERHEAD_TOKENS, BatchPolicy, plan

# Impossible settings, each with the exact line padless has always answered (ModelConfig's or BatchConfig's).
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; choose one of "),
    ({"max_length": 1}, "max_length must be at least 2 (room for the special tokens), got 1"),
    ({"max_chars": 0}, "max_chars must be positive, got 0"),
    ({"threads": -1}, "threads must be 0 (all cores) or positive, got -1"),
    ({"streams": -1}, "streams must be 0 (the backend's choice) or positive, got -1"),
    ({"streams": 2, "backend": "torch"}, "streams > 1 needs an OpenVINO backend; torch runs one batch at a time"),
    ({"pair_truncation": "middle"}, "unknown pair truncation 'middle'; choose one of "),
    ({"max_batch_tokens": 0}, "max_batch_tokens, max_batch_size and chunk_rows must all be positive"),
    ({"max_batch_size": -8}, "max_batch_tokens, max_batch_size and chunk_rows must all be positive"),
    ({"ray_chunk_rows": 0}, "max_batch_tokens, max_batch_size and chunk_rows must all be positive"),
    ({"width_multiple": -1}, "width_multiple must be 0 (the backend's choice) or positive, got -1"),
    ({"max_length": 512, "max_batch_tokens": 256}, "max_length (512) is larger than max_batch_tokens (256): a single "
                                                   "full-length input could never be scheduled"),
]


def _parts_message(flat: dict[str, Any]) -> str:
    """What validating the two parts separately (as every face did before EngineSpec) says."""
    spec = EngineSpec.of(**flat)
    model = ModelConfig(**dataclasses.asdict(spec.model))
    batch = BatchConfig(**dataclasses.asdict(spec.batch))
    with pytest.raises(ConfigError) as caught:
        model.validate()
        batch.validate(model.max_length)
    return str(caught.value)


@pytest.mark.parametrize(("flat", "message"), REFUSED)
def test_the_spec_refuses_what_its_parts_refuse_with_the_same_line(flat: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EngineSpec.of(**flat).validate()
    said = str(caught.value)
    assert said.startswith(message) and "\n" not in said
    assert said == _parts_message(flat)


def test_defaults_and_boundaries_validate() -> None:
    EngineSpec().validate()
    EngineSpec.of(max_length=512, max_batch_tokens=512).validate()  # equal is fine
    EngineSpec.of(streams=2, backend="openvino-bf16").validate()
    assert EngineSpec() == EngineSpec(model=ModelConfig(), batch=BatchConfig()) == EngineSpec.of()


def test_of_puts_each_flat_keyword_in_its_part() -> None:
    spec = EngineSpec.of(model="m", backend="onnx", max_length=64, threads=2, max_batch_tokens=1024,
                         max_batch_size=16, width_multiple=8, pair_truncation="only_first")
    assert spec.model == ModelConfig(model="m", backend="onnx", max_length=64, threads=2,
                                     pair_truncation="only_first")
    assert spec.batch == BatchConfig(max_batch_tokens=1024, max_batch_size=16, width_multiple=8)
    with pytest.raises(TypeError, match="unknown engine setting"):
        EngineSpec.of(model="m", top_k=3)


def test_flat_round_trips_every_field_of_both_parts() -> None:
    """Adding a field to ModelConfig or BatchConfig needs no change here: of, flat and replace follow the fields."""
    names = [f.name for c in (ModelConfig, BatchConfig) for f in dataclasses.fields(c)]
    assert list(EngineSpec.flat_names()) == names
    assert len(set(names)) == len(names)  # no name in both parts: a flat keyword has one home
    spec = EngineSpec.of(model="x", task="embed", backend="dummy", max_length=32, truncate=False, max_chars=99,
                         threads=3,
                         streams=1, pair_truncation="only_second", max_batch_tokens=777, max_batch_size=7,
                         width_multiple=4, chunk_rows=11, ray_chunk_rows=5)
    assert list(spec.flat()) == names
    assert EngineSpec.of(**spec.flat()) == spec
    assert all(v != getattr(d, k) for d in (ModelConfig(), BatchConfig()) for k, v in spec.flat().items()
               if hasattr(d, k))  # every field was set away from its default, so the round trip proves each


def test_replace_changes_only_the_named_fields_and_the_spec_is_frozen() -> None:
    spec = EngineSpec.of(model="m", threads=2, max_batch_tokens=1024)
    other = spec.replace(backend="dummy", max_batch_size=4)
    assert other.model == dataclasses.replace(spec.model, backend="dummy")
    assert other.batch == dataclasses.replace(spec.batch, max_batch_size=4)
    assert spec.model.backend == "auto"  # the original is untouched
    assert dataclasses.replace(spec, batch=other.batch).batch is other.batch
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.model = ModelConfig()  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.replace(nope=1)


def test_a_policy_is_one_value_for_the_planner() -> None:
    policy = BatchPolicy(max_batch_tokens=100, max_batch_size=4)
    assert (policy.width_multiple, policy.max_width, policy.batch_overhead_tokens) == (1, None, BATCH_OVERHEAD_TOKENS)
    assert policy.width_cap == 100 and BatchPolicy(max_batch_tokens=100, max_batch_size=4, max_width=60).width_cap == 60
    rounded = BatchPolicy(max_batch_tokens=100, max_batch_size=4, width_multiple=16, max_width=60)
    assert [rounded.width(n) for n in (1, 16, 17, 59, 60)] == [16, 16, 32, 60, 60]
    assert all(b.width % 16 == 0 or b.width == 60 for b in plan([3, 20, 40, 59], rounded))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_batch_size = 8  # type: ignore[misc]
