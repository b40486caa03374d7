"""The OpenVINO candidates of ``padless optimize``, and the eval rows that accuracy-controlled int8 validates on.

* ``openvino-fp32``: the checked IR (:func:`padless.loader.openvino.export_openvino`), f32 inference precision;
* ``openvino-bf16``: the same IR with the bf16 precision hint (only where the CPU computes bf16 natively);
* ``openvino-int8``: NNCF post-training int8 (``model_type=TRANSFORMER``) calibrated on the calibration text the
  other int8 candidates use (:func:`padless.loader.openvino.quantize_openvino`), f32 hint;
* ``openvino-int8-bf16``: that int8 IR with the bf16 hint;
* ``openvino-int8-accuracy``: ``nncf.quantize_with_accuracy_control`` on the same calibration text, validated on a
  part of the eval set that the gate does not score (:func:`split_eval`): the metric is accuracy against the fp32
  reference's labels there (that is, agreement), and NNCF reverts quantized layers to float, most harmful first,
  until the drop is within ``max_drop`` = the gate's accuracy limit as a fraction (capped by its agreement limit).
  An agreement drop of ``d`` bounds the accuracy drop by ``d`` too, so that one metric stands for both halves of
  the gate; accuracy against the gold labels alone would let through the label flips that cancel out, which is
  how plain int8 fails the gate (on agreement, not accuracy).

Each candidate's IR is ``variants/<name>/model.xml`` + ``model.bin``; a bf16 candidate runs its f32 sibling's IR
(the precision is a runtime option), so ``openvino-bf16`` names ``variants/openvino-fp32/model.xml``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padless.engine import Classifier, Engine
from padless.errors import ConfigError, ModelError
from padless.loader.sentence import EmbeddingInfo
from padless.optimize.gate import GateConfig

CANDIDATES = ("openvino-fp32", "openvino-bf16", "openvino-int8", "openvino-int8-bf16", "openvino-int8-accuracy")
ACCURACY = "openvino-int8-accuracy"
SPLIT_SEED = 0


@dataclass(frozen=True, kw_only=True)
class AccuracyControl:
    """How ``openvino-int8-accuracy`` validates, and the bounds that keep it to minutes on 2 cores."""

    rows: int = 300  # eval rows held out for validation (at most a quarter of the eval set)
    ranking_rows: int = 100  # of those, the rows NNCF ranks the quantized layers on
    max_iterations: int = 12  # layers (groups of quantizers) NNCF may revert to float
    calibration_rows: int = 300  # NNCF's subset_size

    def validate(self) -> None:
        if min(self.rows, self.ranking_rows, self.max_iterations, self.calibration_rows) < 1:
            raise ConfigError("accuracy-control rows, ranking rows, iterations and calibration rows must be positive")
        if self.ranking_rows > self.rows:
            raise ConfigError(f"--accuracy-control-ranking-rows {self.ranking_rows} exceeds "
                              f"--accuracy-control-rows {self.rows}: NNCF ranks layers on some of the held-out rows")


@dataclass(frozen=True, kw_only=True)
class Validation:
    """The eval rows ``openvino-int8-accuracy`` validates on: their token ids, and the reference's and gold labels."""

    rows: list[int]
    ids: list[list[int]]
    reference: np.ndarray
    gold: np.ndarray


def split_eval(n: int, cap: int) -> tuple[list[int], list[int]]:
    """Deterministic split of ``n`` eval rows: (rows the gate scores, rows accuracy control validates on). The
    validation rows are the first ``min(cap, n // 4)`` of a seeded permutation, so they span the whole set."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    held = set(order[: min(cap, n // 4)].tolist())
    return [i for i in range(n) if i not in held], sorted(held)


def split_record(n: int, held: list[int]) -> dict[str, Any]:
    """How the manifest records the validation rows: which, by what rule, for which candidate."""
    return {"rows": held, "used_by": ACCURACY, "rule": f"the first {len(held)} of numpy default_rng({SPLIT_SEED})"
            f".permutation({n}); the gate scores the other rows"}


def validation_of(ref: Classifier, texts: list[str], rows: list[int], ref_logits: np.ndarray,
                  gold: np.ndarray) -> Validation:
    """The validation rows' token ids (rows the tokenizer refuses are left out) and labels."""
    encoded = ref.encoder.encode([texts[i] for i in rows])
    keep = [k for k, e in enumerate(encoded) if not isinstance(e, Exception)]
    return Validation(rows=[rows[k] for k in keep], ids=[list(encoded[k]) for k in keep],  # type: ignore[arg-type]
                      reference=ref_logits[[rows[k] for k in keep]].argmax(axis=1), gold=gold[[rows[k] for k in keep]])


def text_feeds(ref: Engine, texts: list[str], *, segments: bool) -> list[dict[str, np.ndarray]]:
    """One feed per text (``1 × length`` int64 arrays), the calibration items NNCF takes; ``segments`` adds the
    zero ``token_type_ids`` of a single text, for an IR that has that input."""
    feeds = []
    for ids in ref.encoder.encode(texts):
        if isinstance(ids, Exception):
            continue
        row = np.asarray([list(ids)], dtype=np.int64)
        feed = {"input_ids": row, "attention_mask": np.ones_like(row)}
        if segments:
            feed["token_type_ids"] = np.zeros_like(row)
        feeds.append(feed)
    return feeds


def build(name: str, out: Path, ref: Engine, cal_texts: list[str], validation: Validation | None,
          gate: GateConfig, control: AccuracyControl, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Make one OpenVINO candidate's IR; return its backend/options/notes, or None when it cannot apply here."""
    from padless.loader.openvino import export_openvino, ir_inputs, quantize_openvino
    from padless.machine import cpu_has_native_bf16

    fp32 = out / "variants" / "openvino-fp32" / "model.xml"
    int8 = out / "variants" / "openvino-int8" / "model.xml"
    bf16 = name.endswith("-bf16")
    if bf16 and not cpu_has_native_bf16():
        say(f"{name}: skipped, this CPU has no native bf16 (avx512_bf16 / amx_bf16); emulated bf16 is slower "
            "than f32")
        return None
    notes: dict[str, Any] = {}
    if not fp32.is_file():
        notes = {"export": export_openvino(out, fp32, embedding=ref.info.embedding)}
    if name in ("openvino-fp32", "openvino-bf16"):
        return _spec(name, fp32, out, "float32", {**notes, "precision_hint": "bf16" if bf16 else "f32"})
    segments = "token_type_ids" in ir_inputs(fp32)
    cal = text_feeds(ref, cal_texts, segments=segments)
    if name == ACCURACY:
        if validation is None or not isinstance(ref, Classifier):
            raise ConfigError(f"{ACCURACY} needs validation rows from the eval set")
        target = out / "variants" / ACCURACY / "model.xml"
        return _spec(name, target, out, "int8", quantize_with_accuracy_control(
            fp32, target, cal, validation, ref, max_drop=max_drop_of(gate), control=control, segments=segments))
    if not int8.is_file():
        notes["quantize"] = quantize_openvino(fp32, int8, cal, subset_size=min(control.calibration_rows, len(cal)))
    return _spec(name, int8, out, "int8", {**notes, "precision_hint": "bf16" if bf16 else "f32"})


def build_student(name: str, student_dir: Path, out: Path, ref: Engine, cal_texts: list[str],
                  control: AccuracyControl, notes: dict[str, Any],
                  embedding: EmbeddingInfo | None = None) -> dict[str, dict[str, Any]]:
    """A student's OpenVINO candidates: ``<student>-openvino-int8`` (NNCF PTQ on the calibration text) and, where the
    CPU computes bf16 natively, ``<student>-openvino-bf16`` (its fp32 IR with the bf16 hint; the IR is kept for it,
    in a scratch folder otherwise). On the 50%-pruned default model bf16 ran faster than int8 here (915 against 755
    texts/s, 2 cores with AMX): the int8 IR runs everything but its quantized MatMuls in f32 (its f32 hint), and with
    half the heads and neurons that rest is a larger share of the work. ``embedding``: an embedding student's pooling
    (its IRs output pooled vectors)."""
    from padless.loader.openvino import export_openvino, ir_inputs, quantize_openvino
    from padless.machine import cpu_has_native_bf16

    target = out / "variants" / f"{name}-openvino-int8" / "model.xml"
    bf16 = cpu_has_native_bf16()
    with tempfile.TemporaryDirectory(prefix="padless-ov-") as scratch:
        fp32 = (out / "variants" / f"{name}-openvino-bf16" if bf16 else Path(scratch)) / "model.xml"
        export = export_openvino(student_dir, fp32, embedding=embedding)
        cal = text_feeds(ref, cal_texts, segments="token_type_ids" in ir_inputs(fp32))
        quantized = quantize_openvino(fp32, target, cal, subset_size=min(control.calibration_rows, len(cal)))
    specs = {f"{name}-openvino-int8": _spec(f"{name}-openvino-int8", target, out, "int8",
                                            {**notes, "export": export, "quantize": quantized})}
    if bf16:
        specs[f"{name}-openvino-bf16"] = _spec(f"{name}-openvino-bf16", fp32, out, "float32",
                                               {**notes, "export": export, "precision_hint": "bf16"})
    for spec in specs.values():
        spec["options"] = {"model_dir": str(student_dir.relative_to(out)), **spec["options"]}
    return specs


def _spec(name: str, xml: Path, out: Path, precision: str, notes: dict[str, Any]) -> dict[str, Any]:
    hint = "bfloat16" if name.endswith("-bf16") else "float32"
    backend = ("openvino-int8" if precision == "int8" else "openvino") + ("-bf16" if hint == "bfloat16" else "")
    return {"backend": backend, "options": {"ir_file": str(xml.relative_to(out)), "precision": hint},
            "precision": "bfloat16" if precision == "float32" and hint == "bfloat16" else precision, "notes": notes}


def max_drop_of(gate: GateConfig) -> float:
    """NNCF's ``max_drop`` (a fraction of agreement with the reference) from the gate: its accuracy limit in points
    as a fraction, capped by the disagreement its agreement limit allows."""
    return min(gate.max_accuracy_drop / 100, 1 - gate.min_agreement)


def _predict(compiled: Any, rows: list[list[int]], ref: Classifier, segments: bool) -> np.ndarray:
    """Top labels of an OpenVINO compiled model on token-id rows, batched by padless's planner."""
    labels = np.zeros(len(rows), dtype=np.int64)
    for batch in ref.plan([len(r) for r in rows]):
        ids = np.full((batch.rows, batch.width), ref.encoder.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, k in enumerate(batch.indices):
            ids[r, : len(rows[k])] = rows[k]
            mask[r, : len(rows[k])] = 1
        feed = {"input_ids": ids, "attention_mask": mask, **({"token_type_ids": np.zeros_like(ids)} if segments
                                                            else {})}
        labels[list(batch.indices)] = np.asarray(compiled(feed)[0]).argmax(axis=1)
    return labels


def quantize_with_accuracy_control(fp32_xml: Path, out_xml: Path, calibration: list[dict[str, np.ndarray]],
                                   validation: Validation, ref: Classifier, *, max_drop: float,
                                   control: AccuracyControl, segments: bool) -> dict[str, Any]:
    """NNCF int8 with accuracy control (see the module docstring); writes ``out_xml`` and its ``.bin`` atomically
    and returns what was done, for the manifest."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from padless.loader.openvino import quiet_nncf, read_ir, reason, save_atomically

    items = list(zip(validation.ids, validation.reference.tolist()))

    def validation_fn(compiled: Any, data: Iterable[Any]) -> tuple[float, list[float]]:
        batch = list(data)
        if not batch:
            return 0.0, []
        hits = (_predict(compiled, [ids for ids, _ in batch], ref, segments) == [y for _, y in batch]).astype(float)
        return float(hits.mean()), hits.tolist()

    def one_feed(item: tuple[list[int], int]) -> dict[str, np.ndarray]:
        row = np.asarray([item[0]], dtype=np.int64)
        return {"input_ids": row, "attention_mask": np.ones_like(row),
                **({"token_type_ids": np.zeros_like(row)} if segments else {})}

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="padless-ov-") as scratch:
        try:
            with quiet_nncf():
                quantized = nncf.quantize_with_accuracy_control(
                    read_ir(fp32_xml), nncf.Dataset(calibration), nncf.Dataset(items, one_feed), validation_fn,
                    max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, model_type=nncf.ModelType.TRANSFORMER,
                    subset_size=min(control.calibration_rows, len(calibration)),
                    advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                        max_num_iterations=control.max_iterations, ranking_subset_size=control.ranking_rows,
                        num_ranking_workers=1, intermediate_model_dir=scratch))
        except Exception as err:  # NNCF raises many types; the user needs one line
            raise ModelError(f"NNCF accuracy control could not quantize {fp32_xml}: {reason(err)}") from None
        plain_fq = _fake_quantize_count(read_ir(Path(scratch) / "intermediate_model.xml"))
    save_atomically(quantized, out_xml)
    core = ov.Core()
    agree = {}
    for label, xml in (("fp32", fp32_xml), ("int8", out_xml)):
        compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        agree[label] = _predict(compiled, validation.ids, ref, segments)
    kept = _fake_quantize_count(quantized)
    return {
        "method": "nncf.quantize_with_accuracy_control",
        "metric": "accuracy against the fp32 reference's labels (agreement) on the validation rows",
        "max_drop": round(max_drop, 6), "drop_type": "absolute", "model_type": "transformer",
        "validation_rows": len(validation.rows), "ranking_rows": min(control.ranking_rows, len(validation.rows)),
        "max_iterations": control.max_iterations, "calibration_rows": min(control.calibration_rows, len(calibration)),
        "fake_quantize_nodes": {"kept": kept, "plain_ptq": plain_fq},
        "reached_max_drop": bool(1 - float((agree["int8"] == validation.reference).mean()) <= max_drop + 1e-9),
        "on_validation_rows": {
            "agreement": round(float((agree["int8"] == validation.reference).mean()), 4),
            "accuracy": round(float((agree["int8"] == validation.gold).mean()), 4),
            "reference_accuracy": round(float((validation.reference == validation.gold).mean()), 4),
            "openvino_fp32_agreement": round(float((agree["fp32"] == validation.reference).mean()), 4)},
        "quantize_s": round(time.perf_counter() - started, 1),
    }


def _fake_quantize_count(model: Any) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
