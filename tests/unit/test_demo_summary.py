"""scripts/demo_summary.py: the agreement line `make demo` prints counts the right rows."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo_summary.py"


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_agreement_counts_only_scored_rows(demo: ModuleType) -> None:
    rows = [
        {"id": "0", "human_label": "positive", "label": "positive", "error": ""},
        {"id": "1", "human_label": "negative", "label": "positive", "error": ""},
        {"id": "2", "human_label": "negative", "label": "", "error": "empty_input: nothing left"},
        {"id": "3", "human_label": "negative", "label": "negative", "error": ""},
    ]
    summary = demo.summarise(rows)
    assert (summary.rows, summary.scored, summary.agree) == (4, 3, 2)
    assert summary.errors == [("2", "empty_input: nothing left")]
    lines = summary.lines()
    assert lines[1] == "labels agree with human_label on 2 of 3 scored rows (66.7%)"
    assert lines[2] == "row 2 is an error on purpose: empty_input: nothing left"


def test_missing_columns_is_a_clear_error(demo: ModuleType, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scored.csv"
    path.write_text("id,text\n0,hi\n", encoding="utf-8")
    assert demo.main([str(path)]) == 2
    assert "no rows with 'label' and 'human_label'" in capsys.readouterr().err
