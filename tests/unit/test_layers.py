"""The low floors stay low: model loading and the runtimes import nothing above them, not even lazily inside a
function (which an import-time check would miss)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "padless"
# What each low package may not import: the layers above it.
ABOVE = {
    "loader": ("padless.runtime", "padless.engine", "padless.optimize", "padless.compress", "padless.default_model",
               "padless.job", "padless.batcher", "padless.cli", "padless.server", "padless.bench", "padless.models"),
    "runtime": ("padless.engine", "padless.optimize", "padless.compress", "padless.default_model", "padless.job",
                "padless.batcher", "padless.cli", "padless.server", "padless.bench", "padless.models"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from padless import engine`
    return names


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_low_package_imports_nothing_above_it(package: str) -> None:
    files = sorted((SRC / package).glob("*.py"))
    assert files
    upward = {f"{f.relative_to(SRC)} -> {name}" for f in files for name in _imports(f)
              if any(name == above or name.startswith(above + ".") for above in ABOVE[package])}
    assert not upward, sorted(upward)


def test_only_the_ray_face_and_its_users_import_ray() -> None:
    """Ray is one more face: the core, the jobs and the HTTP server never import it or padless.ray (the CLI's
    --ray branches and `padless bench ray` do, lazily), so padless runs without the optional extra."""
    allowed = ("ray/", "cli/ray_", "bench/ray")
    offenders = {f"{f.relative_to(SRC)} -> {name}" for f in sorted(SRC.rglob("*.py"))
                 if not str(f.relative_to(SRC)).startswith(allowed)
                 for name in _imports(f) if name == "ray" or name.startswith(("ray.", "padless.ray"))}
    assert not offenders, sorted(offenders)
