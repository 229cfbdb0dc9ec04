"""Use the model: a run bundle predicts on a table that shares only its column names.

Real files built from ../shared/data: the reviews table split into a training CSV and a
new-rows CSV without the targets (some texts missing, a division never seen, an extra
column, the columns shuffled); an MNIST/FSDD path table with files missing at predict
time; a regression and a multilabel target. Each new-data rule is checked on its own,
and the parity of `predict` with what training measured on its own test rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mmfuse
from mmfuse.cli import main
from mmfuse.data import from_table
from mmfuse.errors import CheckpointError, ConfigError, DataError

REVIEWS = "clothing_reviews/WomensClothingE-CommerceReviews.parquet.brotli"
TARGETS = ["Recommended IND", "Rating"]
FAST = ["epochs=2", "hidden_dim=16", "threads=1", "batch_size=64"]


# ---------------------------------------------------------------- fixtures (real data, small)
@pytest.fixture(scope="module")
def reviews(real_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A training CSV of 1,200 reviews and a new-rows CSV of 200 others, without the targets."""
    frame = pd.read_parquet(real_root / REVIEWS)
    folder = tmp_path_factory.mktemp("reviews")
    train = frame.iloc[:1200].copy()
    new = frame.iloc[1200:1400].drop(columns=TARGETS).copy()
    new["row_id"] = np.arange(1200, 1400)
    new.loc[new.index[:5], "Review Text"] = None          # text missing (Title kept)
    new.loc[new.index[5:8], ["Review Text", "Title"]] = None
    new.loc[new.index[8], "Division Name"] = "Never Seen"  # an unseen category
    new["note"] = "extra"                                  # a column the model does not know
    new = new[list(reversed(new.columns))]                 # another column order
    train.to_csv(folder / "train.csv", index=False)
    new.to_csv(folder / "new.csv", index=False)
    return {"folder": folder, "train": folder / "train.csv", "new": folder / "new.csv", "frame": frame}


@pytest.fixture(scope="module")
def review_run(reviews: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "gated"
    code = main(["train", "--data", str(reviews["train"]), "--target", "Recommended IND", "--exclude", "Rating",
                 "--fusion", "gated", "--out", str(out), *FAST])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def run(review_run: Path) -> mmfuse.Run:
    return mmfuse.load_run(review_run)


# ---------------------------------------------------------------- the bundle
def test_bundle_is_self_describing(review_run: Path) -> None:
    manifest = json.loads((review_run / "bundle.json").read_text())
    assert manifest["format"] == "mmfuse.run/1"
    assert manifest["task"] == "binary" and manifest["class_names"] == ["0", "1"]
    assert manifest["versions"]["mmfuse"] == mmfuse.__version__ and manifest["versions"]["torch"] == torch.__version__
    assert manifest["modalities"] == ["Review Text", "Title", "tabular"]
    assert manifest["preprocessor"] == "preprocessor.json" and (review_run / "preprocessor.json").is_file()
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert abs(sum(manifest["class_prior"]) - 1.0) < 1e-9
    prep = json.loads((review_run / "preprocessor.json").read_text())
    assert prep["schema"]["kinds"]["Division Name"] == "categorical"
    assert prep["target"]["names"] == ["0", "1"]


def test_predict_parity_with_training_test_split(reviews: dict, review_run: Path, run: mmfuse.Run) -> None:
    """predict on the run's own test rows reproduces the metrics training reported and the model's own outputs."""
    splits = from_table(reviews["train"], target="Recommended IND", exclude=["Rating"])
    test_rows = pd.read_csv(reviews["train"]).iloc[splits.info["indices"]["test"]]
    reported = json.loads((review_run / "bundle.json").read_text())["metrics"]["test"]
    got = run.evaluate(test_rows)
    for k in ("accuracy", "macro_f1", "auroc"):
        assert abs(got[k] - reported[k]) <= 1e-6, k
    assert got["n"] == reported["n"] == len(splits.test)
    with torch.inference_mode():
        own = torch.softmax(run.model(splits.test.inputs, splits.test.masks), dim=-1).numpy()
    proba = run.predict_proba(test_rows.drop(columns=TARGETS)).to_numpy()
    np.testing.assert_allclose(proba, own, rtol=0, atol=1e-6)
    # the transformed inputs are the training split's tensors, bit for bit
    t = run.transform(test_rows)
    for m in splits.modalities:
        assert torch.equal(t.inputs[m], splits.test.inputs[m]), m
        assert torch.equal(t.masks[m], splits.test.masks[m]), m


def test_cli_predict_new_rows_rules(reviews: dict, review_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(review_run), "--data", str(reviews["new"]), "--out", str(out), "--id", "row_id"]) == 0
    err = capsys.readouterr().err
    pred = pd.read_csv(out)
    new = pd.read_csv(reviews["new"])
    assert list(pred.columns) == ["row_id", "prediction", "proba_0", "proba_1"]
    assert pred["row_id"].tolist() == new["row_id"].tolist()  # one row per input row, in order
    np.testing.assert_allclose(pred[["proba_0", "proba_1"]].sum(axis=1), 1.0, atol=1e-6)
    assert set(pred["prediction"]) <= {0, 1}
    assert "ignored columns the model does not use: note, row_id" in err
    assert "Division Name: category not seen in training (unknown code): 1 rows" in err
    assert "metrics" not in err  # no target column: no metrics


def test_missing_text_is_masked_not_zeroed(reviews: dict, run: mmfuse.Run) -> None:
    new = pd.read_csv(reviews["new"])
    t = run.transform(new)
    text_missing = torch.from_numpy(new["Review Text"].isna().to_numpy().copy())
    assert text_missing.sum() >= 8
    assert not t.masks["Review Text"][text_missing].any() and t.masks["Review Text"][~text_missing].all()
    title_missing = torch.from_numpy(new["Title"].isna().to_numpy().copy())
    assert not t.masks["Title"][title_missing].any() and t.masks["Title"][~title_missing].all()
    assert t.usable.all()  # tabular is there for every row
    # a masked modality does not influence the prediction: change the hidden text, same output
    row = new.iloc[[0]].copy()
    p1 = run.predict_proba(row).to_numpy()
    t_row = run.transform(row)
    t_row.inputs["Review Text"].random_(2, 50)
    np.testing.assert_allclose(run.outputs(t_row), run.outputs(run.transform(row)), atol=1e-6)
    assert np.isfinite(p1).all()


def test_rows_are_predicted_independently(reviews: dict, run: mmfuse.Run) -> None:
    """The fitted statistics are used, never the batch's: a row alone gets what it gets in a batch."""
    new = pd.read_csv(reviews["new"])
    batch = run.predict_proba(new).to_numpy()
    for i in (0, 9, 57, 199):
        np.testing.assert_allclose(run.predict_proba(new.iloc[[i]]).to_numpy()[0], batch[i], atol=1e-6)


def test_predicts_without_the_training_table(reviews: dict, review_run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "bundle"
    shutil.copytree(review_run, moved)
    hidden = reviews["train"].with_name("hidden.csv")
    reviews["train"].rename(hidden)
    try:
        again = mmfuse.load_run(moved)
        assert len(again.predict(reviews["new"])) == 200
    finally:
        hidden.rename(reviews["train"])


def test_absent_columns_mask_their_modality(reviews: dict, run: mmfuse.Run) -> None:
    new = pd.read_csv(reviews["new"]).drop(columns=["Review Text", "Title"])
    t = run.transform(new)
    assert sorted(t.absent_columns) == ["Review Text", "Title"]
    assert not t.masks["Review Text"].any() and not t.masks["Title"].any()
    assert len(run.predict(new)) == 200


def test_wrong_value_kind_names_column_and_row(reviews: dict, run: mmfuse.Run, review_run: Path,
                                              tmp_path: Path, capsys) -> None:
    new = pd.read_csv(reviews["new"])
    new["Age"] = new["Age"].astype(object)
    new.loc[4, "Age"] = "forty"
    with pytest.raises(DataError, match=r"column 'Age' \(modality 'tabular', numeric\) row 4: expected a number, got 'forty'"):
        run.predict(new)
    bad = tmp_path / "bad.csv"
    new.to_csv(bad, index=False)
    assert main(["predict", str(review_run), "--data", str(bad)]) == 2
    assert "row 4: expected a number, got 'forty'" in capsys.readouterr().err


def test_row_with_every_modality_missing(reviews: dict, run: mmfuse.Run, review_run: Path, tmp_path: Path,
                                         capsys) -> None:
    new = pd.read_csv(reviews["new"]).iloc[:6].copy()
    features = ["Title", "Review Text", "Age", "Positive Feedback Count", "Division Name", "Department Name",
                "Class Name", "Clothing ID"]
    new.loc[2, features] = None
    pred = run.predict(new)
    assert pred.loc[2].isna().all() and pred.drop(index=2).notna().all().all()
    path = tmp_path / "empty_row.csv"
    new.to_csv(path, index=False)
    assert main(["predict", str(review_run), "--data", str(path), "--out", str(tmp_path / "p.csv")]) == 0
    assert "not predicted (every modality missing): 1" in capsys.readouterr().err
    assert main(["predict", str(review_run), "--data", str(path), "--strict"]) == 2
    assert "row 2: every modality is missing" in capsys.readouterr().err


def test_target_column_present_is_not_input_and_metrics_printed(reviews: dict, review_run: Path, capsys) -> None:
    train = reviews["train"]
    assert main(["predict", str(review_run), "--data", str(train)]) == 0
    captured = capsys.readouterr()
    assert "metrics (the target column is present; not used as input): accuracy" in captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0] == "prediction,proba_0,proba_1" and len(lines) == 1201
    # the target is not an input: changing it changes nothing
    frame = pd.read_csv(train).iloc[:50]
    run = mmfuse.load_run(review_run)
    a = run.predict_proba(frame).to_numpy()
    b = run.predict_proba(frame.assign(**{"Recommended IND": 1 - frame["Recommended IND"]})).to_numpy()
    np.testing.assert_array_equal(a, b)


def test_embed_and_explain(reviews: dict, run: mmfuse.Run) -> None:
    new = pd.read_csv(reviews["new"]).iloc[:20]
    emb = run.embed(new)
    assert emb.shape == (20, run.model.fusion.output_dim) and np.isfinite(emb).all()
    ex = run.explain(new)
    shap = ex[[f"shapley_{m}" for m in run.modalities]].to_numpy()
    # efficiency: the values add up to the output minus the prior
    np.testing.assert_allclose(shap.sum(axis=1), ex["value"] - ex["base_value"], atol=1e-5)
    missing_text = new["Review Text"].isna().to_numpy()
    assert (ex.loc[missing_text, "shapley_Review Text"] == 0).all()
    assert {f"weight_{m}" for m in run.modalities} <= set(ex.columns)  # gated exposes modality weights
    np.testing.assert_allclose(ex[[f"weight_{m}" for m in run.modalities]].sum(axis=1), 1.0, atol=1e-5)


def test_explain_matches_the_bench_shapley_formula(reviews: dict, run: mmfuse.Run) -> None:
    """One row's values equal those of mmfuse.bench.attribution.shapley_values on the same game."""
    from mmfuse.bench.attribution import shapley_values

    row = pd.read_csv(reviews["new"]).iloc[[10]]
    ex = run.explain(row).iloc[0]
    t = run.transform(row)
    mods = run.modalities
    k = int(np.argmax(run.predict_proba(row).to_numpy()[0]))
    prior = run.bundle.manifest["class_prior"][k]

    def value(coalition: frozenset[str]) -> float:
        if not coalition:
            return prior
        masks = {m: (t.masks[m] if m in coalition else torch.zeros_like(t.masks[m])) for m in mods}
        with torch.inference_mode():
            return float(torch.softmax(run.model(t.inputs, masks), -1)[0, k])

    ref = shapley_values(value, mods)
    for m in mods:
        assert abs(ex[f"shapley_{m}"] - ref.values[m]) < 1e-6


def test_load_checks_format_and_files(review_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(review_run, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**manifest, "format": "mmfuse.run/2",
                                                  "versions": {"mmfuse": "9.0"}}))
    with pytest.raises(CheckpointError, match=r"bundle format mmfuse.run/2 was written by mmfuse 9.0; .* upgrade mmfuse"):
        mmfuse.load_run(copy)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    (copy / "preprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="the bundle's preprocessing preprocessor.json is missing"):
        mmfuse.load_run(copy)
    (copy / "bundle.json").unlink()
    with pytest.raises(CheckpointError, match="not a run bundle: no bundle.json"):
        mmfuse.load_run(copy)
    with pytest.raises(CheckpointError, match="no such run or bench folder"):
        mmfuse.load_run(tmp_path / "nowhere")


def test_saved_preprocessor_is_fitted_after_loading(reviews: dict, run: mmfuse.Run, tmp_path: Path) -> None:
    """Loaded without the training data, the preprocessing transforms exactly as the fitted one did."""
    from mmfuse.data import TablePreprocessor

    splits = from_table(reviews["train"], target="Recommended IND", exclude=["Rating"])
    fitted = splits.info["preprocessor"]
    fitted.save(tmp_path)
    loaded = TablePreprocessor.load(tmp_path)
    new = pd.read_csv(reviews["new"])
    a, b = fitted.transform(new), loaded.transform(new)
    for m in fitted.modalities:
        assert torch.equal(a.inputs[m], b.inputs[m]) and torch.equal(a.masks[m], b.masks[m])
    assert loaded.specs == fitted.specs


# ---------------------------------------------------------------- other targets and kinds
def test_regression_predicts_in_target_units(reviews: dict, tmp_path: Path) -> None:
    out = tmp_path / "reg"
    assert main(["train", "--data", str(reviews["train"]), "--target", "Rating", "--task", "regression",
                 "--exclude", "Recommended IND", "--fusion", "late", "--out", str(out), *FAST]) == 0
    run = mmfuse.load_run(out)
    splits = from_table(reviews["train"], target="Rating", task="regression", exclude=["Recommended IND"])
    test_rows = pd.read_csv(reviews["train"]).iloc[splits.info["indices"]["test"]]
    reported = json.loads((out / "bundle.json").read_text())["metrics"]["test"]
    got = run.evaluate(test_rows)
    assert abs(got["rmse"] - reported["rmse"]) < 1e-6 and abs(got["r2"] - reported["r2"]) < 1e-6
    pred = run.predict(reviews["new"])
    assert list(pred.columns) == ["prediction"] and len(pred) == 200
    assert 0.0 < pred["prediction"].mean() < 7.0  # ratings are 1-5: units of the target, not standardised
    with pytest.raises(mmfuse.MmfuseError, match="regression model predicts values"):
        run.predict_proba(reviews["new"])


def test_multilabel_list_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3))
    labels = [[t for t, on in zip(("red", "green", "blue"), (a > 0, b > 0, c > 0.5), strict=True) if on]
              for a, b, c in x]
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "emb": [list(v) for v in rng.normal(size=(n, 4))],
                          "tags": labels})
    path = tmp_path / "ml.parquet"
    frame.to_parquet(path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--target", "tags", "--fusion", "early", "--out", str(out),
                 *FAST]) == 0
    run = mmfuse.load_run(out)
    assert run.task == "multilabel" and run.class_names == ["blue", "green", "red"]
    pred = run.predict(frame.drop(columns=["tags"]).iloc[:10])
    assert list(pred.columns) == ["prediction", "proba_blue", "proba_green", "proba_red"]
    assert all(isinstance(v, list) for v in pred["prediction"])
    preds_file = tmp_path / "p.parquet"
    assert main(["predict", str(out), "--data", str(path), "--out", str(preds_file)]) == 0
    assert len(pd.read_parquet(preds_file)) == n


def test_image_audio_paths_with_files_missing_at_predict_time(real_root: Path, tmp_path: Path) -> None:
    """An MNIST/FSDD path table: a file gone at predict time masks that modality for its row only."""
    from PIL import Image

    from mmfuse.data.avdigits import read_mnist

    images, labels = read_mnist(real_root)
    rows = []
    (tmp_path / "img").mkdir()
    (tmp_path / "wav").mkdir()
    for r in range(80):
        digit = r % 4
        idx = int(np.flatnonzero(labels == digit)[r // 4])
        Image.fromarray(images[idx]).save(tmp_path / "img" / f"{r}.png")
        clip = f"{digit}_george_{r // 4}.wav"
        shutil.copy(real_root / "fsdd" / "recordings" / clip, tmp_path / "wav" / clip)
        rows.append({"image": f"img/{r}.png", "audio": f"wav/{clip}", "digit": digit})
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "av.csv", index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "av.csv"), "--target", "digit", "--fusion", "late",
                 "--out", str(out), "data.image_size=[16,16]", "data.image_mode=L", "data.audio_sample_rate=8000",
                 "data.n_fft=256", "data.hop=128", *FAST]) == 0
    run = mmfuse.load_run(out)
    new = frame.drop(columns=["digit"]).iloc[:10].copy()
    (tmp_path / "img" / "3.png").unlink()
    (tmp_path / "wav" / new.loc[5, "audio"].split("/")[1]).unlink()
    t = run.transform(tmp_path / "av.csv")
    assert sorted((b.column, b.row) for b in t.bad_files) == [("audio", 5), ("image", 3)]
    assert not bool(t.masks["image"][3]) and bool(t.masks["audio"][3].any())
    pred = run.predict(new, base_dir=tmp_path)
    assert pred["prediction"].notna().all()  # each row still has the other modality


def test_list_of_vectors_parquet_is_a_sequence_for_attention(tmp_path: Path) -> None:
    """A Parquet list<list<float>> column loads as a (t, d) sequence with a token mask (ragged lengths)."""
    rng = np.random.default_rng(1)
    n = 240
    lengths = rng.integers(2, 7, n)
    y = rng.integers(0, 2, n)
    tokens = [(rng.normal(size=(k, 3)) + y[i]).astype(np.float32).tolist() for i, k in enumerate(lengths)]
    frame = pd.DataFrame({"tok": tokens, "x": rng.normal(size=n), "y": y})
    path = tmp_path / "seq.parquet"
    frame.to_parquet(path)
    splits = from_table(path, target="y")
    assert splits.specs["tok"].kind == "sequence" and splits.specs["tok"].shape[1] == 3
    mask = torch.cat([splits.train.masks["tok"], splits.val.masks["tok"], splits.test.masks["tok"]])
    assert sorted(mask.sum(1).unique().tolist()) == sorted(set(lengths.tolist()))
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--target", "y", "--fusion", "multihead_cross_attention",
                 "--out", str(out), *FAST]) == 0
    run = mmfuse.load_run(out)
    longer = frame.iloc[:3].copy()
    longer.at[0, "tok"] = rng.normal(size=(20, 3)).tolist()
    t = run.transform(longer)
    assert t.masks["tok"].shape[1] == splits.specs["tok"].shape[0]
    assert any("longer than training" in k for k in t.counts)
    assert run.predict(longer)["prediction"].notna().all()


def test_mostly_numeric_column_is_reported_and_kind_decides(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    n = 200
    age = [str(v) for v in rng.integers(20, 70, n)]
    for r in (3, 17):
        age[r] = "unknown"
    frame = pd.DataFrame({"Age": age, "x": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'Age': 198 of 200 values are numbers, 2 are not \('unknown' \(row 3\)"):
        from_table(path, target="y")
    assert main(["data", "inspect", str(path), "--target", "y"]) == 2
    assert "--kind Age=numeric" in capsys.readouterr().err
    s = from_table(path, target="y", kinds={"Age": "numeric"})
    assert s.info["schema"].notes == {"Age: not a number, read as missing": 2}
    assert main(["data", "inspect", str(path), "--target", "y", "--kind", "Age=numeric"]) == 0
    assert "note: Age: not a number, read as missing: 2 rows" in capsys.readouterr().out


def test_indicator_columns_come_from_training_rows(tmp_path: Path) -> None:
    """A NaN in a non-training row never changes the tabular width (the indicators are chosen at fit)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300), "y": rng.integers(0, 2, 300)})
    s = from_table(frame, target="y")
    width = s.specs["tabular"].shape[0]
    test_row = s.info["indices"]["test"][0]
    frame.loc[test_row, "a"] = np.nan
    s2 = from_table(frame, target="y")
    assert s2.specs["tabular"].shape[0] == width == 2
    prep = s2.info["preprocessor"]
    one = prep.transform(frame.iloc[[test_row]])
    median = prep.blocks["tabular"].medians[0]
    mean, std = prep.blocks["tabular"].means[0], prep.blocks["tabular"].stds[0]
    assert abs(float(one.inputs["tabular"][0, 0]) - (median - mean) / std) < 1e-6


# ---------------------------------------------------------------- a bench folder
def test_predict_from_a_bench_folder(reviews: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    code = main(["bench", "--data", str(reviews["train"]), "--target", "Recommended IND", "--exclude", "Rating",
                 "--fusions", "late,gated", "--seeds", "2", "--no-unimodal", "--modality-dropout", "0",
                 "--noise-scales", "1", "--no-plots", "--no-report", "--no-progress", "--jobs", "1",
                 "--out", str(out), *FAST, "measure.attribution=false"])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    pick = next(iter(doc["meta"]["verdicts"].values()))["recommendation"]["pick"]
    capsys.readouterr()
    assert main(["predict", str(out), "--data", str(reviews["new"]), "--out", str(tmp_path / "p.csv")]) == 0
    assert f"mmfuse predict: {pick} (binary)" in capsys.readouterr().err
    for strategy in ("late", "gated"):
        run = mmfuse.load_run(out, strategy=strategy)
        assert run.label == strategy and len(run.predict(reviews["new"])) == 200
    with pytest.raises(ConfigError, match=r"no finished run of strategy 'film'; the bench has \['gated', 'late'\]"):
        mmfuse.load_run(out, strategy="film")
    # every saved model is a bundle, named in the results by its training key
    for r in doc["runs"]:
        assert (out / "models" / r["train_key"] / "bundle.json").is_file()


# ---------------------------------------------------------------- batches, interruptions
def test_batches_give_the_same_predictions_and_counts(reviews: dict, review_run: Path, tmp_path: Path,
                                                      capsys) -> None:
    one, many = tmp_path / "one.csv", tmp_path / "many.parquet"
    assert main(["predict", str(review_run), "--data", str(reviews["new"]), "--out", str(one)]) == 0
    first = capsys.readouterr().err
    assert main(["predict", str(review_run), "--data", str(reviews["new"]), "--out", str(many),
                 "--batch-rows", "7"]) == 0
    assert capsys.readouterr().err == first  # the same summary, summed over the batches
    a, b = pd.read_csv(one), pd.read_parquet(many)
    assert a["prediction"].tolist() == b["prediction"].astype(int).tolist()
    np.testing.assert_allclose(a["proba_1"], b["proba_1"], atol=1e-7)


def test_an_interrupted_prediction_leaves_no_file(reviews: dict, review_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from mmfuse.runs.predictor import Run

    calls = {"n": 0}
    real = Run.outputs

    def interrupted(self, t, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, t, **kw)

    monkeypatch.setattr(Run, "outputs", interrupted)
    out = tmp_path / "p.csv"
    assert main(["predict", str(review_run), "--data", str(reviews["new"]), "--out", str(out),
                 "--batch-rows", "50"]) == 130
    assert "interrupted; no predictions file was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_first_batch_with_nothing_to_predict_keeps_the_columns(reviews: dict, review_run: Path, tmp_path: Path,
                                                                 suffix: str) -> None:
    """A batch whose rows all have every modality missing: the file keeps one schema (Parquet types
    of empty columns, the explain columns of a strategy with weights)."""
    new = pd.read_csv(reviews["new"]).iloc[:8].copy()
    features = ["Title", "Review Text", "Age", "Positive Feedback Count", "Division Name", "Department Name",
                "Class Name", "Clothing ID"]
    new.loc[[0, 1], features] = None
    path = tmp_path / "first_empty.csv"
    new.to_csv(path, index=False)
    out = tmp_path / f"p{suffix}"
    assert main(["predict", str(review_run), "--data", str(path), "--out", str(out), "--batch-rows", "2",
                 "--explain", "--id", "row_id"]) == 0
    got = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(got) == 8 and got["row_id"].tolist() == new["row_id"].tolist()
    assert got.loc[[0, 1], "proba_1"].isna().all() and got.loc[2:, "proba_1"].notna().all()
    assert {"weight_tabular", "shapley_tabular"} <= set(got.columns)
