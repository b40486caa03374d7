"""Unit tests for padless.config: validate() and from_env()."""

from __future__ import annotations

import dataclasses

import pytest

from padless.config import BACKENDS, BatchConfig, ModelConfig, OutputConfig, from_env
from padless.errors import ConfigError


def test_defaults_validate():
    ModelConfig().validate()
    BatchConfig().validate()
    BatchConfig().validate(max_length=512)
    OutputConfig().validate()
    assert ModelConfig().backend == "auto"


def test_config_backends_match_the_runtime_registry():
    from padless.runtime import BACKENDS as RUNTIME_BACKENDS

    assert BACKENDS == RUNTIME_BACKENDS


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().backend = "dummy"  # type: ignore[misc]


@pytest.mark.parametrize("backend", ["onnx-fp8", "", "Torch", "tensorrt"])
def test_unknown_backend_refused(backend):
    with pytest.raises(ConfigError, match="unknown backend"):
        ModelConfig(backend=backend).validate()


@pytest.mark.parametrize("backend", ["torch", "dummy"])
def test_known_backends_accepted(backend):
    ModelConfig(backend=backend).validate()


@pytest.mark.parametrize(
    "kwargs",
    [{"max_length": 1}, {"max_length": 0}, {"max_length": -5}, {"max_chars": 0}, {"max_chars": -1}, {"threads": -1}],
)
def test_model_config_refuses_bad_values(kwargs):
    with pytest.raises(ConfigError):
        ModelConfig(**kwargs).validate()


@pytest.mark.parametrize("kwargs", [{"max_length": 2}, {"max_length": None}, {"max_chars": 1}, {"threads": 0},
                                    {"streams": 0}, {"streams": 1, "backend": "torch"},
                                    {"streams": 3, "backend": "openvino-bf16"}, {"streams": 2, "backend": "auto"}])
def test_model_config_accepts_boundary_values(kwargs):
    ModelConfig(**kwargs).validate()


def test_streams_are_refused_where_they_cannot_run():
    with pytest.raises(ConfigError, match="streams must be 0"):
        ModelConfig(streams=-1).validate()
    # Only OpenVINO computes several batches at once; `auto` may resolve to it, so it is let through.
    for backend in ("torch", "onnx", "dummy"):
        with pytest.raises(ConfigError, match="streams > 1 needs an OpenVINO backend"):
            ModelConfig(streams=2, backend=backend).validate()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_tokens": 0},
        {"max_batch_tokens": -1},
        {"max_batch_size": 0},
        {"max_batch_size": -8},
        {"chunk_rows": 0},
        {"width_multiple": -1},
    ],
)
def test_batch_config_refuses_non_positive(kwargs):
    with pytest.raises(ConfigError, match="positive"):
        BatchConfig(**kwargs).validate()


def test_max_length_over_max_batch_tokens_refused():
    with pytest.raises(ConfigError, match="max_length"):
        BatchConfig(max_batch_tokens=256).validate(max_length=512)
    BatchConfig(max_batch_tokens=512).validate(max_length=512)  # equal is fine
    BatchConfig(max_batch_tokens=256).validate(max_length=None)


def test_output_config_top_k():
    OutputConfig(top_k=0).validate()
    OutputConfig(top_k=5).validate()
    with pytest.raises(ConfigError, match="top_k"):
        OutputConfig(top_k=-1).validate()


# ---------------------------------------------------------------- from_env


def test_from_env_with_empty_env_gives_defaults():
    assert from_env(ModelConfig, {}) == ModelConfig()
    assert from_env(BatchConfig, {}) == BatchConfig()
    assert from_env(OutputConfig, {}) == OutputConfig()


def test_from_env_reads_padless_variables_and_parses_types():
    env = {
        "PADLESS_MODEL": "my/model",
        "PADLESS_BACKEND": "dummy",
        "PADLESS_MAX_LENGTH": "128",
        "PADLESS_TRUNCATE": "false",
        "PADLESS_MAX_CHARS": "5000",
        "PADLESS_THREADS": "3",
        "UNRELATED": "x",
        "MAX_LENGTH": "7",
    }
    cfg = from_env(ModelConfig, env)
    assert cfg == ModelConfig(model="my/model", backend="dummy", max_length=128, truncate=False, max_chars=5000,
                              threads=3)
    assert type(cfg.max_length) is int and cfg.truncate is False


def test_from_env_ignores_process_environment_when_env_given(monkeypatch):
    monkeypatch.setenv("PADLESS_MAX_BATCH_SIZE", "7")
    assert from_env(BatchConfig, {}).max_batch_size == 128
    assert from_env(BatchConfig).max_batch_size == 7


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True),
     ("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_bool_parsing(raw, expected):
    assert from_env(ModelConfig, {"PADLESS_TRUNCATE": raw}).truncate is expected
    assert from_env(OutputConfig, {"PADLESS_RAW_SCORES": raw}).raw_scores is expected


@pytest.mark.parametrize("raw", ["none", "None", "NONE", ""])
def test_optional_int_parses_none(raw):
    assert from_env(ModelConfig, {"PADLESS_MAX_LENGTH": raw}).max_length is None


def test_batch_config_ints():
    cfg = from_env(BatchConfig, {"PADLESS_MAX_BATCH_TOKENS": "4096", "PADLESS_MAX_BATCH_SIZE": "32",
                                 "PADLESS_CHUNK_ROWS": "100"})
    assert cfg == BatchConfig(max_batch_tokens=4096, max_batch_size=32, chunk_rows=100)


def test_overrides_win_over_env():
    env = {"PADLESS_MAX_BATCH_TOKENS": "4096", "PADLESS_MAX_BATCH_SIZE": "32"}
    cfg = from_env(BatchConfig, env, max_batch_tokens=1024)
    assert cfg.max_batch_tokens == 1024
    assert cfg.max_batch_size == 32
    assert from_env(ModelConfig, {"PADLESS_TRUNCATE": "true"}, truncate=False).truncate is False
    assert from_env(OutputConfig, {"PADLESS_TOP_K": "3"}, top_k=0).top_k == 0


def test_none_override_means_not_given():
    # The CLI passes None for options the user did not set; those must not clobber the environment.
    assert from_env(BatchConfig, {"PADLESS_MAX_BATCH_SIZE": "32"}, max_batch_size=None).max_batch_size == 32


@pytest.mark.parametrize(
    ("cls", "var", "raw"),
    [
        (BatchConfig, "PADLESS_MAX_BATCH_TOKENS", "lots"),
        (BatchConfig, "PADLESS_MAX_BATCH_SIZE", "1.5"),
        (BatchConfig, "PADLESS_CHUNK_ROWS", ""),
        (ModelConfig, "PADLESS_MAX_LENGTH", "long"),
        (ModelConfig, "PADLESS_THREADS", "none"),
        (ModelConfig, "PADLESS_TRUNCATE", "maybe"),
        (ModelConfig, "PADLESS_TRUNCATE", "2"),
        (OutputConfig, "PADLESS_RAW_SCORES", ""),
        (OutputConfig, "PADLESS_TOP_K", "all"),
    ],
)
def test_bad_values_raise_config_error_naming_variable(cls, var, raw):
    with pytest.raises(ConfigError) as info:
        from_env(cls, {var: raw})
    assert var in str(info.value)
    assert repr(raw) in str(info.value)


def test_from_env_does_not_validate_but_validate_catches_it():
    cfg = from_env(ModelConfig, {"PADLESS_BACKEND": "tensorrt"})
    assert cfg.backend == "tensorrt"
    with pytest.raises(ConfigError, match="unknown backend"):
        cfg.validate()


def test_server_keep_alive_must_be_at_least_a_second() -> None:
    from padless.config import ServerConfig

    assert ServerConfig().keep_alive_s == 90  # above httpx's 5 s and aiohttp's 15 s pool expiry
    ServerConfig(keep_alive_s=1).validate()
    with pytest.raises(ConfigError, match="keep-alive must be at least 1 s, got 0"):
        ServerConfig(keep_alive_s=0).validate()
