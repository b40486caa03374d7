"""`padless optimize` end to end on small models, the manifest's load-time checks, and `padless verify`; its OpenVINO
candidates: IR files hashed (.xml and .bin) and re-checked on load, the gate's verdicts on a sound and a damaged IR,
accuracy-controlled int8 on rows the gate does not score, and the fallback to the torch reference when a selected
OpenVINO variant cannot run."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import run_cli

from padless import engine
from padless.datasets import load
from padless.engine import Classifier
from padless.errors import ModelError
from padless.machine import cpu_has_native_bf16, simd_flags
from padless.optimize.gate import GateConfig, compare, label_ids
from padless.optimize.openvino import AccuracyControl, max_drop_of, split_eval
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
FP32_IR = "variants/openvino-fp32/model.xml"


@pytest.fixture(scope="module")
def optimized_tiny(tiny_model_dir: Path, eval_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opt") / "tiny-opt"
    control = AccuracyControl(rows=40, ranking_rows=20, max_iterations=2, calibration_rows=20)
    optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set=str(eval_csv), accuracy_control=control, **QUICK),
             say=lambda _: None)
    return out


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def test_optimize_writes_a_complete_folder(optimized_tiny: Path) -> None:
    m = _manifest(optimized_tiny)
    names = [c["name"] for c in m["candidates"]]
    # bf16 joins only where the CPU computes it natively (and compiled bf16 where a C++ compiler is present)
    expected = [c for c in CANDIDATES if "bf16" not in c]
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



def test_optimize_accuracy_control_flags_reach_the_config(tiny_model_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import padless.optimize.search as search

    seen: list[search.OptimizeConfig] = []

    def capture(model: str, output: Path, cfg: search.OptimizeConfig, **_: object) -> dict:
        seen.append(cfg)
        raise search.ConfigError("stop here")  # the flags are what this test checks, not a whole optimize run

    monkeypatch.setattr(search, "optimize", capture)
    monkeypatch.setenv("PADLESS_ACCURACY_CONTROL_ITERATIONS", "3")
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--eval", "vader-nyt",
                            "--accuracy-control-rows", "80", "--accuracy-control-ranking-rows", "40",
                            "--accuracy-control-calibration-rows", "50"], monkeypatch, capsys)
    assert code == 2 and "stop here" in err
    assert seen[0].accuracy_control == search.ov_candidates.AccuracyControl(
        rows=80, ranking_rows=40, max_iterations=3, calibration_rows=50)
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--eval", "vader-nyt",
                            "--accuracy-control-rows", "20", "--accuracy-control-ranking-rows", "40"],
                           monkeypatch, capsys)
    assert code == 2 and "exceeds --accuracy-control-rows 20" in err and len(seen) == 1
    code, _, err = run_cli(["optimize", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--eval", "vader-nyt",
                            "--accuracy-control-iterations", "0"], monkeypatch, capsys)
    assert code == 2 and "must be positive" in err and len(seen) == 1


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


@pytest.mark.slow
def test_optimize_gate_on_a_fitted_minilm(trained_minilm_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    """The fp32 export passes the default gate; the gate's verdicts follow the measured numbers."""
    out = tmp_path / "opt"
    m = optimize(str(trained_minilm_dir), out,
                 OptimizeConfig(eval_set=str(eval_csv), candidates=("torch-fp32", "onnx-fp32", "onnx-int8-dynamic",
                                                                    "openvino-fp32", "openvino-int8"),
                                gate=GateConfig(max_accuracy_drop=0.5, min_agreement=0.99), **QUICK),
                 say=lambda _: None)
    by_name = {c["name"]: c for c in m["candidates"]}
    for fp32 in ("onnx-fp32", "openvino-fp32"):
        assert by_name[fp32]["eval"]["passed"] and by_name[fp32]["eval"]["max_abs_logit_diff"] < 1e-4
    for name in ("onnx-int8-dynamic", "openvino-int8"):
        int8 = by_name[name]["eval"]
        assert int8["passed"] == (int8["agreement"] >= 0.99 and -int8["accuracy_change_points"] <= 0.5)
        assert int8["max_abs_logit_diff"] > 1e-4  # int8 really is another computation


def test_a_pruned_student_joins_as_gated_candidates(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
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
    assert set(by_name) == {"torch-fp32", "tiny-pruned-torch-fp32", "tiny-pruned-onnx-fp32", "tiny-pruned-onnx-int8",
                            "tiny-pruned-openvino-int8", *(["tiny-pruned-openvino-bf16"] if cpu_has_native_bf16()
                                                           else [])}
    # Gated on accuracy against the reference, on agreement with the student's own torch fp32 (see gate.py).
    own = by_name["tiny-pruned-torch-fp32"]["eval"]
    assert own["agreement"] == 1.0 and own["max_abs_logit_diff"] == 0.0 and 0 <= own["reference_agreement"] <= 1
    for name in set(by_name) - {"torch-fp32"}:
        ev = by_name[name]["eval"]
        assert ev["agreement_of"] == "tiny-pruned-torch-fp32"
        assert ev["passed"] == (ev["agreement"] >= 0.99 and -ev["accuracy_change_points"] <= 0.5)
    assert by_name["tiny-pruned-onnx-fp32"]["eval"]["max_abs_logit_diff"] <= 1e-4
    fp32 = by_name["tiny-pruned-onnx-fp32"]
    assert fp32["notes"]["kind"] == "pruned" and fp32["notes"]["heads_per_layer"] == 2
    assert "students/tiny-pruned/model.safetensors" in fp32["files"]
    # the student's ONNX export matches its own torch weights, not the reference's
    logits = {n: Classifier(str(out), variant=n).logits(texts)[0] for n in ("tiny-pruned-torch-fp32",
                                                                            "tiny-pruned-onnx-fp32", "torch-fp32")}
    assert np.abs(logits["tiny-pruned-onnx-fp32"] - logits["tiny-pruned-torch-fp32"]).max() <= 1e-4
    assert np.abs(logits["tiny-pruned-torch-fp32"] - logits["torch-fp32"]).max() > 1e-3
    ov_int8 = by_name["tiny-pruned-openvino-int8"]
    assert ov_int8["backend"] == "openvino-int8" and ov_int8["options"]["model_dir"] == "students/tiny-pruned"
    assert set(ov_int8["files"]) >= {"students/tiny-pruned/model.safetensors", ov_int8["options"]["ir_file"],
                                     ov_int8["options"]["ir_file"][:-4] + ".bin"}
    if cpu_has_native_bf16():
        ov_bf16 = by_name["tiny-pruned-openvino-bf16"]
        assert ov_bf16["backend"] == "openvino-bf16" and ov_bf16["options"]["precision"] == "bfloat16"
        assert ov_bf16["options"]["model_dir"] == "students/tiny-pruned"
        bf16 = Classifier(str(out), variant="tiny-pruned-openvino-bf16").logits(texts)[0]
        own, ref = (float(np.abs(bf16 - logits[n]).max()) for n in ("tiny-pruned-torch-fp32", "torch-fp32"))
        assert own <= 0.1 and own < ref  # its own weights, in bf16
    # padless verify gates a student's variant as optimize did: agreement with the student's own torch fp32.
    report = tmp_path / "verify.json"
    code, _, err = run_cli(["verify", str(out), "--variant", "tiny-pruned-onnx-fp32", "--eval", str(eval_csv),
                            "--json", str(report)], monkeypatch, capsys)
    verified = json.loads(report.read_text())
    optimized = by_name["tiny-pruned-onnx-fp32"]["eval"]
    assert verified["agreement_of"] == optimized["agreement_of"] == "tiny-pruned-torch-fp32"
    assert verified["agreement"] == 1.0
    assert verified["reference_agreement"] == optimized["reference_agreement"]
    assert code == (0 if verified["passed"] else 1), err
    # A student variant reports its own model: half the heads and neurons, so half the useful FLOPs per text.
    teacher, pruned = (Classifier(str(out), variant=n) for n in ("torch-fp32", "tiny-pruned-onnx-int8"))
    assert pruned.info.id2label == teacher.info.id2label
    assert pruned.info.attention_width * 2 == teacher.info.attention_width
    assert engine.model_flops(pruned.info, 40) == pytest.approx(engine.model_flops(teacher.info, 40) / 2)
    weights = out / "students" / "tiny-pruned" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        Classifier(str(out), variant="tiny-pruned-onnx-int8")


@pytest.fixture(scope="module")
def ov_tiny(tiny_model_dir: Path, eval_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opt-ov") / "tiny-ov"
    optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set=str(eval_csv), candidates=(
        "torch-fp32", "openvino-fp32", "openvino-int8"), **QUICK), say=lambda _: None)
    return out


def _by_name(path: Path) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _manifest(path)["candidates"]}


def _copy_selecting(src: Path, dst: Path, variant: str) -> Path:
    shutil.copytree(src, dst)
    m = _manifest(dst)
    m["selected"] = variant
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_openvino_candidates_are_built_gated_hashed_and_reloaded(ov_tiny: Path) -> None:
    m = _manifest(ov_tiny)
    by_name = _by_name(ov_tiny)
    assert set(by_name) == {"torch-fp32", "openvino-fp32", "openvino-int8"}
    fp32, int8 = by_name["openvino-fp32"], by_name["openvino-int8"]
    assert fp32["eval"]["passed"] and fp32["eval"]["max_abs_logit_diff"] <= 1e-4 and fp32["eval"]["rows"] == 300
    assert fp32["backend"] == "openvino" and fp32["options"] == {"ir_file": FP32_IR, "precision": "float32"}
    assert int8["backend"] == "openvino-int8" and int8["precision"] == "int8"
    assert int8["eval"]["passed"] == (int8["eval"]["agreement"] >= 0.99
                                      and -int8["eval"]["accuracy_change_points"] <= 0.5)
    for c in (fp32, int8):
        xml = c["options"]["ir_file"]
        assert set(c["files"]) == {xml, xml[:-4] + ".bin"}
        for rel, digest in c["files"].items():
            assert (ov_tiny / rel).is_file() and len(digest) == 64
        assert c["throughput"]["realistic"] > 0 and c["build_s"] >= 0
        # reloading runs the variant and its outputs match what the manifest recorded
        clf = Classifier(str(ov_tiny), variant=c["name"])
        assert clf.describe()["variant"] == c["name"] and clf.backend == c["backend"]
        got = clf.logits(m["check"]["texts"])[0]
        assert np.abs(got - np.array(c["check"]["logits"])).max() <= c["check"]["tolerance"]
    assert "openvino" in m["machine"] and "nncf" in m["machine"]
    assert m["machine"]["cpu_flags"] == simd_flags()  # the flags its figures were measured with
    assert "| openvino-fp32 |" in (ov_tiny / "report.md").read_text()


@pytest.mark.parametrize("victim", ["model.bin", "model.xml"])
def test_a_tampered_ir_file_is_refused(ov_tiny: Path, tmp_path: Path, victim: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ov_tiny, copy)
    path = copy / "variants" / "openvino-fp32" / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"openvino-fp32/{victim} does not match its SHA-256") as err:
        Classifier(str(copy), variant="openvino-fp32")
    assert "\n" not in str(err.value)


def _noisy_ir(src_xml: Path, dst_xml: Path, scale: float = 0.3) -> None:
    """A damaged IR: every 2-D f32 weight constant with Gaussian noise of ``scale`` times its own spread."""
    import openvino as ov
    from openvino import opset13 as ops

    model = ov.Core().read_model(str(src_xml))
    rng = np.random.default_rng(0)
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        value = op.get_data()
        if value.ndim == 2 and min(value.shape) >= 64:
            noisy = ops.constant((value + rng.normal(0, value.std() * scale, value.shape)).astype(np.float32))
            for target in op.output(0).get_target_inputs():
                target.replace_source_output(noisy.output(0))
    ov.save_model(model, str(dst_xml), compress_to_fp16=False)


def test_the_gate_rejects_a_damaged_ir_and_accepts_the_sound_one(ov_tiny: Path, tmp_path: Path) -> None:
    data = load("vader-movies-test")
    texts, gold_labels = data.texts[:300], data.labels[:300]
    ref = Classifier(str(ov_tiny), backend="torch")
    gold = label_ids(gold_labels, ref.labels)
    reference = ref.logits(texts)[0]
    noisy = tmp_path / "noisy" / "model.xml"
    noisy.parent.mkdir()
    _noisy_ir(ov_tiny / FP32_IR, noisy)
    verdicts = {}
    for label, xml in (("sound", ov_tiny / FP32_IR), ("noisy", noisy)):
        clf = Classifier(str(ov_tiny), backend="openvino", runtime_options={"ir_file": str(xml),
                                                                              "precision": "float32"})
        verdicts[label] = compare(reference, clf.logits(texts)[0], gold, GateConfig())
    assert verdicts["sound"]["passed"] and verdicts["sound"]["max_abs_logit_diff"] <= 1e-4
    assert not verdicts["noisy"]["passed"] and verdicts["noisy"]["agreement"] < 0.99
    assert any(r.startswith("agrees on") for r in verdicts["noisy"]["reasons"])


def test_the_eval_split_is_deterministic_disjoint_and_capped() -> None:
    gate, held = split_eval(300, 40)
    assert (gate, held) == split_eval(300, 40)
    assert len(held) == 40 and not set(gate) & set(held) and sorted(gate + held) == list(range(300))
    assert held != list(range(40))  # spread over the set, not its first rows
    assert len(split_eval(100, 300)[1]) == 25  # never more than a quarter of the eval set
    assert max_drop_of(GateConfig()) == pytest.approx(0.005)
    assert max_drop_of(GateConfig(max_accuracy_drop=2.0, min_agreement=0.99)) == pytest.approx(0.01)


def test_accuracy_controlled_int8_validates_on_rows_the_gate_does_not_score(tiny_model_dir: Path, eval_csv: Path,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "opt"
    control = AccuracyControl(rows=40, ranking_rows=20, max_iterations=2, calibration_rows=20)
    m = optimize(str(tiny_model_dir), out, OptimizeConfig(eval_set=str(eval_csv), candidates=(
        "torch-fp32", "openvino-int8-accuracy"), accuracy_control=control, **QUICK), say=lambda _: None)
    held = m["eval_set"]["validation"]
    assert held["rows"] == split_eval(300, 40)[1] and held["used_by"] == "openvino-int8-accuracy"
    assert m["eval_set"]["gate_rows"] == 260 and "default_rng(0)" in held["rule"]
    by_name = {c["name"]: c for c in m["candidates"]}
    assert all(c["eval"]["rows"] == 260 for c in by_name.values())
    acc = by_name["openvino-int8-accuracy"]
    notes = acc["notes"]
    assert notes["validation_rows"] == 40 and notes["ranking_rows"] == 20 and notes["max_drop"] == 0.005
    assert notes["drop_type"] == "absolute" and 0 <= notes["on_validation_rows"]["agreement"] <= 1
    assert notes["fake_quantize_nodes"]["kept"] <= notes["fake_quantize_nodes"]["plain_ptq"]
    assert acc["build_s"] > 0 and acc["options"]["ir_file"] == "variants/openvino-int8-accuracy/model.xml"
    assert set(acc["files"]) == {"variants/openvino-int8-accuracy/model.xml",
                                 "variants/openvino-int8-accuracy/model.bin"}
    assert sorted(p.name for p in (out / "variants" / "openvino-int8-accuracy").iterdir()) == ["model.bin",
                                                                                               "model.xml"]
    texts = load("vader-movies-test").texts[:300]
    assert not {texts[i] for i in held["rows"]} & set(m["check"]["texts"])
    assert "validation rows" in (out / "report.md").read_text()
    assert Classifier(str(out), variant="openvino-int8-accuracy").describe()["variant"] == "openvino-int8-accuracy"


def _break_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine.load_runtime

    def load_runtime(backend: str, *args: Any, **kwargs: Any) -> Any:
        if backend.startswith("openvino"):
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:97:\nno CPU plugin here\n")
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(engine, "load_runtime", load_runtime)


def test_auto_falls_back_to_the_torch_reference_when_openvino_cannot_load(
        ov_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], eval_csv: Path) -> None:
    copy = _copy_selecting(ov_tiny, tmp_path / "copy", "openvino-fp32")
    assert Classifier(str(copy)).describe()["backend"] == "openvino"  # unbroken, auto runs the selected variant
    _break_openvino(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="padless.engine"):
        clf = Classifier(str(copy))
    (record,) = [r for r in caplog.records if r.name == "padless.engine"]
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert record.getMessage() == ("the openvino-fp32 variant cannot run here: RuntimeError: no CPU plugin here; "
                                   "running the folder's torch-fp32 reference instead")
    assert clf.variant == "torch-fp32" and clf.describe()["backend"] == "torch"
    assert [p.label for p in clf(["a wonderful film", "dull"])] == [
        p.label for p in Classifier(str(copy), backend="torch")(["a wonderful film", "dull"])]

    with pytest.raises(ModelError, match="^the openvino-fp32 variant cannot run here: RuntimeError: no CPU plugin "
                                         "here$"):
        Classifier(str(copy), variant="openvino-fp32")
    code, _, err = run_cli(["verify", str(copy), "--variant", "openvino-fp32", "--eval", str(eval_csv)],
                           monkeypatch, capsys)
    assert code == 2 and err == "error: the openvino-fp32 variant cannot run here: RuntimeError: no CPU plugin here\n"


def test_auto_falls_back_when_the_openvino_recheck_fails(ov_tiny: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    copy = _copy_selecting(ov_tiny, tmp_path / "copy", "openvino-fp32")
    m = _manifest(copy)
    for c in m["candidates"]:
        if c["name"] == "openvino-fp32":
            c["check"]["logits"] = (np.array(c["check"]["logits"]) + 1.0).tolist()
    (copy / "manifest.json").write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="padless.engine"):
        clf = Classifier(str(copy))
    assert clf.variant == "torch-fp32"
    assert "the openvino-fp32 variant cannot run here: the selected variant's outputs differ" in caplog.text
    with pytest.raises(ModelError, match="openvino-fp32 variant cannot run here: the selected variant's outputs"):
        Classifier(str(copy), variant="openvino-fp32")
