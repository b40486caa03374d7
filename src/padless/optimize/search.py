"""``padless optimize``: build the candidates, measure each in one run, gate them, select, write the folder.

Contract: :func:`optimize` sends an embedding model to :mod:`padless.optimize.embed`
(:func:`padless.tasks.resolve_task`); for a
classifier it copies the model into ``out_dir`` (so the folder is self-contained), builds every
candidate variant, scores each on the eval set against the torch fp32 reference (:mod:`padless.optimize.gate`),
times each on the bench workload (realistic and long mixes, candidates interleaved round by round so that a noisy
neighbour slows all of them alike), selects the fastest on the realistic mix that passes the gate, and writes
``manifest.json``, ``report.md`` and ``pareto.png``. The reference itself always passes, so a selection always exists.
What both tasks share (building, timing, selecting) is :mod:`padless.optimize.measure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padless import loader
from padless.datasets import LabelledSet
from padless.default_model import ensure_default
from padless.engine import Classifier, Engine
from padless.errors import ConfigError
from padless.loader import manifest as mf
from padless.optimize import candidates as cands
from padless.optimize import measure
from padless.optimize import openvino as ov_candidates
from padless.optimize.candidates import CANDIDATES, REFERENCE
from padless.optimize.config import OptimizeConfig
from padless.optimize.gate import compare, label_ids, load_eval
from padless.tasks import resolve_task

__all__ = ["CANDIDATES", "OptimizeConfig", "calibration_texts", "optimize"]


def calibration_texts(model: str, cfg: OptimizeConfig, eval_texts: list[str]) -> tuple[str, list[str]]:
    """Unlabelled text to calibrate on: ``--calibration`` (a named set or file), else a default that is not the
    eval set where one exists (the default model: VADER Amazon reviews), else the eval texts themselves."""
    if cfg.calibration:
        return cfg.calibration, load_eval(cfg.calibration).texts[: cfg.calibration_rows]
    if model == loader.DEFAULT_NAME:
        return "vader-amazon", load_eval("vader-amazon").texts[: cfg.calibration_rows]
    return "eval set texts (no --calibration given)", eval_texts[: cfg.calibration_rows]


def optimize(model: str, out_dir: Path, cfg: OptimizeConfig, *, overwrite: bool = False,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole search (see the module docstring) and return the manifest written to ``out_dir``. An embedding
    model goes to :func:`padless.optimize.embed.optimize_embed` (same candidates, the fidelity gate)."""
    cfg.validate()
    if resolve_task(model, cfg.task) == "embed":
        from padless.optimize.embed import optimize_embed

        return optimize_embed(model, out_dir, cfg, overwrite=overwrite, say=say)
    eval_name = cfg.eval_set or (loader.DEFAULT_NAME == model and "vader-movies-test") or None
    if not eval_name:
        raise ConfigError("--eval is required for a model other than 'default' (a named set or a labelled file)")
    data = load_eval(eval_name, text_column=cfg.text_column)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
    ensure_default(model)  # the default model is built on first use, as by padless.Classifier
    measure.prepare_output(loader.resolve(model), out_dir, overwrite=overwrite)
    ref = _Reference.of(model, out_dir, cfg, data)
    say(f"reference: torch fp32; eval {data.name} ({len(data)} rows" + (f", {len(ref.held)} of them held out to "
        f"validate {ov_candidates.ACCURACY}" if ref.held else "") + f"); calibration {ref.cal_name} "
        f"({len(ref.cal_texts)})")
    built, skipped = measure.build_all(out_dir, cfg, ref.clf, ref.cal_texts, ref.cal_logits, ref.validation, say)
    runners: dict[str, Engine] = {
        name: ref.clf if name == REFERENCE else
        Classifier(str(out_dir), backend=spec["backend"], threads=cfg.threads,
                   runtime_options=mf.absolute_files(spec["options"], out_dir))
        for name, spec in built.items()}
    _score(runners, built, ref, cfg, data.name, say)
    workloads = measure.time_all(runners, built, ref.clf, cfg, say)
    manifest = measure.finish(model, out_dir, cfg, built, runners, workloads, ref.gate_texts, skipped)
    manifest.update({
        "eval_set": {"name": data.name, "rows": len(data), "gate_rows": len(ref.gate_rows),
                     **({"validation": ov_candidates.split_record(len(data), ref.held)} if ref.held else {})},
        "calibration": {"source": ref.cal_name, "rows": len(ref.cal_texts)},
        "gate": asdict(cfg.gate)})
    mf.write(out_dir, manifest)
    from padless.optimize.report import write_chart, write_report

    write_chart(manifest, out_dir / "pareto.png")
    write_report(manifest, out_dir / "report.md")
    return manifest


@dataclass(frozen=True)
class _Reference:
    """The torch fp32 reference in ``out_dir``, and what every candidate is built, gated and checked against."""

    clf: Classifier
    cal_name: str
    cal_texts: list[str]
    cal_logits: np.ndarray  # the reference's on the calibration texts
    gate_rows: list[int]  # eval rows the gate scores
    held: list[int]  # eval rows held out to validate accuracy control
    validation: Any
    gate_texts: list[str]
    gold: np.ndarray  # the gate rows' label ids
    eval_logits: np.ndarray  # the reference's on the gate rows

    @classmethod
    def of(cls, model: str, out_dir: Path, cfg: OptimizeConfig, data: LabelledSet) -> _Reference:
        clf = Classifier(str(out_dir), backend="torch", threads=cfg.threads)
        gold = label_ids(data.labels, clf.labels)
        cal_name, cal_texts = calibration_texts(model, cfg, data.texts)
        ref_all = clf.logits(data.texts)[0]
        cal_ref = clf.logits(cal_texts)[0]
        # Accuracy control validates on eval rows: those rows are held out, and every candidate is gated on the rest.
        gate_rows, held = (ov_candidates.split_eval(len(data), cfg.accuracy_control.rows)
                           if ov_candidates.ACCURACY in cfg.candidates else (list(range(len(data))), []))
        validation = ov_candidates.validation_of(clf, data.texts, held, ref_all, gold) if held else None
        return cls(clf=clf, cal_name=cal_name, cal_texts=cal_texts, cal_logits=cal_ref, gate_rows=gate_rows,
                   held=held, validation=validation, gate_texts=[data.texts[i] for i in gate_rows],
                   gold=gold[gate_rows], eval_logits=ref_all[gate_rows])


def _score(runners: dict[str, Engine], built: dict[str, dict[str, Any]], ref: _Reference, cfg: OptimizeConfig,
           eval_name: str, say: Callable[[str], None]) -> None:
    """Gate every candidate on the gate rows (``built[name]["eval"]``); a student's variants are also held to
    agreement with the student's own torch fp32."""
    student_fp32: dict[str, Any] = {}  # a student's own torch fp32 logits: what its variants must agree with
    for name, clf in runners.items():  # build_student lists a student's torch fp32 first
        say(f"scoring {name} on {eval_name}")
        logits = ref.eval_logits if name == REFERENCE else clf.outputs(ref.gate_texts)[0]
        student = built[name].get("notes", {}).get("student")
        if student is None:
            built[name]["eval"] = compare(ref.eval_logits, logits, ref.gold, cfg.gate)
        else:
            own_name = cands.student_fp32_name(student)
            if name == own_name:
                student_fp32[student] = logits
            built[name]["eval"] = compare(ref.eval_logits, logits, ref.gold, cfg.gate,
                                          agreement_reference=student_fp32[student], agreement_of=own_name)
        if hasattr(clf.runtime, "recomputed_fraction"):
            built[name]["notes"]["fallback_rows_on_eval"] = round(clf.runtime.recomputed_fraction, 4)
