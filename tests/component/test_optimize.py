"""`padless optimize` end to end on small models, the manifest's load-time checks, and `padless verify`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import run_cli

from padless.datasets import load
from padless.engine import Classifier
from padless.errors import ModelError
from padless.optimize.gate import GateConfig
from padless.optimize.search import CANDIDATES, OptimizeConfig, optimize


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load("vader-movies-test")
    path = tmp_path_factory.mktemp("eval") / "eval.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(data.texts[:300], data.labels[:300]))
    return path


QUICK = dict(calibration_rows=40, bench_texts=40, long_texts=4, rounds=1, check_rows=8)


@pytest.fixture(scope="module")
def optimized_tiny(tiny_model_dir: Path, eval_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opt") / "tiny-opt"
    optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set=str(eval_csv), **QUICK), say=lambda _: None)
    return out


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def test_optimize_writes_a_complete_folder(optimized_tiny: Path) -> None:
    m = _manifest(optimized_tiny)
    names = [c["name"] for c in m["candidates"]]
    # bf16 joins only where the CPU computes it natively (and compiled bf16 where a C++ compiler is present)
    expected = [c for c in CANDIDATES if not c.startswith("torch-bf16")]
    assert set(expected) <= set(names)
    assert m["selected"] in names
    assert m["gate"] == {"max_accuracy_drop": 0.5, "min_agreement": 0.99}
    for c in m["candidates"]:
        assert c["throughput"]["realistic"] > 0 and c["throughput"]["long"] > 0
        assert c["status"].startswith(("selected", "rejected", "passes"))
        assert (c["status"].startswith("rejected")) == (not c["eval"]["passed"])
        for rel, digest in c["files"].items():
            assert (optimized_tiny / rel).is_file() and len(digest) == 64
    selected = next(c for c in m["candidates"] if c["name"] == m["selected"])
    assert selected["eval"]["passed"]
    fastest_passing = max((c for c in m["candidates"] if c["eval"]["passed"]),
                          key=lambda c: c["throughput"]["realistic"])
    assert fastest_passing["name"] == m["selected"]
    assert (optimized_tiny / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| variant | accuracy |" in (optimized_tiny / "report.md").read_text()
    assert len(m["check"]["texts"]) == 8


def test_loading_the_folder_runs_the_selected_variant(optimized_tiny: Path) -> None:
    m = _manifest(optimized_tiny)
    clf = Classifier(str(optimized_tiny))
    assert clf.describe()["variant"] == m["selected"]
    recorded = next(c for c in m["candidates"] if c["name"] == m["selected"])["check"]
    got = clf.logits(m["check"]["texts"])[0]
    assert np.abs(got - np.array(recorded["logits"])).max() <= recorded["tolerance"]


def test_a_named_variant_can_be_loaded(optimized_tiny: Path) -> None:
    clf = Classifier(str(optimized_tiny), variant="onnx-int8-dynamic")
    assert clf.describe()["backend"] == "onnx" and clf.describe()["dtype"] == "int8"


def test_the_fallback_variant_answers_close_rows_in_fp32(optimized_tiny: Path) -> None:
    """The folder's fallback variant pairs the int8 and fp32 files with the calibrated margin; run on those files
    with a margin that splits the rows, close rows carry the fp32 file's own logits and the others int8's."""
    from padless.runtime.fallback import decision_margin

    m = _manifest(optimized_tiny)
    spec = next(c for c in m["candidates"] if c["name"] == "onnx-int8-fallback")
    opts = spec["options"]
    assert opts["fallback_margin"] == spec["notes"]["fallback_margin"] >= 0
    assert set(spec["files"]) == {opts["onnx_file"], opts["fallback_file"]} and opts["fallback_file"].endswith(
        "onnx-fp32/model.onnx")
    info = Classifier(str(optimized_tiny), variant="onnx-int8-fallback").describe()
    assert info["dtype"] == "int8, float32 fallback" and info["fallback"]["below_margin"] == opts["fallback_margin"]

    texts = load("vader-movies-test").texts[:120]
    int8 = Classifier(str(optimized_tiny), variant="onnx-int8-dynamic").logits(texts)[0]
    fp32 = Classifier(str(optimized_tiny), variant="onnx-fp32").logits(texts)[0]
    split = float(np.median(decision_margin(int8)))
    clf = Classifier(str(optimized_tiny), backend="onnx", runtime_options={
        "onnx_file": str(optimized_tiny / opts["onnx_file"]), "precision": "int8",
        "fallback_file": str(optimized_tiny / opts["fallback_file"]), "fallback_margin": split})
    got = clf.logits(texts)[0]
    close = decision_margin(int8) < split
    assert 0 < close.sum() < len(texts) and clf.runtime.recomputed == close.sum()  # type: ignore[attr-defined]
    assert np.abs(got[close] - fp32[close]).max() <= 1e-4
    np.testing.assert_array_equal(got[~close], int8[~close])


@pytest.mark.parametrize(("victim", "variant"), [("variants/onnx-int8-dynamic/model.onnx", "onnx-int8-dynamic"),
                                                 ("model.safetensors", "onnx-int8-dynamic"),
                                                 ("variants/onnx-fp32/model.onnx", "onnx-int8-fallback")])
def test_a_tampered_file_is_refused(optimized_tiny: Path, tmp_path: Path, victim: str, variant: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(optimized_tiny, copy)
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        Classifier(str(copy), variant=variant)


def test_outputs_that_drifted_from_the_manifest_are_refused(optimized_tiny: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(optimized_tiny, copy)
    m = _manifest(copy)
    for c in m["candidates"]:
        c["check"]["logits"] = (np.array(c["check"]["logits"]) + 1.0).tolist()
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="differ from those recorded"):
        Classifier(str(copy))
    code, _, err = run_cli(["classify", "-", "--model", str(copy)], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: the selected variant's outputs differ") and err.count("\n") == 1


def test_classify_cli_runs_an_optimized_folder(optimized_tiny: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("great film\nawful\n")
    code, out, _ = run_cli(["classify", str(src), "--model", str(optimized_tiny)], monkeypatch, capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"text"')]
    assert [r["text"] for r in rows] == ["great film", "awful"] and all(r["label"] for r in rows)


def test_optimize_refuses_to_overwrite_and_unknown_candidates(optimized_tiny: Path, tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", str(optimized_tiny), "--eval", "vader-nyt"],
                           monkeypatch, capsys)
    assert code == 2 and "pass --overwrite" in err
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", "x", "--candidates", "onnx-fp64"],
                           monkeypatch, capsys)
    assert code == 2 and "unknown candidates onnx-fp64" in err
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", "x"], monkeypatch, capsys)
    assert code == 2 and "--eval is required" in err


@pytest.fixture(scope="module")
def noisy_minilm_dir(trained_minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deliberately damaged variant: every encoder weight matrix with Gaussian noise of 30% of its own spread."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("noisy")
    model = AutoModelForSequenceClassification.from_pretrained(str(trained_minilm_dir)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("bert.encoder") and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(trained_minilm_dir)).save_pretrained(out)
    return out


def test_verify_accepts_the_reference_itself(trained_minilm_dir: Path, eval_csv: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out, _ = run_cli(["verify", str(trained_minilm_dir), "--eval", str(eval_csv), "--json", str(report)],
                           monkeypatch, capsys)
    assert code == 0 and "PASS" in out
    data = json.loads(report.read_text())
    assert data["agreement"] == 1.0 and data["max_abs_logit_diff"] == 0.0 and data["rows"] == 300


def test_verify_rejects_a_damaged_variant(noisy_minilm_dir: Path, trained_minilm_dir: Path, eval_csv: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out, _ = run_cli(["verify", str(noisy_minilm_dir), "--reference", str(trained_minilm_dir), "--eval",
                            str(eval_csv), "--json", str(report)], monkeypatch, capsys)
    data = json.loads(report.read_text())
    assert code == 1 and "FAIL" in out and "fails: agrees on" in out
    assert data["agreement"] < 0.99 and not data["passed"]


def test_optimize_gate_on_a_fitted_minilm(trained_minilm_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    """The fp32 export passes the default gate; the gate's verdicts follow the measured numbers."""
    out = tmp_path / "opt"
    m = optimize(str(trained_minilm_dir), out,
                 OptimizeConfig(eval_set=str(eval_csv), candidates=("torch-fp32", "onnx-fp32", "onnx-int8-dynamic"),
                                gate=GateConfig(max_accuracy_drop=0.5, min_agreement=0.99), **QUICK),
                 say=lambda _: None)
    by_name = {c["name"]: c for c in m["candidates"]}
    assert by_name["onnx-fp32"]["eval"]["passed"] and by_name["onnx-fp32"]["eval"]["max_abs_logit_diff"] < 1e-4
    int8 = by_name["onnx-int8-dynamic"]["eval"]
    assert int8["passed"] == (int8["agreement"] >= 0.99 and -int8["accuracy_change_points"] <= 0.5)


def test_a_pruned_student_joins_as_three_gated_candidates(tiny_model_dir: Path, eval_csv: Path,
                                                          tmp_path: Path) -> None:
    from padless.compress.prune import PruneConfig, prune
    from padless.compress.trainer import TrainSpec

    texts = load("vader-movies-train").texts[:64]
    student = tmp_path / "tiny-pruned"
    prune(tiny_model_dir, student, texts, None,
          PruneConfig(sparsity=0.5, sample_rows=16, recovery=TrainSpec(epochs=0.5, batch_size=16)))
    out = tmp_path / "opt"
    m = optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set=str(eval_csv), candidates=("torch-fp32",),
                                                          students=(str(student),), **QUICK), say=lambda _: None)
    by_name = {c["name"]: c for c in m["candidates"]}
    assert set(by_name) == {"torch-fp32", "tiny-pruned-torch-fp32", "tiny-pruned-onnx-fp32", "tiny-pruned-onnx-int8"}
    fp32 = by_name["tiny-pruned-onnx-fp32"]
    assert fp32["notes"]["kind"] == "pruned" and fp32["notes"]["heads_per_layer"] == 2
    assert "students/tiny-pruned/model.safetensors" in fp32["files"]
    # the student's ONNX export matches its own torch weights, not the reference's
    logits = {n: Classifier(str(out), variant=n).logits(texts)[0] for n in ("tiny-pruned-torch-fp32",
                                                                            "tiny-pruned-onnx-fp32", "torch-fp32")}
    assert np.abs(logits["tiny-pruned-onnx-fp32"] - logits["tiny-pruned-torch-fp32"]).max() <= 1e-4
    assert np.abs(logits["tiny-pruned-torch-fp32"] - logits["torch-fp32"]).max() > 1e-3
    weights = out / "students" / "tiny-pruned" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        Classifier(str(out), variant="tiny-pruned-onnx-int8")
