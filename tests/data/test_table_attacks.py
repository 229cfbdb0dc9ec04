"""A user's table attacked: each input that once hung, crashed, or was silently reinterpreted.

Every test here failed (or hung) before its fix: a ragged multilabel target, a FIFO in a
file column, an audio decompression bomb, a huge PNG, ``inf`` in a feature or target,
duplicate CSV header names, one odd row in an embedding column, a stray string in a
column of lists, rich markup in a column name, a file path that leaves the table's folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfuse.cli import main
from mmfuse.data import DataError, from_table


def _numbers(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.integers(0, 2, n)})


def test_ragged_multilabel_row_is_an_error_naming_it() -> None:
    frame = _numbers(300)
    frame["tags"] = [[1, 0, 1] if i % 2 else [0, 1, 1] for i in range(300)]
    frame.at[17, "tags"] = [1, 0]
    with pytest.raises(DataError, match=r"target column 'tags' row 17: a 0/1 list of length 2, expected 3"):
        from_table(frame.drop(columns=["y"]), target="tags")
    frame.at[17, "tags"] = [1, 0, 2]
    with pytest.raises(DataError, match=r"row 17: a multilabel vector holds 0 and 1 only, got \[1, 0, 2\]"):
        from_table(frame.drop(columns=["y"]), target="tags")
    frame.at[17, "tags"] = [0.5, 1, 0]
    with pytest.raises(DataError, match=r"row 17: a multilabel vector holds 0 and 1 only"):
        from_table(frame.drop(columns=["y"]), target="tags")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["png", "npy"])
def test_a_fifo_in_a_file_column_is_a_bad_file_not_a_hang(tmp_path: Path, kind: str) -> None:
    from PIL import Image

    (tmp_path / "f").mkdir()
    rows = []
    for r in range(40):
        if kind == "png":
            Image.fromarray(np.full((8, 8), r * 5, dtype=np.uint8)).save(tmp_path / "f" / f"{r}.png")
        else:
            np.save(tmp_path / "f" / f"{r}.npy", np.full(4, r, dtype=np.float32))
        rows.append({"x": f"f/{r}.{kind}", "z": float(r), "y": r % 2})
    frame = pd.DataFrame(rows)
    (tmp_path / "f" / f"3.{kind}").unlink()
    os.mkfifo(tmp_path / "f" / f"3.{kind}")  # opening it for reading would block forever
    frame.to_csv(tmp_path / "t.csv", index=False)
    start = time.perf_counter()
    s = from_table(tmp_path / "t.csv", target="y")
    assert time.perf_counter() - start < 30
    bad = s.info["schema"].bad_files
    assert [(b.row, b.reason) for b in bad] == [(3, "not a regular file")]


def _bomb(path: Path, seconds: int, rate: int = 8000) -> None:
    from scipy.io import wavfile

    t = np.arange(seconds * rate) / rate
    wavfile.write(path, rate, (0.1 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16))


def test_a_long_clip_is_read_only_around_its_centre(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip far longer than audio_seconds is read in a window around its centre: the same
    log-mel as reading it whole, and never the whole length into memory."""
    from mmfuse.data.table.kinds import audio

    _bomb(tmp_path / "long.wav", 600)  # 10 minutes
    _bomb(tmp_path / "short.wav", 1)
    whole = {}
    real_read = audio.read_wave

    def spy(path, seconds=None):
        sr, x = real_read(path, seconds)
        whole[path.name] = x.shape[0]
        return sr, x

    monkeypatch.setattr(audio, "read_wave", spy)
    frame = pd.DataFrame({"clip": ["long.wav", "short.wav"] * 20, "y": [0, 1] * 20})
    frame.to_csv(tmp_path / "t.csv", index=False)
    s = from_table(tmp_path / "t.csv", target="y", audio_sample_rate=8000, audio_seconds=1.0, n_fft=256, hop=128)
    assert whole["long.wav"] == 2 * 8000 and whole["short.wav"] == 8000
    assert s.specs["clip"].kind == "audio"
    sr, x = real_read(tmp_path / "long.wav")  # whole, for the reference: the centre crop is the same samples
    assert sr == 8000 and x.shape[0] == 600 * 8000
    centre = x[(len(x) - 8000) // 2:][:8000]
    win = real_read(tmp_path / "long.wav", 1.0)[1]
    np.testing.assert_array_equal(win[(len(win) - 8000) // 2:][:8000], centre)


def test_a_huge_image_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from mmfuse.data.table.kinds import image

    monkeypatch.setattr(image, "MAX_PIXELS", 10_000)  # a small limit stands in for 40 Mpx
    for r in range(20):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / f"{r}.png")
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(tmp_path / "big.png")
    frame = pd.DataFrame({"img": [f"{r}.png" for r in range(20)], "y": [0, 1] * 10})
    frame.loc[4, "img"] = "big.png"
    frame.to_csv(tmp_path / "t.csv", index=False)
    s = from_table(tmp_path / "t.csv", target="y")
    (bad,) = s.info["schema"].bad_files
    assert bad.row == 4 and "200 x 200 = 40,000 pixels, above the limit of 10,000" in bad.reason


def test_inf_in_a_feature_or_the_target_names_the_column_and_row() -> None:
    frame = _numbers()
    frame.loc[7, "a"] = np.inf
    with pytest.raises(DataError, match=r"column 'a' \(modality 'tabular', numeric\) row 7: expected a number, got inf"):
        from_table(frame, target="y")
    frame = _numbers()
    frame["v"] = np.random.default_rng(1).normal(size=len(frame))
    frame.loc[9, "v"] = -np.inf
    with pytest.raises(DataError, match=r"target column 'v' row 9: expected a finite number"):
        from_table(frame, target="v", task="regression")


def test_duplicate_csv_header_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,a,y\n1,2,3,0\n4,5,6,1\n")
    with pytest.raises(DataError, match=r"the header names columns \['a'\] more than once"):
        from_table(path, target="y")


def test_one_odd_row_in_an_embedding_column_is_an_error() -> None:
    frame = _numbers(100)
    frame["emb"] = [[0.1 * i] * 7 for i in range(100)]
    frame.at[31, "emb"] = [1.0] * 6
    with pytest.raises(DataError, match=r"column 'emb' row 31: an embedding of length 6, expected 7 like 99 of the 100"):
        from_table(frame, target="y")
    frame.at[31, "emb"] = "oops"
    with pytest.raises(DataError, match=r"column 'emb' row 31: 'oops' in a column of lists"):
        from_table(frame, target="y")


def test_rich_markup_in_a_column_name_is_printed_as_text(tmp_path: Path, capsys) -> None:
    frame = _numbers(160)
    frame = frame.rename(columns={"a": "[/]"})
    rng = np.random.default_rng(4)
    words = ["great", "soft", "fit", "poor", "thin", "seams", "lovely", "small"]
    frame["[bold]t"] = [" ".join(rng.choice(words, 5)) for _ in range(len(frame))]
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "bench"
    code = main(["bench", "--data", str(path), "--target", "y", "--fusions", "late", "--seeds", "1",
                 "--modality-dropout", "0", "--noise-scales", "1", "--no-plots", "--no-report", "--no-progress",
                 "--jobs", "1", "--out", str(out), "epochs=1", "hidden_dim=8", "threads=1",
                 "measure.attribution=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "uni:[bold]t" in printed
    assert main(["train", "--data", str(path), "--target", "y", "--fusion", "late", "--out", str(tmp_path / "r"),
                 "epochs=1", "hidden_dim=8", "threads=1"]) == 0


def test_as_many_classes_as_rows_says_the_classes_are_too_small() -> None:
    frame = pd.DataFrame({"a": np.arange(120.0), "y": [f"c{i}" for i in range(120)]})
    with pytest.raises(DataError, match=r"120 of the 120 classes have fewer than 7 rows \(the median class has 1\)"):
        from_table(frame, target="y")


def _npy_table(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """A table in ``tmp_path/t`` of 40 rows whose ``x`` column names ``.npy`` files in ``t/f``;
    a file ``secret.npy`` lies beside the folder, outside it."""
    folder = tmp_path / "t"
    (folder / "f").mkdir(parents=True)
    for r in range(40):
        np.save(folder / "f" / f"{r}.npy", np.full(4, r, dtype=np.float32))
    np.save(tmp_path / "secret.npy", np.full(4, 99.0, dtype=np.float32))
    frame = pd.DataFrame({"x": [f"f/{r}.npy" for r in range(40)], "z": np.arange(40.0), "y": np.arange(40) % 2})
    return folder, tmp_path / "secret.npy", frame


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_path_that_leaves_the_tables_folder_is_refused_unless_allowed(tmp_path: Path, how: str) -> None:
    folder, secret, frame = _npy_table(tmp_path)
    if how == "symlink":
        (folder / "f" / "link.npy").symlink_to(secret)  # inside by name, outside in fact
        value = "f/link.npy"
    else:
        value = "../secret.npy" if how == "dotdot" else str(secret)
    frame.at[7, "x"] = value
    frame.to_csv(folder / "t.csv", index=False)
    with pytest.raises(DataError) as caught:
        from_table(folder / "t.csv", target="y")
    message = str(caught.value)
    assert f"column 'x' row 7: {value!r} leads to {secret}, outside the folder {folder}" in message
    assert "allow_outside=true" in message
    # base_dir moves the folder the paths must stay in
    with pytest.raises(DataError, match="outside the folder"):
        from_table(folder / "t.csv", target="y", base_dir=folder)
    # allowed: the row reads the file outside
    s = from_table(folder / "t.csv", target="y", allow_outside=True)
    (split,) = [k for k, rows in s.info["indices"].items() if 7 in list(rows)]
    row = list(s.info["indices"][split]).index(7)
    assert getattr(s, split).inputs["x"][row].tolist() == [99.0] * 4


def test_a_dataframe_without_a_folder_keeps_absolute_paths(tmp_path: Path) -> None:
    folder, secret, frame = _npy_table(tmp_path)
    frame["x"] = [str(folder / v) for v in frame["x"]]
    frame.at[7, "x"] = str(secret)
    assert len(from_table(frame, target="y").train)  # no folder of its own: nothing to leave
    with pytest.raises(DataError, match="row 7: .* outside the folder"):
        from_table(frame, target="y", base_dir=folder)  # given one, paths stay in it


def test_the_setting_goes_through_the_command_line_and_predict_keeps_the_rule(tmp_path: Path, capsys) -> None:
    from mmfuse import load_run

    folder, secret, frame = _npy_table(tmp_path)
    frame.at[7, "x"] = "../secret.npy"
    frame.to_csv(folder / "t.csv", index=False)
    run = tmp_path / "run"
    argv = ["train", "--data", str(folder / "t.csv"), "--target", "y", "--fusion", "late", "--out", str(run),
            "epochs=1", "hidden_dim=8", "progress=false"]
    assert main(argv) == 2
    assert "row 7: '../secret.npy' leads to" in capsys.readouterr().err and not run.exists()
    assert main([*argv, "data.allow_outside=true"]) == 0
    # predicting: the bundle keeps the setting; a run trained without it refuses such paths at predict time
    model = load_run(run)
    assert model.preprocessor.options.allow_outside is True
    frame.to_csv(folder / "new.csv", index=False)
    assert len(model.predict(folder / "new.csv")) == 40
    with pytest.raises(DataError, match="row 7: '../secret.npy' leads to .*give --base-dir a folder that holds it"):
        model.predict(folder / "new.csv", allow_outside=False)
    frame["x"] = [str((folder / v).resolve()) for v in frame["x"]]  # absolute paths, one of them outside t/
    frame.to_csv(folder / "new.csv", index=False)
    with pytest.raises(DataError, match="row 7: .* leads to"):
        model.predict(folder / "new.csv", allow_outside=False)
    assert len(model.predict(folder / "new.csv", allow_outside=False, base_dir=tmp_path)) == 40  # holds them all
