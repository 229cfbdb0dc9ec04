"""The `mmfuse` command's own subcommand (`list`) and its wiring; train, bench and data
are tested beside their libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mmfuse
from mmfuse.cli import main
from mmfuse.fusions import fusion_options


def test_list_prints_every_registered_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == mmfuse.list_fusions()


def test_list_options_shows_each_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    assert "    gate = 'feature'" in out
    for name in mmfuse.list_fusions():
        for opt in fusion_options(name):
            assert f"    {opt}" in out, f"{name}: option {opt} not listed"


def test_console_script_runs_and_rejects_unknown_commands() -> None:
    ok = subprocess.run([sys.executable, "-m", "mmfuse.cli", "list"], capture_output=True, text=True)
    assert ok.returncode == 0 and "gated" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "mmfuse.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
