"""``mmfuse predict --executor ray``: Ray Data over a folder of Parquet files, on a local Ray
instance (2 CPUs, started and stopped by the module fixture as the bench's Ray test does).

The output, sorted by ``input_row``, equals the single-process ``mmfuse predict`` and
``run.predict`` on the same rows, row for row (to 1e-6), with the ``--id`` column kept;
the driver's checks fail before any job starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _toy_reviews import toy_reviews, train_toy

import mmfuse
from mmfuse.cli import main

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mmfuse[ray]')")

from mmfuse.runs.cluster import ROW_COLUMN, parquet_files  # noqa: E402  (after the skip)


def _labels(column: pd.Series) -> list:
    """The predicted classes, a missing one as None (Parquet and pandas spell it None or NaN)."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column.tolist()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy(tmp_path_factory.mktemp("ray-run"), "gated", "hidden_dim=16")


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """230 new rows in 5 files of unequal sizes (one in a subfolder), plus files Arrow skips;
    the frame is the rows in the order of the rule: files sorted by relative path."""
    df = toy_reviews(230, 1).drop(columns=["y"])
    df["rid"] = (np.arange(230) * 37) % 1000 + 5000  # ids not in row order
    df.loc[[3, 100], "review"] = None
    df.loc[150, ["review", "age", "size"]] = None    # not predicted
    df.loc[[7, 201], "size"] = "XXL"
    folder = tmp_path_factory.mktemp("new-rows")
    (folder / "b").mkdir()
    cuts = [0, 17, 90, 91, 160, 230]
    names = ["a1.parquet", "a2.parquet", "b/c.parquet", "b/d.parquet", "e.parquet"]
    for name, lo, hi in zip(names, cuts[:-1], cuts[1:], strict=True):
        df.iloc[lo:hi].to_parquet(folder / name, index=False)
    (folder / "_SUCCESS").write_text("")
    (folder / ".a0.parquet.crc").write_text("")
    return folder, df.reset_index(drop=True)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_parquet_files_are_sorted_by_relative_path(parquet_dir: tuple[Path, pd.DataFrame]) -> None:
    folder, _ = parquet_dir
    assert [p.relative_to(folder).as_posix() for p in parquet_files(folder)] == [
        "a1.parquet", "a2.parquet", "b/c.parquet", "b/d.parquet", "e.parquet"]


def test_the_driver_checks_before_any_job(trained: Path, parquet_dir: tuple[Path, pd.DataFrame], tmp_path: Path,
                                          capsys) -> None:
    folder, frame = parquet_dir
    frame.head(5).to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.parquet").write_text("")
    frame.head(5).assign(input_row=1).to_parquet(tmp_path / "clash.parquet")
    cases = [
        (["--data", str(folder), "--out", str(tmp_path / "o.csv"), "--ray-address", "localhost:1"],
         "--ray-address is for --executor ray"),
        (["--data", str(folder), "--out", str(tmp_path / "o"), "--ray-workers", "2"], "--ray-workers is for"),
        (["--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "o"), "--executor", "ray"],
         "--executor ray reads Parquet"),
        (["--data", str(folder), "--executor", "ray"], "--out FOLDER is required"),
        (["--data", str(folder), "--out", str(tmp_path / "full"), "--executor", "ray"], "is not an empty folder"),
        (["--data", str(folder), "--out", str(tmp_path / "o"), "--executor", "ray", "--id", "nope"],
         "--id column 'nope' does not exist"),
        (["--data", str(tmp_path / "clash.parquet"), "--out", str(tmp_path / "o"), "--executor", "ray"],
         "has a column 'input_row'"),
        (["--data", str(folder), "--out", str(tmp_path / "o"), "--executor", "ray", "--ray-workers", "0"],
         "--ray-workers: expected a positive int"),
    ]
    for args, message in cases:
        assert main(["predict", str(trained), *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not ray.is_initialized()  # none of them needed Ray


def test_ray_predict_equals_the_single_process_predict_row_for_row(
        trained: Path, parquet_dir: tuple[Path, pd.DataFrame], local_ray, tmp_path: Path, capsys) -> None:
    folder, frame = parquet_dir
    out = tmp_path / "preds"
    assert main(["predict", str(trained), "--data", str(folder), "--out", str(out), "--executor", "ray",
                 "--id", "rid", "--batch-rows", "32", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert f"predictions: {out}" in printed.out
    assert "rows: 230, predicted: 229, not predicted (every modality missing): 1" in printed.err
    assert "sort by input_row" in printed.err
    assert not (tmp_path / "preds.partial").exists()
    files = sorted(out.glob("*.parquet"))
    assert len(files) >= 2  # cut into pieces of at most 32 rows, predicted by a pool of actors
    got = pd.read_parquet(out)
    assert sorted(got[ROW_COLUMN].tolist()) == list(range(230))
    got = got.sort_values(ROW_COLUMN).reset_index(drop=True)

    assert main(["predict", str(trained), "--data", str(folder), "--out", str(tmp_path / "single.parquet"),
                 "--id", "rid", "--no-progress"]) == 0
    single = pd.read_parquet(tmp_path / "single.parquet")
    expected = mmfuse.load_run(trained).predict(frame)
    assert list(got.columns) == [ROW_COLUMN, *single.columns] == [ROW_COLUMN, "rid", "prediction", "proba_0",
                                                                   "proba_1"]
    assert got["rid"].tolist() == single["rid"].tolist() == frame["rid"].tolist()
    for ref in (single, expected):
        assert _labels(got["prediction"]) == _labels(ref["prediction"])
        for c in ("proba_0", "proba_1"):
            np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)
    assert got["prediction"].isna().tolist() == [i == 150 for i in range(230)]


def test_a_bad_value_on_a_worker_ends_the_job_with_its_message(trained: Path, local_ray, tmp_path: Path,
                                                               capsys) -> None:
    df = toy_reviews(60, 2).drop(columns=["y"])
    df["age"] = df["age"].astype(str)
    df.loc[47, "age"] = "forty"
    (tmp_path / "in").mkdir()
    df.iloc[:30].to_parquet(tmp_path / "in" / "a.parquet", index=False)
    df.iloc[30:].to_parquet(tmp_path / "in" / "b.parquet", index=False)
    assert main(["predict", str(trained), "--data", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--executor", "ray", "--batch-rows", "30", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "mmfuse predict: error:" in err and "column 'age'" in err and "row 47" in err and "'forty'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
