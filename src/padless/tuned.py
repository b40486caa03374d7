"""The settings ``padless tune`` measured on a machine, as one file beside the model (``padless-tuned.json``) or
wherever ``-o`` put it, and how every face applies them.

The file holds two sections, each a part of the engine-settings value (:class:`~padless.config.EngineSpec`, and for
serving :class:`~padless.config.QueueConfig`'s ``max_wait_ms``) with the backend it was measured on:

* ``offline``: what ``classify``, ``embed``, ``bench`` and their ``--ray`` jobs run;
* ``serving``: what ``padless serve`` (local or ``--ray``) runs, tuned for the first ``--p99-ms`` bound.

A face applies a section only to the settings the user left at their defaults (a flag or a ``PADLESS_*`` variable
always wins), only when the backend matches, and only on the machine it was measured on: anywhere else the
defaults run, with a warning, since thread and batch settings do not carry across CPUs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from padless import loader
from padless.config import EngineSpec, QueueConfig
from padless.errors import ConfigError
from padless.machine import cpu_name, simd_flags, usable_cores

TUNED_NAME = "padless-tuned.json"
FORMAT = 1
SECTIONS = ("offline", "serving")
# What each section may set: the engine fields tune searches, and for serving the batcher's wait.
ENGINE_FIELDS = ("max_batch_tokens", "max_batch_size", "threads", "streams")
QUEUE_FIELDS = ("max_wait_ms",)


@cache
def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from ``nvidia-smi`` (no CUDA context, no torch import), or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def fingerprint() -> dict[str, Any]:
    """What makes a tuned figure this machine's: CPU model, SIMD flags, usable cores and GPU."""
    return {"cpu": cpu_name(), "cpu_flags": simd_flags(), "usable_cores": usable_cores(), "gpu": gpu_name()}


def machine_difference(recorded: dict[str, Any], here: dict[str, Any] | None = None) -> str | None:
    """Why ``recorded`` is not this machine (the first differing part, both values), or None when it is."""
    here = fingerprint() if here is None else here
    for key in ("cpu", "usable_cores", "gpu", "cpu_flags"):
        if recorded.get(key) != here.get(key):
            if key == "cpu_flags":
                theirs, ours = set(recorded.get(key) or ()), set(here.get(key) or ())
                return (f"CPU flags differ (only there: {', '.join(sorted(theirs - ours)) or '-'}; "
                        f"only here: {', '.join(sorted(ours - theirs)) or '-'})")
            return f"{key} {recorded.get(key)!r} there, {here.get(key)!r} here"
    return None


def beside_model(model: str, task: str = "auto") -> Path:
    """Where the file for ``model`` lives by default: in its folder (``default`` is the default classifier's, or
    with ``task`` embed the default embedding model's). A Hub id is its downloaded folder."""
    if model == loader.DEFAULT_NAME:
        folder = loader.base_encoder_path() if task == "embed" else loader.default_model_dir()
    elif Path(model).is_dir():
        folder = Path(model)
    else:
        folder = loader.resolve(model)
    return folder / TUNED_NAME


def write(path: Path, document: dict[str, Any]) -> None:
    """Write the file whole (a temporary file renamed over it), so a reader never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **document}, indent=2, default=str) + "\n")
    tmp.replace(path)


def read(path: Path) -> dict[str, Any]:
    """The file's document, checked; a :class:`ConfigError` naming the file if it is not one padless wrote."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read tuned settings {path}: {type(err).__name__}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("machine"), dict):
        raise ConfigError(f"{path} is not a padless tuned-settings file (format {FORMAT})")
    for name in SECTIONS:
        section = document.get(name)
        if section is None:
            continue
        settings = section.get("settings") if isinstance(section, dict) else None
        if not isinstance(settings, dict) or set(settings) - set(ENGINE_FIELDS) - set(QUEUE_FIELDS) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings.values()):
            raise ConfigError(f"{path}: its {name} settings are not padless tuned settings")
    return document


@dataclass(frozen=True)
class Applied:
    """The settings a face runs after the file: the engine value, the queue (serving), and the one line the face
    prints first (``note``, the file used and what it set) or its warning (``warning``, why it was not used)."""

    spec: EngineSpec
    queue: QueueConfig | None = None
    note: str | None = None
    warning: str | None = None

    def announce(self, echo: Any) -> None:
        """Say what was applied, or why not, through ``echo`` (a face prints it before anything else)."""
        if self.note:
            echo(self.note)
        if self.warning:
            echo(f"warning: {self.warning}")


def apply(spec: EngineSpec, *, section: str, explicit: Collection[str], tuned: str | None = None,
          queue: QueueConfig | None = None, path: Path | None = None) -> Applied:
    """``spec`` (and ``queue``) with a tuned section applied to every setting not in ``explicit`` (the names the
    user gave by flag or environment variable). ``tuned``: the file a user named (it must exist); otherwise
    ``path`` or the file beside the model, if there is one. Refused with a warning, returning the inputs unchanged,
    when the file was measured on another machine or for another backend."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}")
    if tuned is not None:
        path = Path(tuned)
        if not path.is_file():
            raise ConfigError(f"--tuned {tuned}: no such file")
    elif path is None:
        try:
            path = beside_model(spec.model.model, spec.model.task)
        except Exception:  # noqa: BLE001 - a model that cannot be found is the engine's error to report, not ours
            return Applied(spec, queue)
    if not path.is_file():
        return Applied(spec, queue)
    document = read(path)
    part = document.get(section)
    if part is None:
        return Applied(spec, queue, warning=f"{path} has no {section} settings; running with defaults")
    difference = machine_difference(document["machine"])
    if difference is not None:
        return Applied(spec, queue, warning=f"{path} was tuned on another machine ({difference}); running with "
                                            "defaults")
    backends = {part.get("backend"), part.get("resolved_backend")}
    if spec.model.backend not in backends:
        return Applied(spec, queue, warning=f"{path} was tuned for backend {part.get('backend')}, not "
                                            f"{spec.model.backend}; running with defaults")
    settings = {k: v for k, v in part["settings"].items() if k not in explicit}
    engine = {k: int(v) for k, v in settings.items() if k in ENGINE_FIELDS}
    waits: dict[str, Any] = {k: float(v) for k, v in settings.items() if k in QUEUE_FIELDS}
    new_spec = spec.replace(**engine)
    new_queue = dataclasses.replace(queue, **waits) if queue is not None and waits else queue
    shown = {**engine, **(waits if queue is not None else {})}
    if not shown:
        return Applied(spec, queue, note=f"tuned settings in {path} all overridden by flags or environment")
    what = ", ".join(f"{k}={v:g}" for k, v in shown.items())
    return Applied(new_spec, new_queue, note=f"using tuned settings from {path} ({section}, measured "
                                             f"{document.get('date', '?')}): {what}")
