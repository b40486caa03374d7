"""What ``padless optimize`` builds and how it measures: one frozen value for both tasks (classify and embed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from padless.errors import ConfigError
from padless.optimize import openvino as ov_candidates
from padless.optimize.candidates import CANDIDATES
from padless.optimize.fidelity import FidelityConfig
from padless.optimize.gate import GateConfig

TASKS = ("auto", "classify", "embed")


@dataclass(frozen=True, kw_only=True)
class OptimizeConfig:
    """What ``padless optimize`` builds and how it measures. See ``padless optimize --help``."""

    task: str = "auto"  # auto: embed for a sentence-transformers folder or an encoder without a head, else classify
    eval_set: str | None = None  # classify: None means vader-movies-test for the default model; embed: built-in mix
    text_column: str = "text"  # the text column of an eval file (embed)
    calibration: str | None = None  # text for calibration and the sensitivity sweep; None: see calibration_texts
    calibration_rows: int = 400
    check_rows: int = 16  # texts whose outputs the manifest records for the load-time re-check
    bench_texts: int = 400  # realistic-mix texts per timing round
    long_texts: int = 48  # long-mix texts per timing round
    rounds: int = 3
    candidates: tuple[str, ...] = CANDIDATES
    gate: GateConfig = field(default_factory=GateConfig)  # classify: the accuracy gate
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)  # embed: the fidelity gate and its sizes
    threads: int = 0
    students: tuple[str, ...] = ()  # folders from padless prune / distill: each joins as fp32 and int8 candidates
    # openvino-int8-accuracy: its validation rows (held out of the gate's rows) and NNCF's bounds
    accuracy_control: ov_candidates.AccuracyControl = field(default_factory=ov_candidates.AccuracyControl)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown:
            raise ConfigError(f"unknown candidates {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
        if min(self.calibration_rows, self.check_rows, self.bench_texts, self.rounds) < 1 or self.long_texts < 0:
            raise ConfigError("calibration_rows, check_rows, bench_texts and rounds must be positive")
        self.gate.validate()
        self.fidelity.validate()
        self.accuracy_control.validate()
        for folder in self.students:
            if not (Path(folder) / "config.json").is_file() and not (Path(folder) / "modules.json").is_file():
                raise ConfigError(f"--students {folder}: not a model folder (no config.json)")
