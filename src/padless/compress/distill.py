"""Knowledge distillation: a smaller student, made from the teacher's own layers, trained on its soft labels.

Contract: :func:`distill` reads a teacher folder and texts (some with labels, most without), writes the student as
an ordinary Hugging Face folder, and returns its card (also ``padless_distill.json``). Steps:

1. The teacher scores every text once (padless's own engine on ONNX Runtime fp32, within 1e-4 of torch and about
   twice as fast here); the logits are kept in the state folder so a resumed run does not score again.
2. The student is the teacher with only ``layers`` of its encoder layers, evenly spaced and ending at the last one
   (for 3 of 6: layers 1, 3, 5), as DistilBERT initialises from its teacher — it starts from the teacher's own
   weights, not from scratch.
3. Training (:mod:`padless.compress.trainer`): temperature-scaled KL to the teacher on every text, plus
   cross-entropy on rows with a label (``alpha`` weighs the two). ``hard_labels_only`` trains the same student on
   the labelled rows alone, without the teacher: the baseline distillation has to beat.

Deterministic with a seed; checkpoints every ``checkpoint_every`` steps under ``out_dir/.distill-state`` and
``resume=True`` continues a killed run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padless.compress import structure
from padless.compress.trainer import TrainSpec, train
from padless.errors import ConfigError

STATE = ".distill-state"


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """The student and how it is trained. See ``padless distill --help``."""

    layers: int = 3
    hard_labels_only: bool = False
    training: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=2.0, learning_rate=1e-4))

    def validate(self) -> None:
        if self.layers < 1:
            raise ConfigError("--layers must be at least 1")
        self.training.validate()


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Evenly spaced teacher layers, ending at the last: 3 of 6 -> [1, 3, 5]; 2 of 6 -> [2, 5]."""
    if not 1 <= layers <= teacher_layers:
        raise ConfigError(f"a student of {layers} layers cannot come from a {teacher_layers}-layer teacher")
    return [int(np.ceil((i + 1) * teacher_layers / layers)) - 1 for i in range(layers)]


def distill(teacher: str | Path, out_dir: str | Path, texts: Sequence[str], labels: Sequence[int] | None,
            cfg: DistillConfig, *, sources: Sequence[str] = (), resume: bool = False, stop_after: int | None = None,
            on_step: Callable[[int, int, float], None] | None = None,
            say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Distil ``teacher`` into ``out_dir`` (see the module docstring); returns the card.

    ``labels``: one label id per text, ``-1`` where a text has none (or None: no labels at all); ``sources``
    describes where the texts came from, for the card.
    """
    from transformers import AutoTokenizer

    from padless.engine import Classifier
    from padless.loader import load_model

    cfg.validate()
    out = Path(out_dir)
    state = out / STATE
    if out.exists() and any(p.name != STATE for p in out.iterdir()):
        raise ConfigError(f"{out} already holds a model; choose another --output")
    if state.exists() and not resume:
        raise ConfigError(f"{out} holds an unfinished run; pass --resume to continue it (or remove {state})")
    if labels is not None and len(labels) != len(texts):
        raise ConfigError("labels and texts differ in length")
    started = time.perf_counter()
    state.mkdir(parents=True, exist_ok=True)
    run = {"teacher": str(teacher), "texts": len(texts), "config": asdict(cfg)}
    stamp = state / "run.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != json.loads(json.dumps(run)):
        raise ConfigError(f"{state} belongs to another run (other teacher, data or options); remove it to start over")
    stamp.write_text(json.dumps(run, indent=2) + "\n")

    texts = list(texts)
    gold = list(labels) if labels is not None else None
    soft = None
    if cfg.hard_labels_only:
        if gold is None or not any(y >= 0 for y in gold):
            raise ConfigError("--hard-labels-only needs labelled data")
        keep = [i for i, y in enumerate(gold) if y >= 0]
        texts, gold = [texts[i] for i in keep], [gold[i] for i in keep]
    else:
        cached = state / "teacher_logits.npy"
        if cached.is_file():
            soft = np.load(cached)
        else:
            say(f"teacher scores {len(texts)} texts")
            soft = Classifier(str(teacher), backend="onnx", max_length=cfg.training.max_length).logits(texts)[0]
            if np.isnan(soft).any():
                raise ConfigError("the teacher could not score some texts (empty?); clean the data first")
            np.save(cached, soft)

    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    student = load_model(teacher, attn_implementation="sdpa")
    n_teacher = len(structure.layers_of(student))
    kept = student_layers(n_teacher, cfg.layers)
    structure.keep_layers(student, kept)
    say(f"student: layers {kept} of the teacher's {n_teacher}; training on {len(texts)} texts")
    steps, total = train(student, tokenizer, texts, spec=cfg.training, teacher_logits=soft, labels=gold,
                         state_dir=state, resume=resume, stop_after=stop_after, on_step=on_step)
    card = {"kind": "distilled", "teacher": str(teacher), "teacher_layers": n_teacher, "layers_kept": kept,
            "texts": len(texts), "data": list(sources), "labelled_texts": sum(1 for y in gold or [] if y >= 0),
            "hard_labels_only": cfg.hard_labels_only, "config": asdict(cfg), "steps": steps,
            "seconds_this_run": round(time.perf_counter() - started, 1)}
    if steps < total:
        return {**card, "finished": False}
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "padless_distill.json").write_text(json.dumps({**card, "finished": True}, indent=2) + "\n")
    shutil.rmtree(state)
    return {**card, "finished": True}
