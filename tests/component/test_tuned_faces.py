"""Every face that runs a model applies ``padless tune``'s settings file before loading it: classify, embed and the
offline bench its offline section, serve its serving section (batcher wait included), ``bench serve`` hands
``--tuned`` to its servers. A flag or ``PADLESS_*`` variable wins over the file; a file from another machine is
refused with a warning; the line saying which applies is the first on stderr."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_support import run_cli
from test_classify_cli import TEXTS, write_input

from padless import tuned
from padless.config import BatchConfig, EngineSpec, ModelConfig, QueueConfig
from padless.errors import PadlessError

OFFLINE = {"max_batch_tokens": 640, "max_batch_size": 3, "threads": 1}
SERVING = {"max_batch_tokens": 768, "max_batch_size": 5, "threads": 1, "max_wait_ms": 7.5}


def _write(path: Path, *, backend: str = "auto", resolved: str = "torch", machine: dict[str, Any] | None = None,
           serving_backend: str = "torch") -> Path:
    tuned.write(path, {
        "machine": tuned.fingerprint() if machine is None else machine, "date": "2025-01-02",
        "offline": {"backend": backend, "resolved_backend": resolved, "settings": OFFLINE},
        "serving": {"backend": serving_backend, "resolved_backend": serving_backend, "settings": SERVING}})
    return path


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny classifier, so that a file written beside it is this test's alone."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    write_input(path, "csv")
    return path


def record_specs(monkeypatch: pytest.MonkeyPatch, engine_class: type) -> list[EngineSpec]:
    """The engine value every ``engine_class.from_spec`` call is given, in order (the engine is still loaded)."""
    seen: list[EngineSpec] = []
    original = engine_class.from_spec.__func__  # type: ignore[attr-defined]

    def from_spec(cls: type, spec: EngineSpec, **kwargs: Any) -> Any:
        seen.append(spec)
        return original(cls, spec, **kwargs)

    monkeypatch.setattr(engine_class, "from_spec", classmethod(from_spec))
    return seen


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[EngineSpec]:
    """The engine value every classifier is loaded with, in order."""
    from padless.engine import Classifier

    return record_specs(monkeypatch, Classifier)


def _classify(src: Path, model: Path, *extra: str) -> list[str]:
    return ["classify", str(src), "-o", str(src.with_name("out.jsonl")), "--overwrite", "--model", str(model),
            "--no-progress", *extra]


def _first(err: str) -> str:
    return err.strip().splitlines()[0]


def test_classify_runs_the_offline_settings_beside_the_model(model: Path, src: Path, loaded: list[EngineSpec],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(model / tuned.TUNED_NAME)
    code, _, err = run_cli(_classify(src, model), monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith(f"using tuned settings from {path} (offline"), err
    assert "max_batch_tokens=640" in _first(err)
    [spec] = loaded
    assert (spec.batch.max_batch_tokens, spec.batch.max_batch_size, spec.model.threads) == (640, 3, 1)
    assert len(src.with_name("out.jsonl").read_text().splitlines()) == len(TEXTS)


def test_a_flag_and_a_variable_win_over_the_file(model: Path, src: Path, loaded: list[EngineSpec],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _write(model / tuned.TUNED_NAME)
    monkeypatch.setenv("PADLESS_MAX_BATCH_TOKENS", "512")
    code, _, err = run_cli(_classify(src, model, "--max-batch-size", "7"), monkeypatch, capsys)
    assert code == 0, err
    [spec] = loaded
    assert (spec.batch.max_batch_tokens, spec.batch.max_batch_size, spec.model.threads) == (512, 7, 1)
    assert _first(err).startswith("using tuned settings from") and _first(err).endswith(": threads=1")


def test_a_file_from_another_machine_runs_the_defaults(model: Path, src: Path, loaded: list[EngineSpec],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _write(model / tuned.TUNED_NAME, machine={**tuned.fingerprint(), "cpu": "Some Other CPU @ 1.0GHz"})
    code, _, err = run_cli(_classify(src, model), monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith("warning: ") and "another machine" in _first(err), err
    [spec] = loaded
    assert spec.batch == BatchConfig() and spec.model.threads == ModelConfig.threads


def test_tuned_names_a_file_elsewhere(model: Path, src: Path, tmp_path: Path, loaded: list[EngineSpec],
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "settings" / "mine.json")
    code, _, err = run_cli(_classify(src, model, "--tuned", str(path)), monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith(f"using tuned settings from {path}")
    assert loaded[0].batch.max_batch_size == 3
    # The variable names it too; a missing file is one error line, before anything loads.
    monkeypatch.setenv("PADLESS_TUNED", str(tmp_path / "nope.json"))
    code, _, err = run_cli(_classify(src, model), monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: --tuned {tmp_path / 'nope.json'}: no such file"]
    assert len(loaded) == 1


def test_classify_ray_is_handed_the_applied_settings(model: Path, src: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import padless.cli.ray_job

    _write(model / tuned.TUNED_NAME)
    handed: dict[str, Any] = {}
    monkeypatch.setattr(padless.cli.ray_job, "run_ray_offline", lambda **kwargs: handed.update(kwargs))
    code, _, err = run_cli(_classify(src, model, "--ray"), monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith("using tuned settings from")
    assert handed["engine"].batch.max_batch_tokens == 640
    # The tuned thread count was measured for one process: Ray plans each worker's threads from the user's own.
    assert handed["threads"] == 0 and handed["engine"].model.threads == 0
    assert "threads" not in _first(err)  # the first line names only what applies


def test_serve_runs_the_serving_settings(model: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import padless.server.run

    path = _write(model / tuned.TUNED_NAME)
    served: list[tuple[Any, Any, QueueConfig]] = []
    monkeypatch.setattr(padless.server.run, "serve",
                        lambda engine, server, queue, **kwargs: served.append((engine, server, queue)))
    code, _, err = run_cli(["serve", "--model", str(model), "--backend", "torch"], monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith(f"using tuned settings from {path} (serving"), err
    assert "max_wait_ms=7.5" in _first(err)
    [(engine, _, queue)] = served
    assert (engine.spec.batch.max_batch_tokens, engine.spec.batch.max_batch_size) == (768, 5)
    assert engine.spec.model.threads == 1 and queue.max_wait_ms == 7.5
    assert queue.max_queue_inputs == QueueConfig.max_queue_inputs
    # A given wait wins; serve --ray is handed the same values.
    import padless.cli.ray_serve

    handed: dict[str, Any] = {}
    monkeypatch.setattr(padless.cli.ray_serve, "run_ray_serve", lambda **kwargs: handed.update(kwargs))
    code, _, err = run_cli(["serve", "--model", str(model), "--backend", "torch", "--max-wait-ms", "1", "--ray"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert handed["queue"].max_wait_ms == 1 and handed["engine"].batch.max_batch_tokens == 768


def test_embed_reads_the_offline_section_beside_the_embedding_model(model: Path, src: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from padless.embedder import Embedder

    path = _write(model / tuned.TUNED_NAME)
    seen = record_specs(monkeypatch, Embedder)
    out = src.with_name("out.jsonl")
    code, _, err = run_cli(["embed", str(src), "-o", str(out), "--model", str(model), "--no-progress"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert _first(err).startswith(f"using tuned settings from {path} (offline"), err
    [spec] = seen
    assert (spec.batch.max_batch_tokens, spec.batch.max_batch_size, spec.model.threads) == (640, 3, 1)
    assert spec.model.task == ModelConfig.task  # the folder's own task decides, as without the file
    assert len(out.read_text().splitlines()) == len(TEXTS)


def test_embed_default_looks_beside_the_embedding_model_not_the_classifier(
        src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from padless import loader
    from padless.embedder import Embedder

    encoder, classifier = tmp_path / "encoder", tmp_path / "classifier"
    path = _write(encoder / tuned.TUNED_NAME)
    _write(classifier / tuned.TUNED_NAME, machine={**tuned.fingerprint(), "cpu": "the classifier's file"})
    monkeypatch.setattr(loader, "base_encoder_path", lambda: encoder)
    monkeypatch.setattr(loader, "default_model_dir", lambda: classifier)
    seen: list[EngineSpec] = []

    def stop(cls: type[Embedder], spec: EngineSpec, **kwargs: Any) -> Embedder:
        seen.append(spec)
        raise PadlessError("stopped before loading")

    monkeypatch.setattr(Embedder, "from_spec", classmethod(stop))
    code, _, err = run_cli(["embed", str(src), "-o", str(tmp_path / "out.jsonl"), "--no-progress"],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip().splitlines()[0], "error: stopped before loading"]
    assert _first(err).startswith(f"using tuned settings from {path} (offline"), err
    assert seen[0].batch.max_batch_tokens == 640 and seen[0].model.model == "default"


def test_bench_applies_the_offline_section_it_was_measured_for(model: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import padless.bench.offline

    _write(model / tuned.TUNED_NAME, backend="onnx", resolved="onnx")
    handed: dict[str, Any] = {}

    def stop(model: str, **kwargs: Any) -> dict[str, Any]:
        handed.update(kwargs)
        raise PadlessError("stopped before measuring")

    monkeypatch.setattr(padless.bench.offline, "run_offline_bench", stop)
    code, _, err = run_cli(["bench", "--model", str(model), "--backend", "torch,onnx", "--max-batch-size", "9"],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == "error: stopped before measuring"
    assert _first(err).startswith("using tuned settings from") and _first(err).endswith("max_batch_tokens=640"), err
    assert (handed["max_batch_tokens"], handed["max_batch_size"]) == (640, 9)
    # Measured for a backend the bench does not run: the defaults, with a warning.
    code, _, err = run_cli(["bench", "--model", str(model)], monkeypatch, capsys)
    assert code == 2 and _first(err).startswith("warning: ") and "not torch" in _first(err)
    assert handed["max_batch_tokens"] == BatchConfig.max_batch_tokens


def test_bench_serve_hands_tuned_to_its_servers(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import padless.bench.serve
    import padless.cli.bench

    path = _write(tmp_path / "mine.json")
    handed: dict[str, Any] = {}

    def stop(model_dir: str, **kwargs: Any) -> dict[str, Any]:
        handed.update(kwargs)
        raise PadlessError("stopped before serving")

    monkeypatch.setattr(padless.bench.serve, "run_serve_bench", stop)
    monkeypatch.setattr(padless.cli.bench, "_stop_servers_on_sigterm", lambda: None)
    code, _, err = run_cli(["bench", "--model", str(model), "serve", "--tuned", str(path)], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == ["error: stopped before serving"]
    assert handed["server_args"] == ["--tuned", str(path.resolve())]
    code, _, err = run_cli(["bench", "--model", str(model), "serve", "--tuned", str(tmp_path / "nope.json")],
                           monkeypatch, capsys)
    assert code == 2 and "no such file" in err
    handed.clear()
    code, _, err = run_cli(["bench", "--model", str(model), "serve"], monkeypatch, capsys)
    assert code == 2 and handed["server_args"] is None
