"""A full disk during a bench or a training: one line naming the folder, nothing half-written kept.

The device is simulated by raising ``OSError(ENOSPC)`` where the write happens (the
writer's own ``os.write``/``fsync``, or a run's file write), which is what the kernel
returns on a full file system or an exhausted quota.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
from _bench_fakes import disk_full_run, fake_run, modalities_of
from rich.console import Console

from mmfuse.bench import BenchConfig, ResultsStore, SerialExecutor, run_bench
from mmfuse.errors import DiskFullError, MmfuseError
from mmfuse.io import atomic_write, is_disk_full
from mmfuse.training import TrainConfig


def _enospc(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(path)] if path is not None else []))


def test_a_full_disk_keeps_the_old_file_removes_the_temporary_one_and_names_the_folder(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    target = tmp_path / "out" / "results.json"
    atomic_write(target, "old")

    def half_then_full(f):
        f.write(b"new, half of it")
        raise _enospc()

    with pytest.raises(DiskFullError) as caught:
        atomic_write(target, half_then_full)
    assert caught.value.folder == str(target.parent) and str(target.parent) in str(caught.value)
    assert "nothing half-written was kept" in str(caught.value)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["results.json"]

    # the kernel may report a full device only at fsync (delayed allocation): the same
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(_enospc()))
    with pytest.raises(DiskFullError):
        atomic_write(target, "new")
    assert target.read_text() == "old" and len(list(target.parent.iterdir())) == 1


def test_the_error_is_an_mmfuse_error_and_an_oserror_and_crosses_processes() -> None:
    err = DiskFullError("/data/out", "continue with --resume")
    assert isinstance(err, MmfuseError) and isinstance(err, OSError) and err.errno == errno.ENOSPC
    back = pickle.loads(pickle.dumps(err))  # the bench's worker processes send it back pickled
    assert type(back) is DiskFullError and str(back) == str(err) and back.folder == "/data/out"
    assert is_disk_full(err) and is_disk_full(RuntimeError("wrapped")) is False
    try:
        try:
            raise _enospc()
        except OSError as exc:
            raise RuntimeError("a library re-raised it") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)  # found through the cause
    assert not is_disk_full(OSError(errno.EACCES, "denied"))


def test_a_full_disk_mid_append_leaves_the_log_as_it_was(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "res"
    run_bench(_config(out, plots=False, report=False), run_fn=fake_run, executor=SerialExecutor(),
              modalities_of=modalities_of, fusions=["alpha"], console=Console(file=open(os.devnull, "w")), progress=False)
    log = out / "runs.jsonl"
    before = log.read_bytes()
    record = ResultsStore(out).records()[0]
    real_write = os.write

    def half_a_line(fd: int, data: bytes) -> int:  # the device fills after half the record
        real_write(fd, data[: len(data) // 2])
        raise _enospc()

    monkeypatch.setattr(os, "write", half_a_line)
    with pytest.raises(DiskFullError, match=str(out)):
        ResultsStore(out).append(record)
    monkeypatch.undo()
    assert log.read_bytes() == before  # no torn line for the next run to repair


def _config(out: Path, **kw) -> BenchConfig:
    return BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=1, dropout_seeds=1,
                       modality_dropout=0.0, diagnose=False, train=TrainConfig(epochs=1, progress=False),
                       out=str(out), **kw)


def test_a_full_disk_stops_the_bench_and_the_same_command_continues(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "res"
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("MMFUSE_BENCH_TEST_CALLS", str(calls))
    with pytest.raises(DiskFullError, match=f"no space left on the device of '{out}'"):
        run_bench(_config(out), run_fn=disk_full_run, executor=SerialExecutor(), modalities_of=modalities_of,
                  fusions=["beta", "alpha"], console=Console(file=open(os.devnull, "w")), progress=False)
    # the grid stopped at the full disk: no run after it was tried, none recorded as failed
    labels = [line.split()[1] for line in calls.read_text().splitlines()]
    assert labels[-1] == "beta"
    records = ResultsStore(out).records()
    assert all(r.ok for r in records) and "beta" not in {r.label for r in records}
    assert not (out / "results.json").exists()  # no half set of outputs
    # space again: the same command runs only what is left
    done = len(records)
    again = run_bench(_config(out), run_fn=fake_run, executor=SerialExecutor(), modalities_of=modalities_of,
                      fusions=["beta", "alpha"], console=Console(file=open(os.devnull, "w")),
                      progress=False)
    assert again.skipped == done and again.failed == 0 and (out / "results.json").is_file()


def test_the_bench_command_says_it_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import mmfuse.bench.run
    from mmfuse.cli import main

    monkeypatch.setattr(mmfuse.bench.run, "run_one", disk_full_run_any)
    out = tmp_path / "bench"
    code = main(["bench", "--dataset", "synthetic", "--fusions", "late", "--seeds", "1", "--no-unimodal",
                 "--no-plots", "--no-progress", "--jobs", "1", "--out", str(out), "synthetic_tasks=[synergy]",
                 "diagnose=false", "modality_dropout=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mmfuse bench: error: no space left on the device of '{out}':")
    assert err.rstrip().endswith("run the same command again")


def disk_full_run_any(run):
    raise _enospc(Path(run.models_dir) / run.train_key / "model.safetensors")


def test_a_bundle_cut_by_a_full_disk_is_removed(tmp_path: Path, monkeypatch) -> None:
    import mmfuse.runs.bundle
    from mmfuse.bench.executors import guarded_run
    from mmfuse.bench.grid import BenchRun
    from mmfuse.bench.run import run_one, saved_model
    from mmfuse.experiment import ExperimentSpec, MeasureConfig
    from mmfuse.experiment.specs import DataSpec, ModelSpec

    spec = ExperimentSpec(data=DataSpec(name="synthetic", options={"task": "redundancy", "n": 120}),
                          model=ModelSpec(fusion="late", hidden_dim=8), train=TrainConfig(epochs=1, progress=False))
    run = BenchRun(spec=spec, measure=MeasureConfig(noise_scales=(), attribution=False), models_dir=str(tmp_path))
    real = mmfuse.runs.bundle.write_bundle

    def full_after_the_weights(folder, **kw):
        real(folder, **kw)  # the weights and most of the bundle are on disk, then the device fills
        raise _enospc(Path(folder) / "preprocessor.safetensors")

    monkeypatch.setattr(mmfuse.runs.bundle, "write_bundle", full_after_the_weights)
    with pytest.raises(DiskFullError, match=str(tmp_path)):
        guarded_run(run_one, run)
    assert not (tmp_path / run.train_key).exists() and saved_model(run) is None


def test_train_says_it_in_one_line_and_resume_finishes(tmp_path: Path, monkeypatch, capsys) -> None:
    import mmfuse.runs.bundle
    from mmfuse.cli import main

    real = mmfuse.runs.bundle.write_bundle
    monkeypatch.setattr(mmfuse.runs.bundle, "write_bundle",
                        lambda folder, **kw: (_ for _ in ()).throw(_enospc(Path(folder) / "bundle.json")))
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--fusion", "late", "--out", str(out), "epochs=1", "hidden_dim=8",
            "data.n=120", "progress=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no space left on the device of '{out}'" in err and f"--resume --out {out}" in err
    assert not any(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.iterdir())
    # space again: the advice given works
    monkeypatch.setattr(mmfuse.runs.bundle, "write_bundle", real)
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "bundle.json").read_text())
