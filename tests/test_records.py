"""One version key for every record (``"format": "mmfuse.<record>/<n>"``, mmfuse.records), and
the files a user keeps, written in the layout of the previous mmfuse, still loading: a run
bundle whose model config says ``"version": 1`` and whose preprocessor's options say
``"schema_version": 1`` predicts exactly what it predicted before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mmfuse
from mmfuse.cli import main
from mmfuse.errors import CheckpointError, ConfigError
from mmfuse.records import RecordVersionError, check_format, stamp


# ---------------------------------------------------------------- the helper
def test_stamp_and_check_format() -> None:
    doc = stamp("thing", 2, {"a": 1, "format": "stale"})
    assert doc == {"format": "mmfuse.thing/2", "a": 1} and list(doc)[0] == "format"
    assert check_format(doc, "thing", 2) == 2
    assert check_format({"schema": 1, "a": 1}, "thing", (1, 2), legacy="schema") == 1  # the key written before
    with pytest.raises(RecordVersionError, match=r"f.json: expected a record of format mmfuse.thing/2, got version "
                                                 r"3, written by a newer mmfuse: upgrade mmfuse") as info:
        check_format(stamp("thing", 3, {}), "thing", 2, where="f.json")
    assert (info.value.record, info.value.expected, info.value.found) == ("thing", (2,), 3)
    with pytest.raises(RecordVersionError, match="got version 1, written by an earlier mmfuse"):
        check_format({"schema": 1}, "thing", 2, legacy="schema")
    with pytest.raises(RecordVersionError, match=r"got format 'mmfuse.other/2' \(another kind of file\)"):
        check_format(stamp("other", 2, {}), "thing", 2)
    with pytest.raises(RecordVersionError, match="got no 'format' key"):
        check_format({"schema": 2}, "thing", 2)  # a legacy key is read only where the record had one
    with pytest.raises(CheckpointError, match="got list"):
        check_format([], "thing", 2, error=CheckpointError)
    assert issubclass(RecordVersionError, ConfigError)


def test_every_record_writes_the_one_version_key() -> None:
    from mmfuse.data import ModalitySpec
    from mmfuse.experiment import DataSpec, ExperimentSpec, ModelSpec
    from mmfuse.models import build_model

    spec = ExperimentSpec(data=DataSpec("synthetic"), model=ModelSpec())
    assert spec.to_json()["format"] == "mmfuse.experiment_spec/3"
    model = build_model({"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("vector", (2,))}, 2, "late",
                        hidden_dim=4)
    assert model.config["format"] == "mmfuse.model_config/1" and "version" not in model.config
    for doc in (spec.to_json(), model.config):  # one key, none of the earlier ones
        assert not {"schema", "schema_version", "version"} & set(doc)


# ---------------------------------------------------------------- a bundle of the previous mmfuse
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A table of 80 rows (numbers, a category), a bundle trained on it, and new rows."""
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame({"x1": rng.normal(size=n).round(3), "x2": rng.normal(size=n).round(3),
                          "colour": rng.choice(["red", "green", "blue"], n)})
    frame["y"] = ((frame["x1"] + (frame["colour"] == "red")) > 0.5).astype(int)
    folder = tmp_path_factory.mktemp("old-bundle")
    frame.to_csv(folder / "train.csv", index=False)
    frame.drop(columns=["y"]).iloc[:20].to_csv(folder / "new.csv", index=False)
    out = folder / "run"
    assert main(["train", "--data", str(folder / "train.csv"), "--target", "y", "--fusion", "late",
                 "--out", str(out), "epochs=1", "hidden_dim=8", "threads=1"]) == 0
    return {"run": out, "new": folder / "new.csv"}


def _as_written_before(run: Path) -> None:
    """Rewrite a bundle's files into the previous mmfuse's layout, in place."""
    path = run / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    assert config.pop("format") == "mmfuse.model_config/1"
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**config, "version": 1})})
    prep = json.loads((run / "preprocessor.json").read_text())
    assert "schema_version" not in prep["options"]
    prep["options"]["schema_version"] = 1
    (run / "preprocessor.json").write_text(json.dumps(prep))


def test_a_bundle_in_the_previous_layout_loads_and_predicts_the_same(bundle: dict, tmp_path: Path) -> None:
    import shutil

    before = mmfuse.load_run(bundle["run"]).predict_proba(pd.read_csv(bundle["new"]))
    old = tmp_path / "old"
    shutil.copytree(bundle["run"], old)
    _as_written_before(old)
    after = mmfuse.load_run(old).predict_proba(pd.read_csv(bundle["new"]))
    pd.testing.assert_frame_equal(after, before)
    from mmfuse.training import load_checkpoint

    assert load_checkpoint(old / "model.safetensors").config["format"] == "mmfuse.model_config/1"  # rebuilt anew


def test_a_model_config_of_another_version_is_refused_with_both_versions(bundle: dict, tmp_path: Path) -> None:
    import shutil

    from mmfuse.training import load_checkpoint

    other = tmp_path / "other"
    shutil.copytree(bundle["run"], other)
    path = other / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    config = {**json.loads(metadata["config"]), "format": "mmfuse.model_config/2"}
    save_file(load_file(str(path)), str(path), metadata={**metadata, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"expected a record of format mmfuse.model_config/1, got version 2, "
                                              r"written by a newer mmfuse"):
        load_checkpoint(path)


def test_records_nested_in_a_versioned_document_carry_none_and_read_the_old_key() -> None:
    from mmfuse.bench.recommend import Recommendation
    from mmfuse.encoders.pretrained import EncoderSpec

    spec = EncoderSpec("hf:some-model", finetune=2)
    assert "version" not in spec.to_json()
    assert EncoderSpec.from_json({**spec.to_json(), "version": 1}) == spec  # a bundle's manifest of before
    with pytest.raises(ConfigError, match="expected version 1 or none, got 2"):
        EncoderSpec.from_json({**spec.to_json(), "version": 2})
    rec = Recommendation(best="a", tied=("b",), pick="a", decisive=False, means={"a": 0.8}, p_values={"b": 0.3},
                         test="t", sentence="s")
    assert "schema_version" not in rec.to_json()
    assert Recommendation.from_json({**rec.to_json(), "schema_version": 1}) == rec


# ---------------------------------------------------------------- bench files of the previous mmfuse
def test_a_saved_model_whose_facts_carry_no_version_is_reused(tmp_path: Path) -> None:
    """``facts.json`` (a bench's saved model) had no version key before: it still reads, and the
    model is re-measured, not trained again."""
    import warnings

    from mmfuse.bench.config import BenchConfig
    from mmfuse.bench.grid import build_grid
    from mmfuse.bench.run import run_one
    from mmfuse.training import TrainConfig

    config = BenchConfig(datasets=["synthetic"], synthetic_tasks=["redundancy"], seeds=1, modality_dropout=0.0,
                         dataset_options={"synthetic": {"n": 120}}, unimodal=False, diagnose=False,
                         train=TrainConfig(epochs=1, progress=False, threads=1))
    (run,) = build_grid(config, fusions=["late"], modalities_of=lambda d: ["x0", "x1"], models_dir=str(tmp_path))
    first = run_one(run)
    facts = tmp_path / run.train_key / "facts.json"
    doc = json.loads(facts.read_text())
    assert doc.pop("format") == "mmfuse.training_facts/1"
    facts.write_text(json.dumps(doc))  # as the previous mmfuse wrote it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "the saved model cannot be used" would be a warning
        again = run_one(run)
    assert first.training.trained_now and not again.training.trained_now
    assert again.measurement.metrics == first.measurement.metrics
    facts.write_text(json.dumps({**doc, "format": "mmfuse.training_facts/2"}))  # a newer mmfuse's: trained again
    with pytest.warns(UserWarning, match="written by a newer mmfuse"):
        assert run_one(run).training.trained_now
