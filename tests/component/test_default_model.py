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
    """A short build of the real recipe (40 steps on 640 training snippets): folder, a card whose held-out accuracy
    shows it learned, and `Classifier("default")` loading it without a rebuild."""
    from padless import Classifier, default_model
    from padless.loader import default_model_dir

    monkeypatch.setenv("PADLESS_CACHE", str(tmp_path / "cache"))
    card = default_model.build_default(config=TrainConfig(epochs=1, batch_size=16, learning_rate=2e-4), train_rows=640)
    folder = default_model_dir()
    assert (folder / "config.json").is_file() and (folder / "README.md").is_file()
    saved = json.loads((folder / "padless_card.json").read_text())
    assert saved["held_out_accuracy"] == card["held_out_accuracy"]
    # Chance is 51.0% (the majority label of the 2,113 held-out snippets). This build measured 75.2-75.9% (seeds 7,
    # 42, 123; 1 or 2 threads; 2 vCPU EPYC), the full recipe 86.4%: 0.65 leaves 10 points for other machines and
    # still fails a build that learned nothing (the earlier two-step smoke build scored 51.8%, all "negative").
    assert card["held_out_accuracy"] >= 0.65
    assert "vader-movies-test" in card["eval_set"] and not (tmp_path / "cache" / "models" / "default.building").exists()
    monkeypatch.setattr(default_model, "build_default", lambda **_: pytest.fail("rebuilt although present"))
    clf = Classifier("default")
    assert clf.labels == ["negative", "positive"]
    # Measured: positive at 0.83-0.86 and negative at 0.75-0.86 over the same seeds.
    assert clf("a wonderful film").label == "positive"
    assert clf("a terrible, boring film").label == "negative"


def test_only_the_public_classifier_builds_a_missing_default(tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader and the engine refuse an unbuilt ``default`` with the command to run; ``from padless import
    Classifier`` builds it on first use, once."""
    import shutil

    from padless import Classifier, default_model, engine, loader
    from padless.errors import ModelError

    for load in (loader.resolve, engine.Classifier):
        with pytest.raises(ModelError, match="run: padless models build default"):
            load("default")
    builds = []

    def build(**_: object) -> dict[str, object]:
        builds.append(1)
        shutil.copytree(tiny_model_dir, loader.default_model_dir())
        return {}

    monkeypatch.setattr(default_model, "build_default", build)
    clf = Classifier("default", backend="torch")
    assert isinstance(clf, engine.Classifier) and clf.labels == ["negative", "neutral", "positive"]
    assert Classifier().path == loader.default_model_dir() and builds == [1]
    assert engine.Classifier("default").path == loader.default_model_dir()
