"""The embedded default model: fine-tuning is reproducible and learns; the build writes a usable, carded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from padless.train import TrainConfig, fine_tune

TOY_TEXTS = [f"{word} {noun}" for word in ("great", "lovely", "superb", "awful", "boring", "terrible")
             for noun in ("film", "movie", "plot", "story", "cast", "ending")]
TOY_LABELS = ["positive" if t.split()[0] in ("great", "lovely", "superb") else "negative" for t in TOY_TEXTS]


def _train_tiny(base: Path, out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    fine_tune(base=base, texts=TOY_TEXTS, labels=TOY_LABELS, label_names=("negative", "positive"), out_dir=out,
              config=TrainConfig(epochs=8, batch_size=8, learning_rate=1e-3, seed=7, threads=1))
    return load_file(str(out / "model.safetensors"))


def test_fine_tune_is_reproducible_and_learns(tiny_model_dir: Path, tmp_path: Path) -> None:
    from padless.engine import Classifier

    a = _train_tiny(tiny_model_dir, tmp_path / "a")
    b = _train_tiny(tiny_model_dir, tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    preds = Classifier(str(tmp_path / "a")).run(TOY_TEXTS)
    accuracy = sum(p.label == y for p, y in zip(preds, TOY_LABELS)) / len(TOY_LABELS)
    assert accuracy >= 0.9  # chance is 0.5; the base model had three labels and no notion of these words
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.slow
def test_build_default_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-step build of the real recipe: folder, card, and `Classifier("default")` loading it without a rebuild."""
    from padless import models
    from padless.engine import Classifier

    monkeypatch.setenv("PADLESS_CACHE", str(tmp_path / "cache"))
    card = models.build_default(config=TrainConfig(epochs=1, batch_size=16), train_rows=32)
    folder = models.default_model_dir()
    assert (folder / "config.json").is_file() and (folder / "README.md").is_file()
    saved = json.loads((folder / "padless_card.json").read_text())
    assert saved["held_out_accuracy"] == card["held_out_accuracy"]
    assert 0.0 <= card["held_out_accuracy"] <= 1.0
    assert "vader-movies-test" in card["eval_set"] and not (tmp_path / "cache" / "models" / "default.building").exists()
    monkeypatch.setattr(models, "build_default", lambda **_: pytest.fail("rebuilt although present"))
    clf = Classifier("default")
    assert clf.labels == ["negative", "positive"]
    assert clf("a wonderful film").label in ("negative", "positive")
