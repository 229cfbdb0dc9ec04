"""from_table: a user's table (DataFrame, CSV, Parquet, JSON Lines) of columns and files in, splits out.

Every table here is built in a fixture from the real data under ../shared/data (the
clothing-reviews Parquet file, UCI mfeat, MNIST digits written as PNG files, FSDD WAV
files) and checked by hand: values against the raw data and the documented
statistics, masks against the rows left empty, and every bad input raising.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import wavfile

from mmfuse.cli import main
from mmfuse.data import DataError, TableSource, describe_table, from_table, load_table
from mmfuse.data._audio import log_mel
from mmfuse.data.mfeat import MFEAT_VIEWS
from mmfuse.data.reviews import UNK_ID, tokenize

REVIEWS = "clothing_reviews/WomensClothingE-CommerceReviews.parquet.brotli"


# ---------------------------------------------------------------- fixtures (real data, small)


@pytest.fixture(scope="module")
def reviews_file(real_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 reviews with their original columns, a few ages removed, as a Parquet file."""
    frame = pd.read_parquet(real_root / REVIEWS).iloc[:300].copy()
    frame["Age"] = frame["Age"].astype("float64")
    frame.loc[[3, 50, 51, 200], "Age"] = np.nan
    path = tmp_path_factory.mktemp("reviews") / "reviews.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def mfeat_csv(real_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """The six mfeat views as one CSV of 400 digits (40 per class), columns <view>_<j>, and a label."""
    rows = np.concatenate([np.arange(c * 200, c * 200 + 40) for c in range(10)])
    parts, groups = [], {}
    for v, d in MFEAT_VIEWS.items():
        raw = pd.read_csv(real_root / "mfeat" / f"mfeat-{v}.csv").to_numpy()[rows, :d]
        cols = [f"{v}_{j}" for j in range(d)]
        parts.append(pd.DataFrame(raw, columns=cols))
        groups[v] = cols
    frame = pd.concat(parts, axis=1)
    frame["digit"] = rows // 200
    path = tmp_path_factory.mktemp("mfeat") / "mfeat.csv"
    frame.to_csv(path, index=False)
    return path, groups


@pytest.fixture(scope="module")
def av_table(real_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """60 rows: an MNIST digit as a PNG and an FSDD clip of the same digit, some paths missing or bad."""
    from PIL import Image

    from mmfuse.data.avdigits import read_mnist

    images, labels = read_mnist(real_root)
    folder = tmp_path_factory.mktemp("av")
    (folder / "img").mkdir()
    (folder / "wav").mkdir()
    rows = []
    for r in range(60):
        digit = r % 10
        img_idx = int(np.flatnonzero(labels == digit)[r // 10])
        Image.fromarray(images[img_idx]).save(folder / "img" / f"{r}.png")
        clip = f"{digit}_george_{r // 10}.wav"
        (folder / "wav" / clip).write_bytes((real_root / "fsdd" / "recordings" / clip).read_bytes())
        rows.append({"image": f"img/{r}.png", "audio": f"wav/{clip}", "digit": digit, "img_idx": img_idx})
    frame = pd.DataFrame(rows)
    frame.loc[[1, 7], "image"] = None  # missing image paths
    frame.loc[[2, 7], "audio"] = ""  # missing audio paths -> row 7 has nothing: dropped
    frame.loc[4, "image"] = "img/does-not-exist.png"
    (folder / "img" / "broken.png").write_bytes(b"\x89PNG not really")
    frame.loc[5, "image"] = "img/broken.png"
    (folder / "wav" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    frame.loc[6, "audio"] = "wav/broken.wav"
    path = folder / "av.csv"
    frame.drop(columns=["img_idx"]).to_csv(path, index=False)
    return {"path": path, "folder": folder, "frame": frame, "images": images}


def _concat(splits, attr, key=None):
    parts = [getattr(d, attr) if key is None else getattr(d, attr)[key] for d in (splits.train, splits.val, splits.test)]
    return torch.cat(parts)


def _rows(splits) -> np.ndarray:
    idx = splits.info["indices"]
    return np.array(idx["train"] + idx["val"] + idx["test"])


# ---------------------------------------------------------------- reviews as a user table


def test_reviews_binary_schema_split_and_tabular_by_hand(reviews_file: Path) -> None:
    frame = pd.read_parquet(reviews_file)
    s = from_table(reviews_file, target="Recommended IND", exclude=["Rating"], seed=3)
    assert s.task == "binary" and s.num_classes == 2
    assert s.modalities == ("Review Text", "Title", "tabular")
    assert s.specs["Title"].kind == "text" and s.specs["tabular"].kind == "tabular"
    report = s.info["schema"]
    kinds = {c.name: (c.kind, c.modality) for c in report.columns}
    assert kinds["Age"] == ("numeric", "tabular") and kinds["Class Name"] == ("categorical", "tabular")
    assert kinds["Rating"] == ("excluded", None) and kinds["Recommended IND"] == ("target", None)
    assert {c.name: c.missing_rate for c in report.columns}["Age"] == pytest.approx(4 / 300)
    # Every row once, stratified 70/15/15 per class.
    rows = _rows(s)
    assert sorted(rows.tolist()) == list(range(300))
    y = frame["Recommended IND"].to_numpy()
    for c in (0, 1):
        n_c = int((y == c).sum())
        got = [int((y[s.info["indices"][k]] == c).sum()) for k in ("val", "test")]
        assert got == [round(0.15 * n_c)] * 2
    np.testing.assert_array_equal(_concat(s, "labels").numpy(), y[rows])
    # Numeric: NaN -> training median, standardised with training mean/std, plus a missing indicator.
    meta = s.specs["tabular"].meta
    assert meta["columns"][:4] == ["Clothing ID", "Age", "Positive Feedback Count", "Age missing"]
    assert meta["num_numeric"] == 4 and len(meta["cardinalities"]) == 3
    train = np.array(s.info["indices"]["train"])
    age = frame["Age"].to_numpy()
    med = np.median(age[train][~np.isnan(age[train])])
    filled = np.where(np.isnan(age), med, age)
    want = (filled - filled[train].mean()) / filled[train].std()
    tab = _concat(s, "inputs", "tabular").numpy()
    np.testing.assert_allclose(tab[:, 1], want[rows], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(tab[:, 3], np.isnan(age[rows]).astype(np.float32))
    # Categorical: code 0 for a value unseen in training, 1.. in sorted order of training values.
    cats = sorted(frame["Class Name"].iloc[train].dropna().unique())
    want_codes = [cats.index(v) + 1 if v in cats else 0 for v in frame["Class Name"].iloc[rows]]
    np.testing.assert_array_equal(tab[:, 6], want_codes)


def test_reviews_text_vocabulary_from_training_rows_only(reviews_file: Path) -> None:
    frame = pd.read_parquet(reviews_file)
    s = from_table(reviews_file, target="Recommended IND", exclude=["Rating"], min_count=1)
    train = s.info["indices"]["train"]
    train_words = {w for r in train for w in tokenize(str(frame["Review Text"].iloc[r] or ""))
                   if isinstance(frame["Review Text"].iloc[r], str)}
    assert s.specs["Review Text"].meta["vocab_size"] == len(train_words) + 2
    # A word seen only outside training is unknown (id 1).
    test_rows = s.info["indices"]["test"]
    for pos, r in enumerate(test_rows):
        text = frame["Review Text"].iloc[r]
        if not isinstance(text, str):
            assert not s.test.masks["Review Text"][pos]
            continue
        toks = tokenize(text)[:64]
        ids = s.test.inputs["Review Text"][pos, : len(toks)].tolist()
        assert all((i == UNK_ID) == (w not in train_words) for w, i in zip(toks, ids, strict=True))
    # Missing titles are masked.
    title_missing = frame["Title"].isna().to_numpy()[_rows(s)]
    assert title_missing.any()
    np.testing.assert_array_equal(_concat(s, "masks", "Title").numpy(), ~title_missing)


def test_reviews_rating_as_regression_and_as_multiclass(reviews_file: Path) -> None:
    frame = pd.read_parquet(reviews_file)
    reg = from_table(reviews_file, target="Rating", task="regression", exclude=["Recommended IND"])
    assert reg.task == "regression" and reg.num_classes == 1 and reg.train.labels.shape[1] == 1
    np.testing.assert_array_equal(_concat(reg, "labels")[:, 0].numpy(), frame["Rating"].to_numpy()[_rows(reg)])
    summary = reg.info["schema"].target_summary["Rating"]
    assert summary["min"] == frame["Rating"].min() and summary["mean"] == pytest.approx(frame["Rating"].mean())
    cls = from_table(reviews_file, target="Rating", exclude=["Recommended IND"])
    assert cls.task == "multiclass" and cls.num_classes == frame["Rating"].nunique()
    assert cls.train.class_names == [str(v) for v in sorted(frame["Rating"].unique())]


# ---------------------------------------------------------------- mfeat: six groups of columns


def test_mfeat_csv_six_modalities_standardised_by_hand(mfeat_csv) -> None:
    path, groups = mfeat_csv
    kinds = {c: "numeric" for cols in groups.values() for c in cols}
    s = from_table(path, target="digit", modalities=groups, kinds=kinds, val_fraction=0.25, test_fraction=0.25)
    assert s.task == "multiclass" and s.num_classes == 10
    assert {m: spec.shape for m, spec in s.specs.items()} == {v: (d,) for v, d in MFEAT_VIEWS.items()}
    assert all(spec.kind == "vector" for spec in s.specs.values())
    assert s.train.class_counts().tolist() == [20] * 10
    raw = pd.read_csv(path)
    train, test = s.info["indices"]["train"], s.info["indices"]["test"]
    for v in ("fou", "pix"):
        x = raw[groups[v]].to_numpy(dtype=np.float64)
        mean, std = x[train].mean(0), x[train].std(0)
        std[std < 1e-8] = 1.0
        np.testing.assert_allclose(s.test.inputs[v].numpy(), (x[test] - mean) / std, rtol=1e-4, atol=1e-4)
    # Without the override the few-valued integer pixel columns are categorical -> a tabular modality.
    inferred = describe_table(path, target="digit", modalities={"pix": groups["pix"][:5]})
    assert inferred.modalities["pix"]["kind"] == "tabular"


# ---------------------------------------------------------------- images and audio by path


def test_image_and_audio_paths_decoded_masked_and_counted(av_table) -> None:
    path, frame = av_table["path"], av_table["frame"]
    s = from_table(path, target="digit", image_mode="L", image_size=(28, 28), audio_sample_rate=8000,
                   n_fft=256, hop=80, audio_seconds=1.0, val_fraction=0.2, test_fraction=0.2)
    report = s.info["schema"]
    assert report.dropped == {"every modality missing": 1} and report.rows_used == 59
    assert sorted((b.column, b.row) for b in report.bad_files) == [("audio", 6), ("image", 4), ("image", 5)]
    assert "not found" in next(b.reason for b in report.bad_files if b.row == 4)
    rows = _rows(s)
    assert 7 not in rows
    img_mask = _concat(s, "masks", "image").numpy()
    np.testing.assert_array_equal(img_mask, ~np.isin(rows, [1, 4, 5]))
    assert s.specs["image"].shape == (1, 28, 28) and s.specs["audio"].kind == "audio"
    # Pixels: the PNG is the MNIST digit, standardised with the training images' mean/std.
    train = s.info["indices"]["train"]
    ok_train = [r for r in train if r not in (1, 4, 5)]
    px = av_table["images"][frame["img_idx"].to_numpy()].astype(np.float64) / 255.0
    mean, std = px[ok_train].mean(), px[ok_train].std()
    img = _concat(s, "inputs", "image").numpy()
    for pos, r in enumerate(rows):
        if img_mask[pos]:
            np.testing.assert_allclose(img[pos, 0], (px[r] - mean) / std, rtol=1e-4, atol=1e-4)
        else:
            assert not img[pos].any()
    # Audio: the log-mel of the clip padded to 1 s, one training mean/std over valid frames, frame mask.
    frames = 1 + (8000 - 256) // 80
    aud, fmask = _concat(s, "inputs", "audio").numpy(), _concat(s, "masks", "audio").numpy()
    assert fmask.shape == (59, frames)
    pos = int(np.flatnonzero(rows == 0)[0])
    sr, wav = wavfile.read(av_table["folder"] / frame.loc[0, "audio"])
    x = wav.astype(np.float32) / 32768.0
    length = (frames - 1) * 80 + 256
    padded = np.pad(x, (0, max(0, length - len(x))))[:length] if len(x) < length else x[(len(x) - length) // 2:][:length]
    mel = log_mel(padded[None], sr=8000, n_fft=256, hop=80, n_mels=40)[0]
    valid = min(frames, -(-min(len(x), length) // 80))
    assert fmask[pos].sum() == valid
    a_block = s.info["preprocessor"].blocks["audio"]
    a_mean, a_std = a_block.mean, a_block.std
    np.testing.assert_allclose(aud[pos][:, :valid], ((mel - a_mean) / a_std)[:, :valid], rtol=1e-3, atol=1e-3)
    assert not fmask[int(np.flatnonzero(rows == 2)[0])].any()  # missing audio path: every frame masked
    with pytest.raises(DataError, match=r"column 'image' row 4: .*does-not-exist.png"):
        from_table(path, target="digit", on_bad_file="error", audio_sample_rate=8000, n_fft=256, hop=80)


# ---------------------------------------------------------------- multilabel and embeddings


def _embedding_frame(tmp_path: Path, n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    (tmp_path / "emb").mkdir()
    rows = []
    for r in range(n):
        np.save(tmp_path / "emb" / f"{r}.npy", rng.standard_normal(5).astype(np.float32))
        labels = [t for t, on in zip(("red", "green", "blue"), ((r % 2 == 0), (r % 3 == 0), (r % 5 != 0)), strict=True) if on]
        rows.append({"emb": f"emb/{r}.npy", "tags": labels, "size": float(r % 7), "seq": list(range(1 + r % 4))})
    return pd.DataFrame(rows)


def test_multilabel_list_and_columns_with_npy_and_list_embeddings(tmp_path: Path) -> None:
    frame = _embedding_frame(tmp_path)
    frame.loc[9, "emb"] = None
    path = tmp_path / "t.jsonl"
    frame.to_json(path, orient="records", lines=True)
    s = from_table(path, target="tags")
    assert s.task == "multilabel" and s.num_classes == 3 and s.train.class_names == ["blue", "green", "red"]
    rows = _rows(s)
    want = np.array([[r % 5 != 0, r % 3 == 0, r % 2 == 0] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(_concat(s, "labels").numpy(), want)
    assert s.specs["emb"].kind == "vector" and s.specs["emb"].shape == (5,)
    emb = _concat(s, "inputs", "emb").numpy()
    for pos, r in enumerate(rows):
        if r == 9:
            assert not _concat(s, "masks", "emb")[pos]
        else:
            np.testing.assert_array_equal(emb[pos], np.load(tmp_path / "emb" / f"{r}.npy"))
    # A variable-length list column is a sequence of 1-d tokens with a token mask.
    assert s.specs["seq"].kind == "sequence" and s.specs["seq"].shape == (4, 1)
    np.testing.assert_array_equal(_concat(s, "masks", "seq").sum(1).numpy(), 1 + rows % 4)
    # Several 0/1 target columns: multilabel, one output per column.
    wide = frame.assign(a=[r % 2 for r in range(80)], b=[int(r % 3 == 0) for r in range(80)]).drop(columns=["tags"])
    m = from_table(wide, target=["a", "b"], base_dir=tmp_path)
    assert m.task == "multilabel" and m.num_classes == 2 and m.train.class_names == ["a", "b"]
    reg = from_table(wide.assign(b=wide["size"] * 0.5), target=["a", "b"], base_dir=tmp_path)
    assert reg.task == "regression" and reg.train.labels.shape[1] == 2


def test_npy_embedding_of_the_wrong_length(tmp_path: Path) -> None:
    frame = _embedding_frame(tmp_path, 40)
    np.save(tmp_path / "emb" / "17.npy", np.zeros(6, dtype=np.float32))
    with pytest.raises(DataError, match=r"column 'emb' row 17: .*17.npy: embedding of length 6, expected 5"):
        from_table(frame, target="size", base_dir=tmp_path)
    np.save(tmp_path / "emb" / "17.npy", np.zeros(5, dtype=np.float32))
    raw = (tmp_path / "emb" / "20.npy").read_bytes()
    (tmp_path / "emb" / "20.npy").write_bytes(raw[:-8])  # truncated
    with pytest.raises(DataError, match=r"column 'emb' row 20: .*20.npy: cannot read as .npy"):
        from_table(frame, target="size", base_dir=tmp_path)


# ---------------------------------------------------------------- splits


def test_split_column_and_group_split(reviews_file: Path) -> None:
    frame = pd.read_parquet(reviews_file)
    which = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    s = from_table(frame.assign(part=which), target="Recommended IND", split="part", exclude=["Rating"])
    assert s.info["indices"]["val"] == list(range(200, 250)) and len(s.train) == 200
    assert "part" not in s.specs["tabular"].meta["columns"]
    g = from_table(frame, target="Recommended IND", split={"group": "Clothing ID"}, exclude=["Rating"], seed=1)
    ids = frame["Clothing ID"].to_numpy()
    sets = [set(ids[g.info["indices"][k]]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(g.info["indices"][k]) for k in ("train", "val", "test")) == 300
    assert "Clothing ID" not in g.specs["tabular"].meta["columns"]
    with pytest.raises(DataError, match=r"split column 'part' row 3: expected train, val or test, got 'tran'"):
        which[3] = "tran"
        from_table(frame.assign(part=which), target="Recommended IND", split="part")


# ---------------------------------------------------------------- options record and CLI


def test_table_source_json_round_trip_and_load_table(reviews_file: Path) -> None:
    opts = TableSource(path=str(reviews_file), target="Rating", task="regression", exclude=("Recommended IND",),
                       modalities={"text": ["Title", "Review Text"], "tab": ["Age"]}, seed=2)
    assert json.loads(json.dumps(opts.to_json())) == opts.to_json()  # a JSON document as it is
    again = TableSource.from_json(opts.to_json())
    assert again == opts
    assert TableSource.from_json({**opts.to_json(), "schema_version": 1}) == opts  # as mmfuse wrote it before
    a = load_table(again)
    b = from_table(reviews_file, target="Rating", task="regression", exclude=["Recommended IND"],
                   modalities={"text": ["Title", "Review Text"], "tab": ["Age"]}, seed=2)
    assert a.info["indices"] == b.info["indices"]
    torch.testing.assert_close(a.train.inputs["text"], b.train.inputs["text"])
    with pytest.raises(DataError, match="unknown keys"):
        TableSource.from_json({**opts.to_json(), "taget": "x"})


def test_cli_data_inspect(reviews_file: Path, capsys) -> None:
    assert main(["data", "inspect", str(reviews_file), "--target", "Rating", "--task", "regression",
                 "--modality", "text=Title,Review Text", "--modality", "tab=Age,Class Name"]) == 0
    out = capsys.readouterr().out
    assert "task regression" in out and "text: text (64,) from Title, Review Text" in out
    assert "Age missing" not in out and "Age  " in out and "1.3%" in out
    assert main(["data", "inspect", str(reviews_file), "--target", "Recommended IND", "--split", "group:Clothing ID",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "binary" and report["split"] == "by group 'Clothing ID'"
    assert sum(report["split_sizes"].values()) == 300 and report["target_summary"]["1"] > report["target_summary"]["0"]
    assert main(["data", "inspect", str(reviews_file), "--target", "Recommended IND", "--exclude", "Rating",
                 "--kind", "Division Name=text", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {c["name"]: (c["kind"], c["modality"]) for c in report["columns"]}
    assert kinds["Rating"] == ("excluded", None) and kinds["Division Name"] == ("text", "Division Name")
    assert main(["data", "inspect", str(reviews_file), "--target", "Age", "--kind", "Title=picture"]) == 2
    assert "kinds: column 'Title': expected one of" in capsys.readouterr().err
    assert main(["data", "inspect", str(reviews_file), "--target", "Nope"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "target column 'Nope' does not exist" in err and "'Rating'" in err


# ---------------------------------------------------------------- bad input


def test_bad_input_each_a_data_error_naming_file_column_row(tmp_path: Path, reviews_file: Path) -> None:
    frame = pd.read_parquet(reviews_file)
    name = str(reviews_file)
    with pytest.raises(DataError, match=rf"{name}: modality 'x': column 'Nope' does not exist; the columns are \[.*'Age'"):
        from_table(reviews_file, target="Rating", modalities={"x": ["Age", "Nope"]})
    with pytest.raises(DataError, match=r"target column 'one': only one class"):
        from_table(frame.assign(one=1), target="one")
    # NaN targets are dropped and counted; none left is an error.
    with_nan = frame.assign(y=frame["Recommended IND"].astype(float))
    with_nan.loc[[0, 5, 9], "y"] = np.nan
    s = from_table(with_nan, target="y", exclude=["Recommended IND", "Rating"])
    assert s.info["schema"].dropped == {"missing target": 3} and 0 not in _rows(s)
    with pytest.raises(DataError, match="target column 'y': every value is missing"):
        from_table(with_nan.assign(y=np.nan), target="y")
    # A text column in a numeric modality.
    with pytest.raises(DataError, match=r"modality 'tab': column 'Title' is text, it cannot go with the numeric"):
        from_table(reviews_file, target="Rating", modalities={"tab": ["Age", "Title"]})
    csv = tmp_path / "t.csv"
    frame.iloc[:50].to_csv(csv, index=False)
    with pytest.raises(DataError, match=rf"{csv}: column 'Title' \(modality 'tab', numeric\) row 2: expected a number, got 'Some major"):
        from_table(csv, target="Rating", modalities={"tab": ["Age", "Title"]}, kinds={"Title": "numeric"})
    # Unreadable and truncated files.
    trunc = tmp_path / "cut.parquet"
    trunc.write_bytes(reviews_file.read_bytes()[:1000])
    with pytest.raises(DataError, match=rf"{trunc}: cannot read as parquet"):
        from_table(trunc, target="Rating")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"a,b\n1,2\n\xff\xfe\x00,3\n")
    with pytest.raises(DataError, match=rf"{bad_csv}: cannot read as csv"):
        from_table(bad_csv, target="a")
    with pytest.raises(DataError, match=r"no such file"):
        from_table(tmp_path / "absent.csv", target="a")
    with pytest.raises(DataError, match=r"task binary needs 2 classes, got 5"):
        from_table(reviews_file, target="Rating", task="binary")


# ---------------------------------------------------------------- downstream


@pytest.mark.parametrize("fusion", ["gated", "late"])
def test_models_build_on_a_table_and_ignore_what_its_masks_drop(av_table, fusion: str) -> None:
    from mmfuse.models import build_model
    from mmfuse.training.metrics import take

    s = from_table(av_table["path"], target="digit", val_fraction=0.2, test_fraction=0.2)  # default RGB 32x32, 16 kHz
    assert s.specs["image"].shape == (3, 32, 32) and s.specs["audio"].shape == (40, 98)
    model = build_model(s, fusion=fusion, hidden_dim=16).eval()
    batch = take(s.train, slice(0, len(s.train)))
    with torch.no_grad():
        out = model(batch["inputs"], batch["masks"])
        assert out.shape == (len(s.train), 10) and torch.isfinite(out).all()
        # Values behind a False mask (a missing image, padded audio frames) change nothing.
        inputs = dict(batch["inputs"])
        inputs["image"] = inputs["image"] + 100.0 * (~batch["masks"]["image"]).float()[:, None, None, None]
        inputs["audio"] = inputs["audio"] + 100.0 * (~batch["masks"]["audio"]).float()[:, None, :]
        torch.testing.assert_close(model(inputs, batch["masks"]), out)
    assert not batch["masks"]["image"].all() and not batch["masks"]["audio"].all()
