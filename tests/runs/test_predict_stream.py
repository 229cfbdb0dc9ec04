"""``mmfuse predict`` on a Parquet folder: read, predicted and written in batches of rows.

One model is trained on a few hundred rows of a synthetic table (numbers with gaps, a
category, a short text), then ``mmfuse predict`` runs in a child process on a folder of
many more rows of the same columns. The child reports its own peak resident set
(``VmHWM``), as ``tests/data/test_stream.py`` does for training.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import mmfuse
from mmfuse.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow  # ~30 s on 2 CPUs: a model trained, 300,000 rows predicted in a child

FILES, ROWS, ROW_GROUP, COLS = 6, 50_000, 5_000, 40
BATCH_ROWS = 2048
COLOURS = np.array(["navy", "olive", "plum", "rust", "sand", "teal"], dtype=object)
#: 216 short texts of three words; every word is seen often enough to enter the vocabulary
NOTES = np.array([" ".join(w) for w in itertools.product(["red", "soft", "thin", "warm", "blue", "wide"], repeat=3)],
                 dtype=object)


def _rows(ids: np.ndarray, seed: int, *, label: bool = False) -> pd.DataFrame:
    """Rows ``ids`` of the table: ``id``, ``x0..`` numbers (``x0`` missing in some rows), a
    ``colour`` category, a ``note`` text (empty in some rows: its modality missing); in one
    row in 5,000 every modality is missing. ``label`` (for training) depends on ``x0``, the
    colour and the note's first word."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    x = rng.standard_normal((n, COLS))
    colour = COLOURS[rng.integers(0, len(COLOURS), n)]
    note = NOTES[rng.integers(0, len(NOTES), n)]
    x[ids % 37 == 0, 0] = np.nan
    note[ids % 41 == 0] = ""
    empty = ids % 5_000 == 7
    x[empty] = np.nan
    colour[empty] = None
    note[empty] = None
    frame = pd.DataFrame({"id": ids, **{f"x{j}": x[:, j] for j in range(COLS)}, "colour": colour, "note": note})
    if label:
        warm = np.array([str(t).startswith("warm") for t in note])
        score = np.nan_to_num(x[:, 0]) + 1.5 * np.isin(colour, ["navy", "plum"]) + 1.5 * warm
        frame["label"] = (score > 1.0).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained run, the folder it predicted, and what the child process reported."""
    tmp = tmp_path_factory.mktemp("predict_stream")
    train = _rows(np.arange(400), seed=1, label=True)
    train.to_parquet(tmp / "train.parquet", index=False)
    code = main(["train", "--data", str(tmp / "train.parquet"), "--target", "label", "--exclude", "id",
                 "--kind", "colour=categorical", "--kind", "note=text", "--fusion", "gated", "--epochs", "10",
                 "--out", str(tmp / "run"), "hidden_dim=8", "lr=0.01", "data.max_tokens=4", "data.min_count=1"])
    assert code == 0
    folder = tmp / "new"
    folder.mkdir()
    for f in range(FILES):  # written one file at a time; names sort in row order
        part = _rows(np.arange(f * ROWS, (f + 1) * ROWS), seed=100 + f)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{f:03d}.parquet",
                       row_group_size=ROW_GROUP)
    one = pd.read_parquet(folder / "part-000.parquet")  # what reading the folder whole would hold, per file
    data_bytes = int(one.memory_usage(deep=True).sum()) * FILES
    _rows(np.arange(5_000), seed=2).to_parquet(tmp / "warm.parquet", index=False)
    script = textwrap.dedent(f"""
        import json
        import pyarrow, pyarrow.dataset, pyarrow.parquet  # noqa: F401
        import torch
        import mmfuse.runs.predictor, mmfuse.training.checkpoint  # noqa: F401  (imported before 'before')
        from mmfuse.cli import main
        def status(key):  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024
        torch.set_num_threads(1)
        def predict(data, out):
            return main(["predict", {str(tmp / "run")!r}, "--data", data, "--out", out, "--id", "id",
                         "--batch-rows", "{BATCH_ROWS}", "--no-progress"])
        # a first prediction on a small file pays the fixed costs (imports, loading, first allocations)
        warm = predict({str(tmp / "warm.parquet")!r}, {str(tmp / "warm_preds.parquet")!r})
        before = status("VmHWM")
        code = predict({str(folder)!r}, {str(tmp / "preds.parquet")!r})
        print(json.dumps({{"code": code, "warm": warm, "before": before, "peak": status("VmHWM")}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"tmp": tmp, "folder": folder, "data_bytes": data_bytes, **out}


def test_streamed_prediction_keeps_peak_memory_far_below_the_data(streamed: dict) -> None:
    """Reading one row group (5,000 rows) and predicting one batch (2,048 rows) at a time, the
    peak grows by a few MiB over the warm-up's whatever the folder's size; a reader that holds
    files ahead (a pyarrow dataset scanner reads up to 4 files ahead) grows by the folder."""
    grown = streamed["peak"] - streamed["before"]  # the peak's growth over the warm-up prediction's
    print(f"data as one frame {streamed['data_bytes'] / 2**20:.0f} MiB, peak RSS growth while predicting "
          f"{grown / 2**20:.0f} MiB")
    assert streamed["code"] == 0 and streamed["warm"] == 0
    assert grown < streamed["data_bytes"] / 3, (grown, streamed["data_bytes"])


def test_streamed_prediction_writes_one_row_per_input_row_in_order_as_predict_does(streamed: dict) -> None:
    preds = pq.read_table(streamed["tmp"] / "preds.parquet")
    assert preds.column_names[0] == "id" and "prediction" in preds.column_names
    ids = preds.column("id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(FILES * ROWS))  # every row once, in input order
    # a few rows of every file, in memory, through Run.predict: the same predictions
    run = mmfuse.load_run(streamed["tmp"] / "run")
    rng = np.random.default_rng(0)
    picks = []
    for f in range(FILES):
        rows = np.sort(rng.choice(ROWS, 40, replace=False))
        if f == 0:
            rows = np.union1d(rows, [7, 37, 41])  # every modality missing; x0 missing; note empty
        picks.append(pq.read_table(streamed["folder"] / f"part-{f:03d}.parquet").take(rows).to_pandas())
    sample = pd.concat(picks, ignore_index=True)
    want = run.predict(sample)
    got = preds.take(sample["id"].to_numpy()).to_pandas()
    assert list(got.columns) == ["id", *want.columns]
    np.testing.assert_array_equal(got["id"].to_numpy(), sample["id"].to_numpy())
    as_list = lambda s: [None if pd.isna(v) else v for v in s.tolist()]  # noqa: E731
    assert as_list(got["prediction"]) == as_list(want["prediction"])
    proba = [c for c in want.columns if c.startswith("proba_")]
    assert len(proba) == 2
    np.testing.assert_allclose(got[proba].to_numpy(), want[proba].to_numpy(), rtol=1e-5, atol=1e-6)
    missing = sample["id"].to_numpy() == 7  # every modality missing: empty cells, not a guess
    assert got.loc[missing, "prediction"].isna().all() and np.isnan(got.loc[missing, proba].to_numpy()).all()
    assert want.loc[~missing, "prediction"].notna().all()
    assert len(set(want["prediction"].dropna())) == 2  # the model is not constant: the comparison means something
