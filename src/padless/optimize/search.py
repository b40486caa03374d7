"""``padless optimize``: build the candidates, measure each in one run, gate them, select, write the folder.

Contract: :func:`optimize` copies the model into ``out_dir`` (so the folder is self-contained), builds every
candidate variant, scores each on the eval set against the torch fp32 reference (:mod:`padless.optimize.gate`),
times each on the bench workload (realistic and long mixes, candidates interleaved round by round so that a noisy
neighbour slows all of them alike), selects the fastest on the realistic mix that passes the gate, and writes
``manifest.json``, ``report.md`` and ``pareto.png``. The reference itself always passes, so a selection always exists.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padless import loader
from padless.datasets import LabelledSet
from padless.default_model import ensure_default
from padless.engine import Classifier
from padless.errors import ConfigError
from padless.loader import manifest as mf
from padless.loader.export import model_digest
from padless.optimize import candidates as cands
from padless.optimize import openvino as ov_candidates
from padless.optimize.candidates import CANDIDATES, REFERENCE
from padless.optimize.gate import GateConfig, compare, label_ids, load_eval


@dataclass(frozen=True, kw_only=True)
class OptimizeConfig:
    """What ``padless optimize`` builds and how it measures. See ``padless optimize --help``."""

    eval_set: str | None = None  # None: vader-movies-test for the default model (required otherwise)
    calibration: str | None = None  # text for calibration and the sensitivity sweep; None: see calibration_texts
    calibration_rows: int = 400
    check_rows: int = 16  # texts whose outputs the manifest records for the load-time re-check
    bench_texts: int = 400  # realistic-mix texts per timing round
    long_texts: int = 48  # long-mix texts per timing round
    rounds: int = 3
    candidates: tuple[str, ...] = CANDIDATES
    gate: GateConfig = field(default_factory=GateConfig)
    threads: int = 0
    students: tuple[str, ...] = ()  # folders from padless prune / distill: each joins as fp32 and int8 candidates
    # openvino-int8-accuracy: its validation rows (held out of the gate's rows) and NNCF's bounds
    accuracy_control: ov_candidates.AccuracyControl = field(default_factory=ov_candidates.AccuracyControl)

    def validate(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown:
            raise ConfigError(f"unknown candidates {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
        if min(self.calibration_rows, self.check_rows, self.bench_texts, self.rounds) < 1 or self.long_texts < 0:
            raise ConfigError("calibration_rows, check_rows, bench_texts and rounds must be positive")
        self.gate.validate()
        self.accuracy_control.validate()
        for folder in self.students:
            if not (Path(folder) / "config.json").is_file():
                raise ConfigError(f"--students {folder}: not a model folder (no config.json)")


def calibration_texts(model: str, cfg: OptimizeConfig, eval_texts: list[str]) -> tuple[str, list[str]]:
    """Unlabelled text to calibrate on: ``--calibration`` (a named set or file), else a default that is not the
    eval set where one exists (the default model: VADER Amazon reviews), else the eval texts themselves."""
    if cfg.calibration:
        return cfg.calibration, load_eval(cfg.calibration).texts[: cfg.calibration_rows]
    if model == loader.DEFAULT_NAME:
        return "vader-amazon", load_eval("vader-amazon").texts[: cfg.calibration_rows]
    return "eval set texts (no --calibration given)", eval_texts[: cfg.calibration_rows]


def _seconds(clf: Classifier, texts: list[str]) -> float:
    started = time.perf_counter()
    clf.logits(texts)
    return time.perf_counter() - started


def optimize(model: str, out_dir: Path, cfg: OptimizeConfig, *, overwrite: bool = False,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole search (see the module docstring) and return the manifest written to ``out_dir``."""
    cfg.validate()
    eval_name = cfg.eval_set or (loader.DEFAULT_NAME == model and "vader-movies-test") or None
    if not eval_name:
        raise ConfigError("--eval is required for a model other than 'default' (a named set or a labelled file)")
    data = load_eval(eval_name)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        import shutil

        shutil.rmtree(out_dir)
    ensure_default(model)  # the default model is built on first use, as by padless.Classifier
    src = loader.resolve(model)
    cands.copy_model_folder(src, out_dir)
    ref = _Reference.of(model, out_dir, cfg, data)
    say(f"reference: torch fp32; eval {data.name} ({len(data)} rows" + (f", {len(ref.held)} of them held out to "
        f"validate {ov_candidates.ACCURACY}" if ref.held else "") + f"); calibration {ref.cal_name} "
        f"({len(ref.cal_texts)})")
    built = _build(out_dir, cfg, ref, say)
    runners = {name: ref.clf if name == REFERENCE else
               Classifier(str(out_dir), backend=spec["backend"], threads=cfg.threads,
                          runtime_options=mf.absolute_files(spec["options"], out_dir))
               for name, spec in built.items()}
    _score(runners, built, ref, cfg, data.name, say)
    workloads = _time(runners, built, ref.clf, cfg, say)
    manifest = _manifest(model, out_dir, cfg, data, ref, built, runners, workloads)
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


def _build(out_dir: Path, cfg: OptimizeConfig, ref: _Reference,
           say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Build every candidate (the reference first unless listed) and every student's variants: name → spec."""
    built: dict[str, dict[str, Any]] = {}
    for name in cfg.candidates if REFERENCE in cfg.candidates else (REFERENCE, *cfg.candidates):
        started = time.perf_counter()
        say(f"building {name}")
        spec = cands.build(name, out_dir, ref.clf, ref.cal_texts, ref.cal_logits, cfg.gate, cfg.accuracy_control,
                           ref.validation, say)
        if spec is not None:
            built[name] = {**spec, "build_s": round(time.perf_counter() - started, 1)}
    for folder in cfg.students:
        started = time.perf_counter()
        for name, spec in cands.build_student(Path(folder), out_dir, ref.clf, ref.cal_texts, cfg.accuracy_control,
                                              say).items():
            built[name] = {**spec, "build_s": round(time.perf_counter() - started, 1)}
    return built


def _score(runners: dict[str, Classifier], built: dict[str, dict[str, Any]], ref: _Reference, cfg: OptimizeConfig,
           eval_name: str, say: Callable[[str], None]) -> None:
    """Gate every candidate on the gate rows (``built[name]["eval"]``); a student's variants are also held to
    agreement with the student's own torch fp32."""
    student_fp32: dict[str, Any] = {}  # a student's own torch fp32 logits: what its variants must agree with
    for name, clf in runners.items():  # build_student lists a student's torch fp32 first
        say(f"scoring {name} on {eval_name}")
        logits = ref.eval_logits if name == REFERENCE else clf.logits(ref.gate_texts)[0]
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


def _time(runners: dict[str, Classifier], built: dict[str, dict[str, Any]], ref: Classifier, cfg: OptimizeConfig,
          say: Callable[[str], None]) -> dict[str, list[str]]:
    """Time every candidate on the bench workloads, round by round (``built[name]["throughput"]`` and
    ``["speedup_vs_torch_fp32"]``); returns the workloads."""
    from padless.bench.workload import make_workload

    workloads = {mix: make_workload(ref.encoder.tokenizer, mix, n, seed=0)
                 for mix, n in (("realistic", cfg.bench_texts), ("long", cfg.long_texts)) if n}
    times: dict[str, dict[str, list[float]]] = {name: {mix: [] for mix in workloads} for name in runners}
    for clf in runners.values():  # warm every runtime (and compile every shape class) before timing any of them
        clf.runtime.warmup()
        clf.logits(workloads["realistic"][:32])
    for r in range(cfg.rounds):
        say(f"timing round {r + 1}/{cfg.rounds}")
        for name, clf in runners.items():
            for mix, texts in workloads.items():
                times[name][mix].append(_seconds(clf, texts))
    for name in runners:
        built[name]["throughput"] = {mix: round(len(workloads[mix]) / statistics.median(ts), 1)
                                     for mix, ts in times[name].items()}
    ref_rate = built[REFERENCE]["throughput"]["realistic"]
    for spec in built.values():
        spec["speedup_vs_torch_fp32"] = round(spec["throughput"]["realistic"] / ref_rate, 2)
    return workloads


def _manifest(model: str, out_dir: Path, cfg: OptimizeConfig, data: LabelledSet, ref: _Reference,
              built: dict[str, dict[str, Any]], runners: dict[str, Classifier],
              workloads: dict[str, list[str]]) -> dict[str, Any]:
    """Select, record each candidate's load-time check logits, and assemble ``manifest.json``'s content."""
    selected = _select(built)
    check_texts = _check_sample(ref.gate_texts, cfg.check_rows)
    check = {"texts": check_texts}  # the reference's own logits are in its candidate entry, like every variant's
    for name, clf in runners.items():
        built[name]["check"] = {"logits": clf.logits(check_texts)[0].tolist(),
                                "tolerance": _check_tolerance(built[name])}
    ref_files = {p.name: mf.sha256_file(p) for p in sorted(out_dir.iterdir())
                 if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".json"))}
    candidates = []
    for name, spec in built.items():
        files = mf.option_files(spec["options"], out_dir)
        candidates.append({"name": name, **spec, "files": files, "status": _status(name, selected, built)})
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_model": model,
        "reference": {"name": REFERENCE, "digest": model_digest(out_dir), "files": ref_files},
        "eval_set": {"name": data.name, "rows": len(data), "gate_rows": len(ref.gate_rows),
                     **({"validation": ov_candidates.split_record(len(data), ref.held)} if ref.held else {})},
        "calibration": {"source": ref.cal_name, "rows": len(ref.cal_texts)},
        "gate": asdict(cfg.gate),
        "workloads": {mix: len(t) for mix, t in workloads.items()},
        "rounds": cfg.rounds,
        "machine": _machine(),
        "selected": selected,
        "candidates": candidates,
        "check": check,
    }


def _check_tolerance(spec: dict[str, Any]) -> float:
    """How far a load-time re-check may drift from the recorded logits. fp32 reruns agree to rounding; int8 depends
    on the batch's activation range, so other batch limits may move a logit by a few hundredths; with a fallback,
    a row near the margin may also take the other path, which moves it by its int8 error (≤ the margin on the
    calibration sample)."""
    if spec["precision"] == "float32":
        return 1e-3
    return max(0.1, float(spec["options"].get("fallback_margin", 0.0)))


def _select(built: dict[str, dict[str, Any]]) -> str:
    passing = [n for n, s in built.items() if s["eval"]["passed"]]
    return max(passing, key=lambda n: built[n]["throughput"]["realistic"])


def _status(name: str, selected: str, built: dict[str, dict[str, Any]]) -> str:
    spec = built[name]
    if name == selected:
        return "selected: the fastest variant that passes the gate"
    if not spec["eval"]["passed"]:
        return "rejected: fails the gate (" + "; ".join(spec["eval"]["reasons"]) + ")"
    return f"passes the gate but is slower than {selected} on the realistic mix"


def _check_sample(texts: list[str], n: int) -> list[str]:
    """Evenly spaced texts, so the sample spans short and long inputs rather than the first few rows."""
    step = max(1, len(texts) // n)
    return [texts[i] for i in range(0, len(texts), step)][:n]


def _machine() -> dict[str, Any]:
    import nncf
    import onnxruntime
    import openvino
    import torch

    from padless.machine import simd_flags, usable_cores
    from padless.runtime.torch import cpu_has_native_bf16

    return {"usable_cores": usable_cores(), "cpu_flags": simd_flags(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__, "nncf": nncf.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16()}
