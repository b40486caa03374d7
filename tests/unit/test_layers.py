"""The layers hold: core ← jobs ← faces and tools. No module imports a layer above its own, not even lazily inside a
function (which an import-time check would miss), and model loading and the runtimes import nothing above them within
the core either."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "padless"
# Every top-level module and package of padless, by layer, bottom up ("__init__" is the package's own face).
LAYERS = {
    "core": ("__init__", "config", "datasets", "default_model", "embedder", "engine", "errors", "evaluate", "loader",
             "machine", "planner", "pooling", "postprocess", "runtime", "tasks", "tokenize", "train", "tuned"),
    "jobs": ("batcher", "commit", "faults", "fileio", "job", "sinks"),
    "faces": ("cli", "ray", "server"),
    "tools": ("bench", "compress", "optimize", "tune"),
}
# Faces and tools share the top floor: the CLI runs the tools, and the benchmarks start the servers they measure.
RANK = {"core": 0, "jobs": 1, "faces": 2, "tools": 2}
LAYER_OF = {unit: layer for layer, units in LAYERS.items() for unit in units}
ABOVE_CORE = tuple(unit for unit, layer in LAYER_OF.items() if RANK[layer] > RANK["core"])
# Within the core, what each low package may not import either: the core's floors above it.
ABOVE = {
    "loader": ("runtime", "engine", "embedder", "tasks", "default_model", *ABOVE_CORE),
    "runtime": ("engine", "embedder", "tasks", "default_model", *ABOVE_CORE),
}


@cache
def _units() -> frozenset[str]:
    """padless's top-level modules and packages as they are on disk."""
    return frozenset({"__init__"}) | {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in SRC.iterdir() if p.is_dir() and any(p.glob("*.py"))}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(SRC)}: a relative import would escape this check"
            assert node.module
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from padless import engine`
    return names


def _padless_units(path: Path) -> set[str]:
    """The padless modules and packages a file imports (a name from the package itself, like ``padless.__version__``,
    is its ``__init__``)."""
    units = _units()
    return {parts[1] if len(parts) > 1 and parts[1] in units else "__init__"
            for parts in (name.split(".") for name in _imports(path)) if parts[0] == "padless"}


def test_every_module_has_exactly_one_layer() -> None:
    """A module added, renamed or removed must be placed here, so the layering below checks the real packages."""
    listed = [unit for units in LAYERS.values() for unit in units]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    assert set(listed) == _units(), {"not placed": sorted(_units() - set(listed)),
                                     "not in padless": sorted(set(listed) - _units())}


@pytest.mark.parametrize("unit", sorted(LAYER_OF))
def test_a_module_imports_no_layer_above_its_own(unit: str) -> None:
    files = [SRC / "__init__.py"] if unit == "__init__" else sorted(
        (SRC / unit).rglob("*.py") if (SRC / unit).is_dir() else [SRC / f"{unit}.py"])
    assert files
    rank = RANK[LAYER_OF[unit]]
    upward = {f"{f.relative_to(SRC)} -> padless.{other} ({LAYER_OF[other]})" for f in files
              for other in _padless_units(f) if RANK[LAYER_OF[other]] > rank}
    assert not upward, sorted(upward)


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_low_package_imports_nothing_above_it(package: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files
    assert set(ABOVE[package]) <= set(LAYER_OF)
    upward = {f"{f.relative_to(SRC)} -> padless.{other}" for f in files for other in _padless_units(f)
              if other in ABOVE[package]}
    assert not upward, sorted(upward)


def test_only_the_ray_face_and_its_users_import_ray() -> None:
    """Ray is one more face: the core, the jobs and the HTTP server never import it or padless.ray (the CLI's
    --ray branches and `padless bench ray` do, lazily), so padless runs without the optional extra."""
    allowed = ("ray/", "cli/ray_", "bench/ray")
    offenders = {f"{f.relative_to(SRC)} -> {name}" for f in sorted(SRC.rglob("*.py"))
                 if not str(f.relative_to(SRC)).startswith(allowed)
                 for name in _imports(f) if name == "ray" or name.startswith(("ray.", "padless.ray"))}
    assert not offenders, sorted(offenders)
