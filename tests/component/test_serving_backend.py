"""`padless serve --backend auto` on a plain model folder runs ONNX Runtime fp32; everything else is left as asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from padless.engine import Classifier
from padless.errors import ModelError
from padless.loader import export
from padless.server.run import serving_backend


def test_auto_on_a_plain_folder_is_onnx_with_torchs_logits(tiny_model_dir: Path) -> None:
    assert serving_backend(str(tiny_model_dir), "auto") == "onnx"
    texts = ["great film", "a dull, plodding and far too long story " * 8, "ok"]
    onnx = Classifier(str(tiny_model_dir), backend="onnx", threads=1)
    torch = Classifier(str(tiny_model_dir), backend="torch", threads=1)
    assert onnx.runtime.describe()["backend"] == "onnx"
    assert np.abs(onnx.logits(texts)[0] - torch.logits(texts)[0]).max() <= export.EXPORT_TOLERANCE


@pytest.mark.parametrize("asked", ["torch", "onnx", "dummy", "torch-int8"])
def test_an_explicit_backend_is_kept(tiny_model_dir: Path, asked: str) -> None:
    assert serving_backend(str(tiny_model_dir), asked) == asked


def test_a_model_that_does_not_export_is_served_on_torch(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    def refuse(model_dir: object, **_: object) -> Path:
        raise ModelError("the ONNX export differs from PyTorch by 1e-2 (> 1e-4); refusing to use it")

    monkeypatch.setattr(export, "ensure_onnx", refuse)
    with caplog.at_level("WARNING", logger="padless.server"):
        assert serving_backend(str(tiny_model_dir), "auto") == "torch"
    assert "ModelError" in caplog.text and "serving on torch" in caplog.text


def test_an_optimize_folder_keeps_auto(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "opt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "selected": "torch-fp32"}))

    def never(model_dir: object, **_: object) -> Path:
        raise AssertionError("an optimize folder must not be exported again")

    monkeypatch.setattr(export, "ensure_onnx", never)
    assert serving_backend(str(folder), "auto") == "auto"
