"""Folders the previous mmfuse wrote (spec schema 2: five flat balance settings in ``train``)
meet this one: ``--resume`` refuses in one line that says why, and a bench folder still
names its models' bundles. The old layout is written here by hand from this version's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmfuse.cli import main
from mmfuse.errors import CheckpointError, ConfigError
from mmfuse.experiment import DataSpec, ExperimentSpec, ModelSpec
from mmfuse.experiment.specs import SPEC_SCHEMA
from mmfuse.training.config import TrainConfig

#: the flat names of schema 2 and their BalanceOptions fields
FLAT = {"balance_weight": "weight", "ogm_alpha": "alpha", "gblend_every": "every", "gblend_floor": "floor",
        "pareto_gamma": "gamma"}


def schema_2(spec: ExperimentSpec) -> dict[str, Any]:
    """``spec`` as mmfuse with spec schema 2 wrote it."""
    doc = {k: v for k, v in spec.to_json().items() if k != "format"}
    train = dict(doc["train"])
    balance = train.pop("balance")
    train["balance"] = balance["method"]
    train.update({old: balance[new] for old, new in FLAT.items()})
    return {**doc, "schema": 2, "train": train}


SPEC = ExperimentSpec(data=DataSpec("synthetic", options={"n": 100, "task": "redundancy"}),
                      model=ModelSpec(fusion="late", hidden_dim=8), train=TrainConfig(epochs=1, progress=False))


def test_a_schema_2_spec_reads_as_the_same_settings() -> None:
    old = schema_2(SPEC)
    assert old["train"]["balance"] is None and old["train"]["pareto_gamma"] == 1.5  # the old layout
    assert ExperimentSpec.from_json(old) == SPEC
    on = SPEC.replace(train=SPEC.train.replace(balance={"method": "aux", "weight": 2}))
    assert ExperimentSpec.from_json(schema_2(on)).train.balance == on.train.balance
    with pytest.raises(ConfigError, match=r"experiment spec: expected a record of format "
                                          r"mmfuse.experiment_spec/2 or mmfuse.experiment_spec/3, got version 1"):
        ExperimentSpec.from_json({**old, "schema": 1})


def test_resume_of_a_folder_of_the_previous_version_says_so_in_one_line(tmp_path: Path, monkeypatch,
                                                                         capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps({**schema_2(SPEC), "train_key": "0123456789abcdef"}))
    monkeypatch.setattr("mmfuse.experiment.run.train_one", lambda *a, **k: pytest.fail("it trained"))
    assert main(["train", "--dataset", "synthetic", "--fusion", "late", "hidden_dim=8", "epochs=1", "data.n=100",
                 "--out", str(out), "--resume"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"was written by another version of mmfuse (spec version 2, this one writes {SPEC_SCHEMA})" in err
    assert "differ" not in err and "edited" not in err  # not the messages of changed settings


def test_a_bench_folder_of_the_previous_version_still_names_its_bundles(tmp_path: Path) -> None:
    from mmfuse.runs.predictor import resolve_run

    bench = tmp_path / "bench"
    bundle = bench / "models" / "oldkey"
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    run = {"status": "ok", "dataset": SPEC.data.display, "label": "late", "train_key": "oldkey",
           "spec": schema_2(SPEC), "schema": 2}
    doc = {"meta": {"verdicts": {SPEC.data.display: {"recommendation": {"pick": "late"}}}}, "runs": [run]}
    (bench / "results.json").write_text(json.dumps(doc))
    assert resolve_run(bench) == bundle  # results.json without a version key: as mmfuse wrote it before
    assert resolve_run(bench, "late") == bundle
    (bench / "results.json").write_text(json.dumps({**doc, "format": "mmfuse.bench_results/2"}))
    with pytest.raises(CheckpointError, match="got version 2, written by a newer mmfuse"):
        resolve_run(bench)
