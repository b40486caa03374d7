"""What every ``padless optimize`` run does whatever the task: make the folder, build the candidates, time them,
select, and assemble the manifest's shared fields.

Contract: :func:`build_all` returns ``name → spec`` for the candidates that apply (and why the others were skipped);
:func:`time_all` adds each spec's ``throughput`` and ``speedup_vs_torch_fp32`` (realistic and long mixes, candidates
interleaved round by round, medians); :func:`finish` records each candidate's check outputs, selects **the fastest
on the realistic mix whose ``eval`` passed**, and returns the fields both tasks' manifests share. The gate itself
(``spec["eval"]``, with ``passed`` and ``reasons``) is the task's: :mod:`~padless.optimize.gate` for classifiers,
:mod:`~padless.optimize.fidelity` for embeddings.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from padless.engine import Engine
from padless.errors import ConfigError
from padless.loader import manifest as mf
from padless.loader.export import model_digest
from padless.optimize import candidates as cands
from padless.optimize import openvino as ov_candidates
from padless.optimize.candidates import REFERENCE
from padless.optimize.config import OptimizeConfig

Say = Callable[[str], None]


def prepare_output(src: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Copy the model folder ``src`` into ``out_dir`` (refusing a non-empty one unless ``overwrite``)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    cands.copy_model_folder(src, out_dir)


def build_all(out_dir: Path, cfg: OptimizeConfig, ref: Engine, cal_texts: list[str], cal_ref: np.ndarray | None,
              validation: ov_candidates.Validation | None, say: Say) -> tuple[dict[str, dict[str, Any]],
                                                                              dict[str, str]]:
    """Build every candidate (the reference first unless listed) and every student's variants: (name → spec,
    name → why it was skipped)."""
    built: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in cfg.candidates if REFERENCE in cfg.candidates else (REFERENCE, *cfg.candidates):
        started = time.perf_counter()
        said: list[str] = []

        def note(line: str, said: list[str] = said) -> None:
            said.append(line)
            say(line)

        say(f"building {name}")
        spec = cands.build(name, out_dir, ref, cal_texts, cal_ref, cfg.gate, cfg.accuracy_control, validation, note)
        if spec is not None:
            built[name] = {**spec, "build_s": round(time.perf_counter() - started, 1)}
        else:
            skipped[name] = next((s.removeprefix(f"{name}: skipped, ") for s in said if s.startswith(f"{name}: ")),
                                 "does not apply here")
    for folder in cfg.students:
        started = time.perf_counter()
        for name, spec in cands.build_student(Path(folder), out_dir, ref, cal_texts, cfg.accuracy_control,
                                              say).items():
            built[name] = {**spec, "build_s": round(time.perf_counter() - started, 1)}
    return built, skipped


def _seconds(engine: Engine, texts: list[str]) -> float:
    started = time.perf_counter()
    engine.outputs(texts)
    return time.perf_counter() - started


def time_all(runners: dict[str, Engine], built: dict[str, dict[str, Any]], ref: Engine, cfg: OptimizeConfig,
             say: Say) -> dict[str, list[str]]:
    """Time every candidate on the bench workloads, round by round (``built[name]["throughput"]`` and
    ``["speedup_vs_torch_fp32"]``); returns the workloads."""
    from padless.bench.workload import make_workload

    workloads = {mix: make_workload(ref.encoder.tokenizer, mix, n, seed=0)
                 for mix, n in (("realistic", cfg.bench_texts), ("long", cfg.long_texts)) if n}
    times: dict[str, dict[str, list[float]]] = {name: {mix: [] for mix in workloads} for name in runners}
    for engine in runners.values():  # warm every runtime (and compile every shape class) before timing any of them
        engine.runtime.warmup()
        engine.outputs(workloads["realistic"][:32])
    for r in range(cfg.rounds):
        say(f"timing round {r + 1}/{cfg.rounds}")
        for name, engine in runners.items():
            for mix, texts in workloads.items():
                times[name][mix].append(_seconds(engine, texts))
    for name in runners:
        built[name]["throughput"] = {mix: round(len(workloads[mix]) / statistics.median(ts), 1)
                                     for mix, ts in times[name].items()}
    ref_rate = built[REFERENCE]["throughput"]["realistic"]
    for spec in built.values():
        spec["speedup_vs_torch_fp32"] = round(spec["throughput"]["realistic"] / ref_rate, 2)
    return workloads


def finish(model: str, out_dir: Path, cfg: OptimizeConfig, built: dict[str, dict[str, Any]],
           runners: dict[str, Engine], workloads: dict[str, list[str]], check_from: list[str],
           skipped: dict[str, str]) -> dict[str, Any]:
    """Select, record each candidate's load-time check outputs (on ``cfg.check_rows`` of ``check_from``) and return
    the manifest fields every task shares."""
    selected = select(built)
    check_texts = check_sample(check_from, cfg.check_rows)
    embed = next(iter(runners.values())).task == "embed"
    for name, engine in runners.items():
        built[name]["check"] = {"logits": engine.outputs(check_texts)[0].tolist(),
                                "tolerance": check_tolerance(built[name], embed=embed)}
    candidates = [{"name": name, **spec, "files": mf.option_files(spec["options"], out_dir),
                   "status": status(name, selected, built)} for name, spec in built.items()]
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_model": model,
        "reference": {"name": REFERENCE, "digest": model_digest(out_dir), "files": reference_files(out_dir)},
        "workloads": {mix: len(t) for mix, t in workloads.items()},
        "rounds": cfg.rounds,
        "machine": machine(),
        "selected": selected,
        "candidates": candidates,
        "skipped": skipped,
        # The reference's own check outputs are in its candidate entry, like every variant's.
        "check": {"texts": check_texts},
    }


def reference_files(out_dir: Path) -> dict[str, str]:
    """SHA-256 of the reference's config, tokenizer and weights (and a sentence-transformers folder's module
    configs, such as ``1_Pooling/config.json``), keyed relative to ``out_dir``."""
    files = [p for p in sorted(out_dir.iterdir())
             if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".json"))]
    files += [p for d in cands.module_dirs(out_dir) for p in sorted((out_dir / d).rglob("*"))
              if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")]
    return {str(p.relative_to(out_dir)): mf.sha256_file(p) for p in files if p.name != mf.MANIFEST}


def check_tolerance(spec: dict[str, Any], *, embed: bool = False) -> float:
    """How far a load-time re-check may drift from the recorded outputs. fp32 reruns agree to rounding; int8 depends
    on the batch's activation range, so other batch limits may move a logit by a few hundredths (a component of a
    unit vector by less); with a fallback, a row near the margin may also take the other path, which moves it by its
    int8 error (≤ the margin on the calibration sample)."""
    if spec["precision"] == "float32":
        return 1e-3
    if embed:
        return 0.05
    return max(0.1, float(spec["options"].get("fallback_margin", 0.0)))


def select(built: dict[str, dict[str, Any]]) -> str:
    passing = [n for n, s in built.items() if s["eval"]["passed"]]
    return max(passing, key=lambda n: built[n]["throughput"]["realistic"])


def status(name: str, selected: str, built: dict[str, dict[str, Any]]) -> str:
    spec = built[name]
    if name == selected:
        return "selected: the fastest variant that passes the gate"
    if not spec["eval"]["passed"]:
        return "rejected: fails the gate (" + "; ".join(spec["eval"]["reasons"]) + ")"
    return f"passes the gate but is slower than {selected} on the realistic mix"


def check_sample(texts: list[str], n: int) -> list[str]:
    """Evenly spaced texts, so the sample spans short and long inputs rather than the first few rows."""
    step = max(1, len(texts) // n)
    return [texts[i] for i in range(0, len(texts), step)][:n]


def machine() -> dict[str, Any]:
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
