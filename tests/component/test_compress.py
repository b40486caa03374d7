"""Pruning and distillation on the tiny BERT: exact structural cuts, folders every backend loads, seeded runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_cli

from padless.compress import structure
from padless.compress.distill import DistillConfig, distill, student_layers
from padless.compress.prune import PruneConfig, prune
from padless.compress.trainer import TrainSpec
from padless.datasets import load
from padless.engine import Classifier
from padless.errors import ConfigError, ModelError
from padless.loader import load_model
from padless.loader.export import export_onnx

TEXTS = load("vader-movies-train").texts[:96]
QUICK = TrainSpec(epochs=1.0, batch_size=16, learning_rate=1e-4, checkpoint_every=2)


def _logits(model: torch.nn.Module, texts: list[str], tokenizer_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(tokenizer_dir))(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def _masked(model: torch.nn.Module, heads: dict[int, list[int]], neurons: dict[int, list[int]]) -> list:
    """Hooks that zero the outputs of the given heads and neurons: what removing them must reproduce."""
    size = structure.head_size(model)
    hooks = []
    for i, layer in enumerate(structure.layers_of(model)):
        hm = torch.ones(layer.attention.output.dense.in_features)
        for h in heads.get(i, []):
            hm[h * size:(h + 1) * size] = 0
        nm = torch.ones(layer.output.dense.in_features)
        nm[neurons.get(i, [])] = 0
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(lambda _m, a, hm=hm: (a[0] * hm,)))
        hooks.append(layer.output.dense.register_forward_pre_hook(lambda _m, a, nm=nm: (a[0] * nm,)))
    return hooks


def test_cutting_heads_and_neurons_equals_zeroing_exactly_those(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, attn_implementation="eager")
    drop_heads = {0: [1, 3], 1: [0]}
    drop_neurons = {0: list(range(0, 128, 2)), 1: list(range(64, 128))}
    hooks = _masked(model, drop_heads, drop_neurons)
    expected = _logits(model, TEXTS[:8], tiny_model_dir)
    for h in hooks:
        h.remove()
    structure.cut_heads(model, {0: [0, 2], 1: [1, 2, 3]})
    structure.cut_neurons(model, {0: list(range(1, 128, 2)), 1: list(range(64))})
    layer0 = structure.layers_of(model)[0]
    assert layer0.attention.self.query.weight.shape == (2 * 16, 64)
    assert layer0.attention.output.dense.weight.shape == (64, 2 * 16)
    assert layer0.intermediate.dense.weight.shape == (64, 64) and layer0.output.dense.weight.shape == (64, 64)
    assert model.config.pruned_heads == {"0": [1, 3], "1": [0]} and model.config.intermediate_size == 64
    torch.testing.assert_close(_logits(model, TEXTS[:8], tiny_model_dir), expected, atol=1e-5, rtol=0)


def test_a_second_cut_records_original_head_numbers_and_layers_renumber(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    structure.cut_heads(model, {1: [1, 2, 3]})  # removes original head 0 of layer 1
    structure.cut_heads(model, {1: [0, 2]})  # of heads 1, 2, 3 keep 1 and 3: removes original head 2
    assert model.config.pruned_heads == {"1": [0, 2]}
    assert structure.remaining_heads(model, 1) == [1, 3]
    structure.keep_layers(model, [1])
    assert model.config.num_hidden_layers == 1 and model.config.pruned_heads == {"0": [0, 2]}
    with pytest.raises(ModelError, match="every attention head"):
        structure.cut_heads(model, {0: []})


def test_a_pruned_folder_reloads_and_runs_on_every_backend(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = load_model(tiny_model_dir)
    structure.cut_heads(model, {0: [0, 1], 1: [3]})
    structure.cut_neurons(model, {0: list(range(32)), 1: list(range(32, 64))})
    out = tmp_path / "pruned"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["pruned_heads"] == {"0": [2, 3], "1": [0, 1, 2]}
    reloaded = load_model(out)
    torch.testing.assert_close(_logits(reloaded, TEXTS[:8], out), _logits(model, TEXTS[:8], out), atol=0, rtol=0)
    assert export_onnx(out, tmp_path / "n.onnx")["fused"] is False  # 2 and 1 heads: no fusion, exact graph
    reference = Classifier(str(out), backend="torch").logits(TEXTS)[0]
    np.testing.assert_allclose(reference, _logits(model.eval(), TEXTS, out).numpy(), atol=1e-4)
    assert np.abs(Classifier(str(out), backend="onnx").logits(TEXTS)[0] - reference).max() <= 1e-4
    for backend in ("onnx-int8", "torch-int8", "torch-bf16"):  # reduced precision: it runs and mostly agrees
        got = Classifier(str(out), backend=backend).logits(TEXTS)[0]
        assert np.isfinite(got).all() and (got.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_prune_removes_the_requested_share_and_drops_a_layer(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    labels = [i % 3 for i in range(len(TEXTS))]
    card = prune(tiny_model_dir, out, TEXTS, labels,
                 PruneConfig(sparsity=0.5, drop_layers=1, sample_rows=32, recovery=QUICK), sources=["train (96)"])
    assert json.loads((out / "padless_prune.json").read_text())["data"] == ["train (96)"]
    assert card["heads_per_layer"] == 2 and card["neurons_per_layer"] == 64 and len(card["layers_kept"]) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["intermediate_size"] == 64
    assert len(config["pruned_heads"]["0"]) == 2
    # one layer of two, each at half width: a quarter of the matrix work
    assert card["matrix_flops_per_token"]["ratio"] == pytest.approx(0.25)
    assert np.isfinite(Classifier(str(out), backend="onnx").logits(TEXTS[:10])[0]).all()
    # the same heads in every layer: ORT's attention fusion is told the real count and still matches torch
    assert export_onnx(out, tmp_path / "fused.onnx")["fused"] is True


def test_target_speedup_sets_the_share_removed() -> None:
    assert PruneConfig(target_speedup=2.0).share_removed == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        PruneConfig(sparsity=0.5, target_speedup=2.0).validate()
    with pytest.raises(ConfigError, match="removes no work"):
        PruneConfig(target_speedup=2.0, method="magnitude").validate()


def test_magnitude_pruning_keeps_its_zeros_through_recovery(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    card = prune(tiny_model_dir, out, TEXTS, None, PruneConfig(sparsity=0.6, method="magnitude", recovery=QUICK))
    assert "no speed-up" in card["note"] and card["matrix_flops_per_token"]["ratio"] == 1.0
    model = load_model(out)
    for name, p in model.named_parameters():
        if p.dim() == 2 and ".encoder." in f".{name}":
            assert (p == 0).float().mean().item() == pytest.approx(0.6, abs=0.01), name


def test_student_layers_are_evenly_spaced_and_end_at_the_last() -> None:
    assert student_layers(6, 3) == [1, 3, 5]
    assert student_layers(6, 2) == [2, 5]
    assert student_layers(6, 6) == list(range(6))
    with pytest.raises(ConfigError):
        student_layers(6, 7)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_distillation_is_reproducible_and_resumes_to_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    labels = [i % 3 if i < 40 else -1 for i in range(len(TEXTS))]
    cfg = DistillConfig(layers=1, training=QUICK)
    first = distill(tiny_model_dir, tmp_path / "a", TEXTS, labels, cfg)
    assert first["finished"] and first["layers_kept"] == [1] and first["steps"] == 6
    distill(tiny_model_dir, tmp_path / "b", TEXTS, labels, cfg)
    partial = distill(tiny_model_dir, tmp_path / "c", TEXTS, labels, cfg, stop_after=3)
    assert not partial["finished"] and not (tmp_path / "c" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="--resume"):
        distill(tiny_model_dir, tmp_path / "c", TEXTS, labels, cfg)
    resumed = distill(tiny_model_dir, tmp_path / "c", TEXTS, labels, cfg, resume=True)
    assert resumed["finished"]
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    student = json.loads((tmp_path / "a" / "config.json").read_text())
    assert student["num_hidden_layers"] == 1
    assert not (tmp_path / "a" / ".distill-state").exists()


def test_hard_labels_only_needs_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs labelled data"):
        distill(tiny_model_dir, tmp_path / "h", TEXTS, None, DistillConfig(layers=1, hard_labels_only=True))


def test_cli_refuses_impossible_options_in_one_line(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["prune", str(tiny_model_dir), "-o", str(tmp_path / "x"), "--sparsity", "0.5", "--target-speedup", "2"],
         "exactly one of --sparsity"),
        (["prune", str(tiny_model_dir), "-o", str(tmp_path / "x"), "--sparsity", "0.5"], "give --data"),
        (["distill", "--teacher", str(tiny_model_dir), "-o", str(tmp_path / "y"), "--data", "vader-movies-test"],
         "held-out split"),
        (["distill", "--teacher", str(tiny_model_dir), "-o", str(tmp_path / "y"), "--layers", "0"],
         "--layers must be at least 1"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
