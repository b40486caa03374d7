"""``padless.tuned``: the settings file ``padless tune`` writes, checked on read, and applied only to the settings a
user left at their defaults, on the machine and backend it was measured for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

from padless import tuned
from padless.config import BatchConfig, EngineSpec, QueueConfig
from padless.errors import ConfigError

OFFLINE = {"max_batch_tokens": 640, "max_batch_size": 3, "threads": 1, "streams": 0}
SERVING = {"max_batch_tokens": 1024, "max_batch_size": 16, "threads": 2, "max_wait_ms": 5.5}


def _document(machine: dict[str, Any] | None = None, backend: str = "auto", resolved: str = "torch",
              offline: dict[str, Any] | None = None, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"machine": tuned.fingerprint() if machine is None else machine, "date": "2025-01-02",
            "offline": {"backend": backend, "resolved_backend": resolved, "settings": offline or OFFLINE},
            "serving": {"backend": backend, "resolved_backend": resolved, "settings": serving or SERVING}}


def _model_with_file(tmp_path: Path, document: dict[str, Any] | None = None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    tuned.write(folder / tuned.TUNED_NAME, _document() if document is None else document)
    return folder


def _spec(model: Path, backend: str = "auto") -> EngineSpec:
    return EngineSpec.of(model=str(model), backend=backend)


def test_the_same_machine_has_no_difference() -> None:
    here = tuned.fingerprint()
    assert tuned.machine_difference(dict(here), here) is None
    assert tuned.machine_difference(here) is None  # against this machine's own fingerprint


@pytest.mark.parametrize(("key", "value", "named"), [
    ("cpu", "Some Other CPU @ 1.0GHz", "cpu"),
    ("usable_cores", 999, "usable_cores"),
    ("gpu", "NVIDIA Imaginary 9000", "gpu"),
    ("cpu_flags", ["avx2", "made_up_flag"], "made_up_flag"),
])
def test_another_machine_is_named_by_the_part_that_differs(key: str, value: Any, named: str) -> None:
    here = {"cpu": "CPU A", "cpu_flags": ["avx2"], "usable_cores": 2, "gpu": None}
    reason = tuned.machine_difference({**here, key: value}, here)
    assert reason is not None and named in reason
    if key == "cpu_flags":
        assert reason.startswith("CPU flags differ")


@pytest.mark.parametrize("content", [
    "not json at all",
    json.dumps({"hello": "world"}),
    json.dumps([1, 2, 3]),
    json.dumps({**_document(machine={}), "format": tuned.FORMAT + 1}),
    json.dumps({"format": tuned.FORMAT, "offline": {"settings": OFFLINE}}),  # no machine
    json.dumps({"format": tuned.FORMAT, **_document(machine={}, offline={**OFFLINE, "max_length": 128})}),
    json.dumps({"format": tuned.FORMAT, **_document(machine={}, offline={**OFFLINE, "threads": True})}),
    json.dumps({"format": tuned.FORMAT, **_document(machine={}, offline={"threads": "4"})}),
    json.dumps({"format": tuned.FORMAT, "machine": {}, "serving": {"backend": "torch"}}),  # no settings
], ids=["not-json", "other-json", "a-list", "wrong-format", "no-machine", "unknown-key", "bool-value",
        "string-value", "no-settings"])
def test_read_refuses_what_padless_did_not_write(tmp_path: Path, content: str) -> None:
    path = tmp_path / tuned.TUNED_NAME
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        tuned.read(path)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    document = _document()
    path = tmp_path / "deeper" / "settings.json"
    tuned.write(path, document)
    assert tuned.read(path) == {"format": tuned.FORMAT, **document}
    assert not path.with_name(path.name + ".tmp").exists()


def test_apply_sets_every_setting_the_user_left_at_its_default(tmp_path: Path) -> None:
    spec = _spec(_model_with_file(tmp_path))
    applied = tuned.apply(spec, section="offline", explicit=set())
    assert applied.spec == spec.replace(max_batch_tokens=640, max_batch_size=3, threads=1, streams=0)
    assert applied.warning is None and applied.note is not None
    assert applied.note.startswith(f"using tuned settings from {tmp_path / 'model' / tuned.TUNED_NAME}")
    assert "max_batch_tokens=640" in applied.note and "offline" in applied.note


def test_apply_keeps_what_the_user_gave(tmp_path: Path) -> None:
    spec = _spec(_model_with_file(tmp_path)).replace(max_batch_size=7, threads=2)
    applied = tuned.apply(spec, section="offline", explicit={"max_batch_size", "threads"})
    assert (applied.spec.batch.max_batch_size, applied.spec.model.threads) == (7, 2)
    assert applied.spec.batch.max_batch_tokens == 640
    assert applied.note is not None and "max_batch_size" not in applied.note and "threads" not in applied.note


def test_apply_says_so_when_every_setting_was_given(tmp_path: Path) -> None:
    spec = _spec(_model_with_file(tmp_path))
    applied = tuned.apply(spec, section="offline", explicit=set(OFFLINE))
    assert applied.spec == spec
    assert applied.note is not None and "all overridden" in applied.note


def test_the_wait_applies_only_to_a_serving_queue(tmp_path: Path) -> None:
    spec = _spec(_model_with_file(tmp_path))
    queue = QueueConfig()
    serving = tuned.apply(spec, section="serving", explicit=set(), queue=queue)
    assert serving.queue is not None and serving.queue.max_wait_ms == 5.5
    assert serving.queue.max_queue_inputs == queue.max_queue_inputs
    assert serving.spec.batch.max_batch_tokens == 1024 and serving.spec.model.threads == 2
    assert serving.note is not None and "max_wait_ms=5.5" in serving.note
    without_queue = tuned.apply(spec, section="serving", explicit=set())
    assert without_queue.queue is None and without_queue.note is not None and "max_wait_ms" not in without_queue.note
    offline = tuned.apply(spec, section="offline", explicit=set(), queue=queue)
    assert offline.queue == queue
    given = tuned.apply(spec, section="serving", explicit={"max_wait_ms"}, queue=queue)
    assert given.queue == queue


def test_another_backend_keeps_the_defaults_with_a_warning(tmp_path: Path) -> None:
    spec = _spec(_model_with_file(tmp_path), backend="onnx")
    applied = tuned.apply(spec, section="offline", explicit=set())
    assert applied.spec == spec and applied.note is None
    assert applied.warning is not None and "backend auto, not onnx" in applied.warning
    # The backend it resolved to counts as the same one.
    resolved = tuned.apply(_spec(tmp_path / "model", backend="torch"), section="offline", explicit=set())
    assert resolved.warning is None and resolved.spec.batch.max_batch_size == 3


def test_another_machine_keeps_the_defaults_with_a_warning(tmp_path: Path) -> None:
    machine = {**tuned.fingerprint(), "cpu": "Some Other CPU @ 1.0GHz"}
    spec = _spec(_model_with_file(tmp_path, _document(machine=machine)))
    queue = QueueConfig()
    applied = tuned.apply(spec, section="serving", explicit=set(), queue=queue)
    assert applied.spec == spec and applied.queue == queue and applied.note is None
    assert applied.warning is not None and "another machine" in applied.warning and "Some Other CPU" in applied.warning
    lines: list[str] = []
    applied.announce(lines.append)
    assert lines == [f"warning: {applied.warning}"]


def test_a_missing_section_keeps_the_defaults_with_a_warning(tmp_path: Path) -> None:
    document = _document()
    del document["serving"]
    spec = _spec(_model_with_file(tmp_path, document))
    applied = tuned.apply(spec, section="serving", explicit=set())
    assert applied.spec == spec and applied.warning is not None and "no serving settings" in applied.warning


def test_a_named_file_elsewhere_is_read_and_a_missing_one_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    elsewhere = tmp_path / "settings" / "mine.json"
    tuned.write(elsewhere, _document())
    applied = tuned.apply(_spec(folder), section="offline", explicit=set(), tuned=str(elsewhere))
    assert applied.spec.batch.max_batch_tokens == 640 and applied.note is not None and str(elsewhere) in applied.note
    with pytest.raises(ConfigError, match="no such file"):
        tuned.apply(_spec(folder), section="offline", explicit=set(), tuned=str(tmp_path / "nope.json"))


def test_no_file_beside_the_model_changes_nothing_and_says_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    spec = _spec(folder)
    applied = tuned.apply(spec, section="offline", explicit=set(), queue=QueueConfig())
    assert applied.spec == spec and applied.queue == QueueConfig()
    assert applied.note is None and applied.warning is None
    lines: list[str] = []
    applied.announce(lines.append)
    assert lines == []


def test_a_model_that_cannot_be_found_is_left_to_the_engine(tmp_path: Path) -> None:
    spec = EngineSpec.of(model=str(tmp_path / "no" / "such" / "folder"))
    applied = tuned.apply(spec, section="offline", explicit=set())
    assert applied.spec == spec and applied.note is None and applied.warning is None
    assert applied.spec.batch == BatchConfig()


def test_embed_defaults_look_beside_the_embedding_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from padless import loader

    encoder, classifier = tmp_path / "encoder", tmp_path / "classifier"
    encoder.mkdir()
    classifier.mkdir()
    monkeypatch.setattr(loader, "base_encoder_path", lambda: encoder)
    monkeypatch.setattr(loader, "default_model_dir", lambda: classifier)
    assert tuned.beside_model("default", "embed") == encoder / tuned.TUNED_NAME
    assert tuned.beside_model("default") == classifier / tuned.TUNED_NAME
    assert tuned.beside_model(str(tmp_path)) == tmp_path / tuned.TUNED_NAME


def test_explicit_options_are_the_flags_and_variables_given_even_at_their_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from padless.cli.common import explicit_options

    app = typer.Typer()  # module-level typer: the command's annotations are resolved in this module's globals
    seen: list[set[str]] = []

    @app.command()
    def command(ctx: typer.Context, threads: int = 0,
                max_batch_size: int = typer.Option(128, envvar="PADLESS_MAX_BATCH_SIZE"),
                max_batch_tokens: int = 8192) -> None:
        seen.append(explicit_options(ctx))

    monkeypatch.setenv("PADLESS_MAX_BATCH_SIZE", "128")
    result = CliRunner().invoke(app, ["--threads", "0"])
    assert result.exit_code == 0, result.output
    assert seen == [{"threads", "max_batch_size"}]
