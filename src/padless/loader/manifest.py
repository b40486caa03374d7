"""What a ``padless optimize`` folder records, and the checks made every time it is loaded.

``DIR/manifest.json`` names the selected variant (a backend plus its options, with files and folders relative to
``DIR``), every candidate's measurements and verdict, the gate thresholds, and a small check sample: texts, and each
candidate's own outputs on them (the torch fp32 reference's among them; stored as ``logits``, which for an embedding
model's folder, ``"task": "embed"``, are its vectors) with a tolerance, as recorded when the folder was built.
Loading the folder with any engine (:func:`selected_runtime` then :func:`recheck`) refuses to start, with one line, if
a file's SHA-256 differs from the manifest (a corrupted or tampered file: an OpenVINO variant's ``.bin`` as well as
its ``.xml``) or if the variant's outputs on the sample no longer match (a mismatched runtime or library).

:mod:`padless.optimize.search` writes the folder; the format lives here, with loading, so that the engine and the
server can read and check a folder without importing the optimizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ModelError

FORMAT = "padless-optimize/1"
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_optimized(model_dir: str | Path) -> bool:
    return (Path(model_dir) / MANIFEST).is_file()


def write(model_dir: Path, manifest: dict[str, Any]) -> Path:
    path = model_dir / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **manifest}, indent=2) + "\n")
    tmp.replace(path)
    return path


def read(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {path}: {type(err).__name__}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path} is not a {FORMAT} manifest")
    return data


def candidate(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for c in manifest.get("candidates", []):
        if c.get("name") == name:
            return dict(c)
    raise ModelError(f"the manifest has no variant named {name!r}")


def selected_runtime(model_dir: str | Path,
                     variant: str | None = None) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """Variant name, backend and runtime options of the selected (or named) variant, and the manifest, after
    checking the hashes of its files and of the reference files."""
    root = Path(model_dir)
    manifest = read(root)
    name = variant or manifest.get("selected")
    if not name:
        raise ModelError(f"{root / MANIFEST} selected no variant (none passed the gate); pick one with --backend")
    chosen = candidate(manifest, name)
    files: dict[str, str] = {**manifest.get("reference", {}).get("files", {}), **chosen.get("files", {})}
    for rel, digest in files.items():
        path = root / rel
        if not path.is_file():
            raise ModelError(f"{path} is missing; the optimized model folder is incomplete")
        if sha256_file(path) != digest:
            raise ModelError(f"{path} does not match its SHA-256 in the manifest (corrupted or modified); refusing "
                             "to load it")
    return str(name), str(chosen["backend"]), absolute_files(chosen.get("options", {}), root), manifest


# Runtime options that name a file or folder inside the optimize folder.
FILE_OPTIONS = ("onnx_file", "fallback_file", "model_dir", "static_ranges_file", "ir_file")


def option_files(options: dict[str, Any], root: Path) -> dict[str, str]:
    """SHA-256 of every file a candidate's options name (each file of a ``model_dir``; an OpenVINO ``ir_file``'s
    ``.xml`` and the ``.bin`` of its weights beside it), keyed relative to root."""
    files: dict[str, str] = {}
    for key in FILE_OPTIONS:
        if key not in options:
            continue
        path = root / options[key]
        named = sorted(path.iterdir()) if path.is_dir() else [path]
        if key == "ir_file":
            named.append(path.with_suffix(".bin"))
        for f in named:
            if f.is_file():
                files[str(f.relative_to(root))] = sha256_file(f)
            elif key == "ir_file":
                raise ModelError(f"{f} is missing: an OpenVINO IR needs its .xml and its .bin")
    return files


def absolute_files(options: dict[str, Any], root: Path) -> dict[str, Any]:
    """``options`` with every file option (stored relative to the folder) made absolute under ``root``."""
    return {k: str(root / v) if k in FILE_OPTIONS else v for k, v in options.items()}


def recheck(manifest: dict[str, Any], name: str, logits_of: Any) -> float:
    """Run the stored check sample through variant ``name``; raise if its logits drifted from those recorded when
    the folder was built. Returns the max |Δ logit|."""
    texts = (manifest.get("check") or {}).get("texts") or []
    recorded = candidate(manifest, name).get("check") or {}
    if not texts or "logits" not in recorded:
        raise ModelError("the manifest has no check sample for this variant; rebuild the folder with padless optimize")
    expected = np.asarray(recorded["logits"], dtype=np.float32)
    got = np.asarray(logits_of(texts), dtype=np.float32)
    tolerance = float(recorded.get("tolerance", 1e-3))
    if got.shape != expected.shape or np.isnan(got).any():
        raise ModelError("the selected variant cannot score the manifest's check sample; refusing to start")
    diff = float(np.abs(got - expected).max())
    if diff > tolerance:
        raise ModelError(f"the selected variant's outputs differ from those recorded in the manifest by {diff:.3g} "
                         f"(tolerance {tolerance:g}): mismatched runtime or corrupted files; refusing to start")
    return diff
