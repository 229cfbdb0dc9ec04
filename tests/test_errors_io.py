"""The error hierarchy, the one atomic write, and the CLI's handling of both kinds of failure."""

from __future__ import annotations

import os
import stat

import pytest

import mmfuse
from mmfuse import cli
from mmfuse.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FusionError,
    MmfuseError,
    check_fraction,
)
from mmfuse.io import atomic_write


def test_every_error_kind_is_an_mmfuse_error_and_a_value_error() -> None:
    for kind in (FusionError, DataError, ConfigError, CheckpointError):
        assert issubclass(kind, MmfuseError) and issubclass(kind, ValueError)
    from mmfuse.bench.config import BenchConfigError
    from mmfuse.encoders import EncoderError
    from mmfuse.training.config import TrainConfigError

    assert issubclass(BenchConfigError, ConfigError)
    assert issubclass(TrainConfigError, ConfigError)
    assert issubclass(EncoderError, FusionError)
    assert mmfuse.MmfuseError is MmfuseError and mmfuse.DataError is DataError


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1", True, None, float("nan")])
def test_check_fraction_refuses_values_outside_zero_one(value) -> None:
    with pytest.raises(ConfigError, match=r"rate: expected a float in \[0, 1\), got"):
        check_fraction("rate", value)


def test_check_fraction_bounds() -> None:
    assert check_fraction("rate", 0) == 0.0
    assert check_fraction("rate", 0.999) == 0.999
    with pytest.raises(DataError, match=r"\(0, 1\)"):
        check_fraction("rate", 0.0, error=DataError, low_open=True)


def test_atomic_write_text_bytes_and_writer(tmp_path) -> None:
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert atomic_write(p, lambda f: f.write(b"abc")) == 3
    assert p.read_bytes() == b"abc"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path) -> None:
    p = tmp_path / "a.txt"
    atomic_write(p, "old")

    def writer(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(p, writer)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_respects_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a", "x")
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "b", "x")
        assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_cli_prints_mmfuse_errors_and_lets_bugs_raise(monkeypatch, capsys) -> None:
    def bad_input(args):
        raise ConfigError("epochs: expected a positive int, got 0")

    def bug(args):
        raise KeyError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=bad_input)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "mmfuse list: error: epochs: expected a positive int, got 0"
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=bug)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["list"])
