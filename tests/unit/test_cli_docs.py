"""docs/cli.md is generated from the CLI by scripts/gen_cli_docs.py: it must be current, and must cover every command
and every option (checked against the typer app directly, not through the generator's own walk)."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer.main

from padless.cli.main import app
from padless.config import BatchConfig

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    """scripts/ is not a package: load the generator from its path."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> str:
    return _generator().render()


def _command_paths(cmd: Any, ctx: Any) -> list[str]:
    paths = [ctx.command_path]
    for name in cmd.list_commands(ctx) if hasattr(cmd, "list_commands") else []:
        sub = cmd.get_command(ctx, name)
        paths += _command_paths(sub, sub.context_class(sub, info_name=name, parent=ctx))
    return paths


def _section(doc: str, command_path: str) -> str:
    """The text under a command's heading, up to the next heading."""
    start = next(i for i, line in enumerate(doc.splitlines()) if line.lstrip("#").strip() == command_path)
    lines = doc.splitlines()[start + 1:]
    return "\n".join(lines[: next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))])


def test_docs_cli_md_is_current(rendered: str) -> None:
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    if current != rendered:
        diff = difflib.unified_diff(current.splitlines(), rendered.splitlines(), "docs/cli.md", "generated",
                                    lineterm="", n=1)
        pytest.fail("docs/cli.md is stale (the CLI changed, or the file was edited by hand): run `make docs`\n"
                    + "\n".join(list(diff)[:30]), pytrace=False)


def test_every_command_has_a_heading(rendered: str) -> None:
    root = typer.main.get_command(app)
    paths = _command_paths(root, root.context_class(root, info_name="padless"))[1:]
    headings = [line.lstrip("#").strip() for line in rendered.splitlines() if line.startswith("## ")
                or line.startswith("### ")]
    assert {"padless classify", "padless serve", "padless bench serve", "padless models build"} <= set(paths)
    assert headings == paths  # each command once, in the order `padless --help` lists them


def test_every_classify_option_is_in_its_table(rendered: str) -> None:
    root: Any = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="padless")
    classify = root.get_command(ctx, "classify")
    rows = [line for line in _section(rendered, "padless classify").splitlines() if line.startswith("| `")]
    help_option = classify.get_help_option(ctx)
    params = [p for p in classify.get_params(ctx) if p is not help_option]
    assert len(rows) == len(params)
    for param, row in zip(params, rows, strict=True):
        for name in [*param.opts, *param.secondary_opts]:
            assert f"`{name}`" in row.split(" | ")[0], (name, row)
        if param.envvar:
            assert f"`{param.envvar}`" in row, (param.envvar, row)
    row = next(r for r in rows if r.startswith("| `--max-batch-tokens` |"))
    assert row.split(" | ")[1:4] == ["int", "`PADLESS_MAX_BATCH_TOKENS`", f"`{BatchConfig.max_batch_tokens}`"]
