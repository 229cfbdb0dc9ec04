"""A user table's settings: every option through every route (a flag where there is one,
``data.<option>=value``, a YAML ``data:`` section) reaches the data of ``mmfuse train``
and ``mmfuse bench`` alike, in one grammar; a flag not given overrides nothing; the
precedence is YAML, then key=value, then flags; an unknown option is an error that lists
the valid ones. Nothing trains: ``train`` stops where its spec is built, ``bench`` where
its config is."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _cli_capture import bench_config, train_spec

from mmfuse.cli import main
from mmfuse.errors import ConfigError, DataError
from mmfuse.experiment.config import experiment_from_settings, table_option_names

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """60 rows: numbers, a category, a short text, a fixed ``part`` split, a group ``pid``,
    a column that leaks the target, and the binary target ``y``."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "x1": rng.normal(size=n).round(3), "x2": rng.integers(0, 100, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "note": [" ".join(rng.choice(["good", "bad", "fine", "thin", "soft"], 4)) for _ in range(n)],
        "part": ["train"] * 36 + ["val"] * 12 + ["test"] * 12, "pid": np.repeat(np.arange(12), 5),
    })
    frame["y"] = (frame["x1"] > 0).astype(int)
    frame["leak"] = frame["y"] * 2.0
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    return path


def _every_option(table: Path, split: Any) -> dict[str, Any]:
    """A value other than the default for every setting of a table but its path (as YAML holds it)."""
    return {
        "target": "y", "modalities": {"nums": ["x1", "x2", "colour"], "words": ["note"]},
        "kinds": {"colour": "categorical", "note": "text"}, "exclude": ["leak"], "task": "binary", "split": split,
        "val_fraction": 0.2, "test_fraction": 0.25, "base_dir": str(table.parent), "format": "csv",
        "image_size": [16, 16], "image_mode": "L", "audio_sample_rate": 8000, "audio_seconds": 0.5, "n_mels": 20,
        "n_fft": 256, "hop": 80, "max_tokens": 16, "min_count": 1, "max_vocab": 100, "max_categories": 20,
        "int_categories": 5, "max_classes": 10, "on_bad_file": "error", "allow_outside": True, "name": "my table",
    }


#: the options that have a flag, and how the flag writes them
def _flags(options: dict[str, Any]) -> list[str]:
    split = options["split"]
    return ["--target", options["target"],
            *[a for m, cols in options["modalities"].items() for a in ("--modality", f"{m}={','.join(cols)}")],
            *[a for c, k in options["kinds"].items() for a in ("--kind", f"{c}={k}")],
            *[a for c in options["exclude"] for a in ("--exclude", c)], "--task", options["task"],
            "--split", split if isinstance(split, str) else f"group:{split['group']}",
            "--base-dir", options["base_dir"]]


FLAGGED = ("target", "modalities", "kinds", "exclude", "task", "split", "base_dir")


def _kv(key: str, value: Any) -> str:
    if key == "split" and isinstance(value, dict):  # the flag's spelling works in key=value too
        return f"data.split=group:{value['group']}"
    return f"data.{key}={json.dumps(value)}"  # JSON is YAML's flow style


def _argv(route: str, table: Path, options: dict[str, Any], tmp_path: Path) -> list[str]:
    """The command line that gives ``options`` (and the table's path) by ``route``."""
    if route == "flag":  # a flag for every option that has one, key=value for the rest
        return ["--data", str(table), *_flags(options), *[_kv(k, v) for k, v in options.items() if k not in FLAGGED]]
    if route == "setting":
        return [_kv("path", str(table)), *[_kv(k, v) for k, v in options.items()]]
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(table), **options}}))
    return ["--config", str(config)]


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test of bad input: nothing may train."""
    monkeypatch.setattr("mmfuse.bench.run_bench", lambda *a, **k: pytest.fail("the bench ran"))
    monkeypatch.setattr("mmfuse.experiment.command.prepare_run_folder", lambda *a, **k: pytest.fail("train ran"))


_train_spec, _bench = train_spec, bench_config


def _data_options(command: str, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options of the data ``command`` would load: the spec's (train), the grid's (bench)."""
    if command == "train":
        spec = _train_spec(argv, tmp_path, monkeypatch)
        assert spec.data.name == "table"
        return dict(spec.data.options)
    from mmfuse.bench.grid import dataset_entries

    config = _bench(argv, monkeypatch)
    assert config.datasets == ["table"]
    (data,) = dataset_entries(config)
    assert data.name == "table"
    return dict(data.options)


def _fingerprint(table: Path) -> str:
    from mmfuse.data import table_options

    return table_options(table, target="y")["fingerprint"]


@pytest.mark.parametrize("split", ["part", {"group": "pid"}], ids=["column", "group"])
@pytest.mark.parametrize("route", ["flag", "setting", "yaml"])
@pytest.mark.parametrize("command", ["train", "bench"])
def test_every_table_option_through_every_route_reaches_the_data(
        command: str, route: str, split: Any, table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = _every_option(table, split)
    assert {"path", *options} == set(table_option_names()), "a table setting this test does not set"
    got = _data_options(command, _argv(route, table, options, tmp_path), tmp_path, monkeypatch)
    assert got["path"] == str(table.resolve())
    for key, value in options.items():
        assert got[key] == value, key
    # the fingerprint is there whichever route named the file, so a changed file is other data
    assert got["fingerprint"] == _fingerprint(table)


@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_changed_file_is_other_data_when_only_settings_name_it(
        command: str, table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [f"data.path={table}", "data.target=y"]
    before = _data_options(command, argv, tmp_path, monkeypatch)["fingerprint"]
    table.write_text(table.read_text().replace("red", "pink"))
    assert _data_options(command, argv, tmp_path, monkeypatch)["fingerprint"] != before


@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_flag_not_given_leaves_the_yaml_value(command: str, table: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug: ``--data`` wrote every table option, so the YAML's split (a fixed test split)
    became a random one with the split column a feature, and its kinds were dropped."""
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"data": {"split": "part", "task": "binary", "exclude": ["leak"],
                                               "kinds": {"colour": "categorical"}, "modalities": {"nums": ["x1"]},
                                               "max_tokens": 8}}))
    got = _data_options(command, ["--config", str(config), "--data", str(table), "--target", "y"],
                        tmp_path, monkeypatch)
    assert got["split"] == "part" and got["task"] == "binary" and got["exclude"] == ["leak"]
    assert got["kinds"] == {"colour": "categorical"} and got["modalities"] == {"nums": ["x1"]}
    assert got["max_tokens"] == 8


def test_bench_keeps_a_yaml_dataset_options_table_split(table: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"datasets": ["table"], "dataset_options": {"table": {"split": "part"}}}))
    got = _data_options("bench", ["--config", str(config), "--data", str(table), "--target", "y"],
                        tmp_path, monkeypatch)
    assert got["split"] == "part" and got["target"] == "y"


@pytest.mark.parametrize("command", ["train", "bench"])
def test_precedence_yaml_then_key_value_then_flags(command: str, table: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(table), "target": "y", "split": "part",
                                               "exclude": ["leak"], "max_tokens": 8, "seed": 1}}))
    yaml_only = _data_options(command, ["--config", str(config)], tmp_path, monkeypatch)
    assert yaml_only["split"] == "part" and yaml_only["max_tokens"] == 8
    both = ["--config", str(config), "data.split=group:pid", "data.max_tokens=12"]
    got = _data_options(command, both, tmp_path, monkeypatch)
    assert got["split"] == {"group": "pid"} and got["max_tokens"] == 12 and got["exclude"] == ["leak"]
    got = _data_options(command, [*both, "--split", "part", "--exclude", "pid"], tmp_path, monkeypatch)
    assert got["split"] == "part" and got["max_tokens"] == 12 and got["exclude"] == ["pid"]


def test_data_seed_is_the_split_seed_in_both_commands(table: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [f"data.path={table}", "data.target=y", "data.seed=3"]
    assert _train_spec(argv, tmp_path, monkeypatch).data.seed == 3
    assert _bench(argv, monkeypatch).data_seed == 3


@pytest.mark.parametrize("command", ["train", "bench"])
def test_the_table_settings_reach_the_loaded_data(command: str, table: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed split is the one trained on, its column no feature; the modalities and the
    excluded column are the ones given."""
    from mmfuse.experiment import DataSpec, load_data

    argv = ["--data", str(table), "--target", "y", "--split", "part", "--modality", "nums=x1,x2,colour",
            "--modality", "words=note", "--kind", "note=text", "--exclude", "leak", "--exclude", "pid"]
    options = _data_options(command, argv, tmp_path, monkeypatch)
    splits = load_data(DataSpec(name="table", options=options))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 12, 12)
    assert set(splits.train.specs) == {"nums", "words"} and splits.train.specs["words"].kind == "text"


def test_the_readme_yaml_data_section_is_valid_for_train_and_bench(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    tree = yaml.safe_load(block)
    (tmp_path / tree["data"]["path"]).write_text("a,b\n1,2\n")  # only fingerprinted: no column is read
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "table.yaml"
    config.write_text(block)
    for command in ("train", "bench"):
        got = _data_options(command, ["--config", str(config)], tmp_path, monkeypatch)
        for key, value in tree["data"].items():
            if key != "path":
                assert got[key] == (value if key != "split" or not str(value).startswith("group:")
                                    else {"group": value[6:]}), key


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("command", ["train", "bench"])
def test_an_unknown_table_option_is_an_error_naming_the_valid_ones(
        command: str, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None) -> None:
    for argv in (["--data", str(table), "--target", "y", "data.kind={colour: categorical}"],
                 [f"data.path={table}", "data.target=y", "data.splits=part"]):
        assert main([command, *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "unknown setting 'data." in err and "data.kinds" in err and "data.split" in err, err
    with pytest.raises(ConfigError, match=r"unknown setting 'data.kind'.*data\.kinds"):
        experiment_from_settings({"data.path": str(table), "data.target": "y", "data.kind": {}})
    from mmfuse.bench import load_config

    with pytest.raises(ConfigError, match=r"unknown setting 'data.kind'.*data\.kinds"):
        load_config(settings={"data": {"path": str(table), "target": "y", "kind": {}}})


@pytest.mark.parametrize(("argv", "match"), [
    (["--kind", "colour"], r"data.kinds \(--kind\): expected COL=KIND, got 'colour'"),
    (["--kind", "colour=categorical", "--kind", "colour=text"], r"--kind.*'colour' given twice"),
    (["--modality", "nums"], r"--modality.*expected NAME=COL\[,COL...\]"),
    (["--split", "group:"], r"--split.*group:COL"),
    (["--kind", "colour=picture"], r"kinds: column 'colour': expected one of \[.*'categorical'"),
    (["data.split={group: pid, by: x}"], r"data.split.*expected a column of train/val/test, group:COL"),
    (["data.image_size=[0, 3]"], r"image_size: expected \(h, w\) positive ints"),
    (["data.exclude=[1]"], r"data.exclude \(--exclude\): expected a column name or a list of them"),
])
@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_malformed_table_option_names_the_flag_and_the_forms(
        command: str, argv: list[str], match: str, table: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], no_run: None) -> None:
    assert main([command, "--data", str(table), "--target", "y", *argv, "--out", str(tmp_path / "o")]) == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("command", ["train", "bench"])
def test_table_settings_without_a_table_or_with_a_dataset_are_errors(
        command: str, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None) -> None:
    out = ["--out", str(tmp_path / "o")]
    assert main([command, "--dataset", "synthetic", "--data", str(table), "--target", "y", *out]) == 2
    assert re.search(r"give one of them|not both", capsys.readouterr().err)
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(table), "target": "y"}}))
    assert main([command, "--config", str(config), "--dataset", "synthetic", *out]) == 2
    assert re.search(r"give one of them|not both", capsys.readouterr().err)
    assert main([command, "--dataset", "synthetic", "--kind", "colour=categorical", *out]) == 2
    assert re.search(r"data.kinds.*(--data PATH|your own table)", capsys.readouterr().err)
    assert main([command, "--data", str(table), *out]) == 2  # no target
    assert "expected data.target (--target)" in capsys.readouterr().err
    assert main([command, "--data", str(tmp_path / "nope.csv"), "--target", "y", *out]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_bench_data_flag_replaces_the_yaml_datasets(table: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "b.yaml"
    config.write_text("datasets: [mfeat]\nseeds: 2\n")
    got = _bench(["--config", str(config), "--data", str(table), "--target", "y"], monkeypatch)
    assert got.datasets == ["table"] and got.seeds == 2
    config.write_text(yaml.safe_dump({"datasets": ["mfeat"], "data": {"path": str(table), "target": "y"}}))
    from mmfuse.bench import BenchConfigError, load_config

    with pytest.raises(BenchConfigError, match="not both"):
        load_config(config)


# ------------------------------------------------------------------ the one grammar, data inspect too


def test_data_inspect_reads_the_flags_by_the_same_grammar(table: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}

    class Report:
        def render(self) -> str:
            return "report"

    def fake_describe(path: str, **options: Any) -> Report:
        seen.update(path=path, **options)
        return Report()

    monkeypatch.setattr("mmfuse.data.describe_table", fake_describe, raising=False)
    assert main(["data", "inspect", str(table), "--target", "y", "--target", "x2", "--split", "group:pid",
                 "--kind", "colour=categorical", "--modality", "nums=x1,colour", "--exclude", "leak",
                 "--task", "multilabel", "--base-dir", str(table.parent)]) == 0
    assert seen == {"path": str(table), "target": ["y", "x2"], "split": {"group": "pid"},
                    "kinds": {"colour": "categorical"}, "modalities": {"nums": ["x1", "colour"]},
                    "exclude": ["leak"], "task": "multilabel", "base_dir": str(table.parent)}
    assert main(["data", "inspect", str(table), "--target", "y,x2"]) == 0 and seen["target"] == ["y", "x2"]
    capsys.readouterr()
    assert main(["data", "inspect", str(table), "--target", "y", "--kind", "colour"]) == 2
    assert "data.kinds (--kind): expected COL=KIND, got 'colour'" in capsys.readouterr().err
    assert main(["data", "inspect", str(table), "--kind", "colour=text"]) == 2
    assert "expected data.target (--target)" in capsys.readouterr().err


def test_one_grammar_gives_one_value_whatever_the_spelling(table: Path) -> None:
    from mmfuse.experiment.config import table_settings

    assert table_settings({"split": "group:pid"}) == table_settings({"split": {"group": "pid"}})
    assert table_settings({"kinds": ["a=text", "b=numeric"]}) == table_settings({"kinds": {"a": "text", "b": "numeric"}})
    assert table_settings({"modalities": ["m=a,b"]}) == table_settings({"modalities": {"m": "a,b"}}) \
        == table_settings({"modalities": {"m": ["a", "b"]}})
    assert table_settings({"target": ["a", "b"]}) == table_settings({"target": "a,b"})
    assert table_settings({"exclude": "a"}) == table_settings({"exclude": ["a"]})
    assert table_settings({"image_size": 16}) == table_settings({"image_size": [16, 16]})
    assert table_settings({"kinds": None, "split": None}) == {"kinds": {}, "split": None}
    with pytest.raises(DataError, match="no such table file"):
        experiment_from_settings({"data.path": str(table.parent / "nope.csv"), "data.target": "y"})
