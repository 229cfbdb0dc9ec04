"""ParquetStream: a multi-file Parquet folder read in record batches with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from mmfuse.data import DataError
from mmfuse.data.stream import ParquetStream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _write_folder(folder: Path, files: int, rows: int, cols: int, row_group: int, seed: int = 0) -> pd.DataFrame:
    """``files`` Parquet files of ``rows`` rows: an id, ``cols`` float columns, a list column, a 3-class label."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(files):
        ids = np.arange(f * rows, (f + 1) * rows)
        data = {"id": ids.astype(np.float64)}
        for j in range(cols):
            data[f"x{j}"] = rng.normal(j, 1 + j, rows)
        data["x0"][ids % 97 == 0] = np.nan
        data["label"] = (ids % 3).astype(np.int64) + 10
        frame = pd.DataFrame(data)
        frame["emb"] = [[float(i), float(i) * 2] for i in ids]
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{f}.parquet",
                       row_group_size=row_group)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_values_masks_labels_and_shards_by_hand(tmp_path: Path) -> None:
    frame = _write_folder(tmp_path / "d", files=3, rows=400, cols=3, row_group=100)
    mods = {"num": ["x0", "x1", "x2"], "emb": ["emb"], "id": ["id"], "gap": ["x0"]}
    stream = ParquetStream(tmp_path / "d", target="label", modalities=mods, batch_size=64)
    assert stream.task == "multiclass" and stream.num_classes == 3
    # the table's numeric rule: x0 has NaN, so it gets a missing indicator
    assert {m: s.shape for m, s in stream.specs.items()} == {"num": (4,), "emb": (2,), "id": (1,), "gap": (2,)}
    assert stream.specs["num"].meta["columns"] == ["x0", "x1", "x2", "x0 missing"]
    batches = list(stream)
    assert max(len(b["label"]) for b in batches) == 64
    got = {k: torch.cat([b["inputs"][k] for b in batches]).numpy() for k in mods}
    ids = np.rint(got["emb"][:, 0]).astype(int)  # the list column is passed through as given
    assert sorted(ids.tolist()) == list(range(1200))
    rows = frame.set_index("id").loc[ids.astype(float)]
    x = rows[["x0", "x1", "x2"]].to_numpy()
    every = frame[["x0", "x1", "x2"]].to_numpy()
    med = np.nanmedian(every, 0)  # exact: fewer values than the median sample
    filled = np.where(np.isnan(every), med, every)
    mean, std = filled.mean(0), filled.std(0)
    want = np.concatenate([(np.where(np.isnan(x), med, x) - mean) / std, np.isnan(x[:, :1])], axis=1)
    np.testing.assert_allclose(got["num"], want, rtol=1e-4, atol=1e-4)
    assert stream.stats.missing == {"x0": int(np.isnan(every[:, 0]).sum()), "x1": 0, "x2": 0, "id": 0}
    gap_mask = torch.cat([b["masks"]["gap"] for b in batches]).numpy()
    np.testing.assert_array_equal(gap_mask, ids % 97 != 0)  # a modality all NaN in a row is missing
    assert torch.cat([b["masks"]["num"] for b in batches]).all()  # x1, x2 present
    labels = torch.cat([b["label"] for b in batches]).numpy()
    np.testing.assert_array_equal(labels, ids % 3)
    # Shards (2 ranks x 2 workers) partition the rows; a DataLoader with 2 workers reads each row once.
    seen = []
    for shard in range(4):
        part = [np.rint(b["inputs"]["emb"][:, 0].numpy()).astype(int) for b in stream.iter_shard(shard, 4)]
        seen.append(np.concatenate(part))
    assert sorted(np.concatenate(seen).tolist()) == list(range(1200))
    assert all(len(s) == 300 for s in seen)
    rank1 = ParquetStream(tmp_path / "d", target="label", modalities=mods, batch_size=64, rank=1, world_size=2,
                          stats=stream.stats)
    loader = DataLoader(rank1, batch_size=None, num_workers=2)
    ids1 = np.concatenate([np.rint(b["inputs"]["emb"][:, 0].numpy()).astype(int) for b in loader])
    assert sorted(ids1.tolist()) == sorted(np.concatenate([seen[2], seen[3]]).tolist())
    reg = ParquetStream(tmp_path / "d", target="x2", modalities={"num": ["x1"]}, stats=stream.stats, task="regression")
    y = torch.cat([b["label"] for b in reg])
    assert y.shape == (1200, 1)
    with pytest.raises(DataError, match="column 'nope' does not exist"):
        ParquetStream(tmp_path / "d", target="nope", modalities=mods)


def test_one_epoch_over_a_folder_keeps_peak_memory_far_below_its_size(tmp_path: Path) -> None:
    files, rows, cols = 6, 100_000, 48
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for f in range(files):  # written one file at a time
        table = pa.table({**{f"x{j}": rng.standard_normal(rows) for j in range(cols)},
                          "label": (np.arange(rows) % 2).astype(np.int64)})
        pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=10_000, compression="none")
        del table
    data_bytes = files * rows * (cols * 8 + 8)
    script = textwrap.dedent(f"""
        import json
        import torch
        from mmfuse.data.stream import ParquetStream
        import pyarrow, pyarrow.parquet, pyarrow.dataset  # noqa: F401
        def status(key):  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024
        before = status("VmHWM")
        s = ParquetStream({str(folder)!r}, target="label", modalities={{"x": [f"x{{j}}" for j in range({cols})]}},
                          batch_size=512)
        n = pos = 0
        for b in s:
            n += len(b["label"]); pos += int(b["label"].sum())
        peak = status("VmHWM")
        print(json.dumps({{"rows": n, "pos": pos, "before": before, "peak": peak}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rows"] == files * rows and out["pos"] == files * rows // 2
    grown = out["peak"] - out["before"]  # peak RSS during the epoch (statistics pass included) above the start
    print(f"data {data_bytes / 2**20:.0f} MiB, peak RSS growth while iterating {grown / 2**20:.0f} MiB")
    assert grown < data_bytes / 4, (grown, data_bytes)


def test_fit_trains_on_a_streamed_folder_with_bounded_memory(tmp_path: Path) -> None:
    """A Parquet folder read as a stream trains a fusion with ``fit`` (one epoch); the process's
    peak memory grows far less than the folder's size, and the model learns the label."""
    files, rows, cols = 6, 60_000, 32
    folder = tmp_path / "train"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def table(n: int) -> pa.Table:
        x = rng.standard_normal((n, cols))
        label = ((x[:, 0] + x[:, cols // 2]) > 0).astype(np.int64)  # needs both modalities
        return pa.table({**{f"x{j}": x[:, j] for j in range(cols)}, "label": label})

    for f in range(files):
        pq.write_table(table(rows), folder / f"part-{f}.parquet", row_group_size=5_000, compression="none")
    pq.write_table(table(2_000), tmp_path / "val.parquet")
    pq.write_table(table(2_000), tmp_path / "test.parquet")
    (tmp_path / "warm").mkdir()
    pq.write_table(table(2_000), tmp_path / "warm" / "part-0.parquet")
    data_bytes = files * rows * (cols * 8 + 8)
    script = textwrap.dedent(f"""
        import json
        from mmfuse.data import DatasetSplits
        from mmfuse.data.stream import ParquetStream
        from mmfuse.models import build_model
        from mmfuse.training import TrainConfig, evaluate, fit
        import pyarrow, pyarrow.parquet, pyarrow.dataset  # noqa: F401
        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024
        mods = {{"a": [f"x{{j}}" for j in range({cols // 2})], "b": [f"x{{j}}" for j in range({cols // 2}, {cols})]}}
        train = ParquetStream({str(folder)!r}, target="label", modalities=mods, batch_size=2048, shuffle=True)
        side = lambda p: ParquetStream(p, target="label", modalities=mods, stats=train.stats).to_dataset()
        splits = DatasetSplits("big", train, side({str(tmp_path / 'val.parquet')!r}),
                               side({str(tmp_path / 'test.parquet')!r}))
        # a first fit on a small folder pays the fixed costs (imports, Lightning's set-up)
        warm = ParquetStream({str(tmp_path / 'warm')!r}, target="label", modalities=mods, batch_size=2048,
                             stats=train.stats)
        fit(build_model(splits, fusion="gated", hidden_dim=16), DatasetSplits("warm", warm, splits.val, splits.test),
            TrainConfig(epochs=1, batch_size=2048, lr=1e-2, progress=False))
        model = build_model(splits, fusion="gated", hidden_dim=16)
        before = status("VmHWM")
        result = fit(model, splits, TrainConfig(epochs=1, batch_size=2048, lr=1e-2, progress=False))
        peak = status("VmHWM")
        print(json.dumps({{"acc": evaluate(result.model, splits.test)["accuracy"], "before": before, "peak": peak,
                          "epochs": result.epochs_run}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = out["peak"] - out["before"]  # the peak's growth over the warm-up fit's
    print(f"data {data_bytes / 2**20:.0f} MiB, peak RSS growth while training {grown / 2**20:.0f} MiB, "
          f"test accuracy {out['acc']:.3f}")
    assert out["epochs"] == 1 and out["acc"] > 0.85  # chance is 0.5; the label needs both modalities
    assert grown < data_bytes / 4, (grown, data_bytes)


def test_streamed_training_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    from mmfuse.data import DatasetSplits
    from mmfuse.models import build_model
    from mmfuse.training import TrainConfig, TrainConfigError, fit

    _write_folder(tmp_path / "d", files=1, rows=300, cols=2, row_group=100)
    mods = {"num": ["x0", "x1"], "emb": ["emb"]}
    stream = ParquetStream(tmp_path / "d", target="label", modalities=mods, batch_size=64)
    held = stream.to_dataset("held")
    assert len(held) == 300 and held.task == "multiclass" and set(held.modalities) == {"num", "emb"}
    splits = DatasetSplits("d", stream, held, held)
    with pytest.raises(TrainConfigError, match="not with a streamed training split"):
        fit(build_model(splits, fusion="late", hidden_dim=8), splits, TrainConfig(epochs=1, balance="aux"))
    reg = ParquetStream(tmp_path / "d", target="x1", modalities={"num": ["x0"]}, task="regression", batch_size=64)
    rsplits = DatasetSplits("r", reg, reg.to_dataset(), reg.to_dataset())
    with pytest.raises(TrainConfigError, match="supports binary and multiclass"):
        fit(None, rsplits, TrainConfig(epochs=1))  # refused before the model is used


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_ranks_take_the_same_number_of_steps_with_uneven_row_groups(tmp_path: Path) -> None:
    """3 row groups on 2 ranks (gloo, CPU): each rank iterates its shard with one all_reduce per
    batch, as DDP steps do; both finish (the short rank repeats a batch) instead of waiting forever."""
    import subprocess
    import sys
    import textwrap

    _write_folder(tmp_path / "d", files=1, rows=300, cols=2, row_group=100)
    script = textwrap.dedent(f"""
        import sys, torch, torch.distributed as dist
        from mmfuse.data.stream import ParquetStream
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path / 'rendezvous'}", rank=rank, world_size=2)
        s = ParquetStream({str(tmp_path / 'd')!r}, target="label", modalities={{"x": ["x0", "x1"]}}, batch_size=100)
        steps = 0
        ids = []
        for b in s:
            t = torch.ones(1)
            dist.all_reduce(t)  # a DDP step: waits for the other rank
            steps += 1
            ids += b["label"].tolist()
        dist.barrier()
        print(steps, len(ids))
        dist.destroy_process_group()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    steps = [tuple(int(v) for v in out.split()) for out, _ in outs]
    assert steps == [(2, 200), (2, 200)]  # rank 1 has one row group: it repeats its batch


def test_stream_inputs_that_are_not_data_are_named(tmp_path: Path) -> None:
    """inf, a column absent from one file, a junk file, a file removed mid-epoch, one class."""
    frame = _write_folder(tmp_path / "d", files=2, rows=100, cols=2, row_group=50)
    mods = {"x": ["x0", "x1"]}
    stream = ParquetStream(tmp_path / "d", target="label", modalities=mods, batch_size=40)
    (tmp_path / "d" / "part-1.parquet").unlink()
    with pytest.raises(DataError, match=r"part-1.parquet: the file disappeared while it was being read"):
        list(stream)
    bad = frame.iloc[:100].copy()
    bad.loc[3, "x1"] = np.inf
    (tmp_path / "inf").mkdir()
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "inf" / "a.parquet")
    with pytest.raises(DataError, match=r"column 'x1': 1 values are inf"):
        ParquetStream(tmp_path / "inf", target="label", modalities=mods)
    (tmp_path / "some").mkdir()
    pq.write_table(pa.Table.from_pandas(frame.iloc[:100], preserve_index=False), tmp_path / "some" / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[100:].drop(columns=["x1"]), preserve_index=False),
                   tmp_path / "some" / "b.parquet")
    with pytest.raises(DataError, match=r"b.parquet: columns \['x1'\] are not in this file"):
        ParquetStream(tmp_path / "some", target="label", modalities=mods)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk"):
        ParquetStream(tmp_path / "junk", target="label", modalities=mods)
    one = frame.iloc[:100].assign(label=10)
    (tmp_path / "one").mkdir()
    pq.write_table(pa.Table.from_pandas(one, preserve_index=False), tmp_path / "one" / "a.parquet")
    with pytest.raises(DataError, match=r"needs at least two integer classes"):
        ParquetStream(tmp_path / "one", target="label", modalities=mods, task="binary")
