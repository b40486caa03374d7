"""Run the padless CLI in-process, as a user's shell would, and capture its exit code and output."""

from __future__ import annotations

import sys

import pytest

from padless.cli.main import main


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["padless", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
