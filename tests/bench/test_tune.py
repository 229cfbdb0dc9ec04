"""``mmfuse bench --tune N``: equal-budget Optuna tuning of every strategy and baseline.

Tiny synthetic data (200 samples), 1-4 trials of 1-4 epochs: each test trains a few
small models in well under a few seconds; the one end-to-end test runs a whole bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna", reason="optuna is not installed (pip install 'mmfuse[tune]')")

from mmfuse.bench import load_config  # noqa: E402
from mmfuse.bench.config import DEFAULT_TRAIN, BenchConfig, BenchConfigError  # noqa: E402
from mmfuse.bench.grid import build_grid  # noqa: E402
from mmfuse.bench.tune import (  # noqa: E402
    TuneConfig,
    check_fusion_space,
    resolve_space,
    tune_grid,
)
from mmfuse.errors import ConfigError  # noqa: E402
from mmfuse.fusions import list_fusions  # noqa: E402
from mmfuse.space import Categorical, Float, sample  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"


def _runs(fusions=("gated",), *, unimodal=False, epochs=2, seeds=1):
    config = BenchConfig(datasets=["synthetic"], synthetic_tasks=["redundancy"],
                         dataset_options={"synthetic": {"n": 200}}, seeds=seeds, modality_dropout=0.0,
                         unimodal=unimodal, train=DEFAULT_TRAIN.replace(epochs=epochs), diagnose=False)
    return build_grid(config, fusions=list(fusions), modalities_of=lambda d: ["x0", "x1"])


def _tune(runs, **cfg):
    return tune_grid(runs, TuneConfig(**cfg), metric_of=lambda spec: ("accuracy", True))


# ------------------------------------------------------------------ trials
def test_trial_0_is_the_defaults_and_only_changes_are_retrained() -> None:
    (result,) = _tune(_runs(), trials=2, pruner="none")
    first = result.trials[0]
    assert first["number"] == 0 and first["defaults"] is True
    # the bench's defaults, written out: DEFAULT_TRAIN (lr 3e-3, weight decay 1e-4, batch 128),
    # ModelSpec (hidden 64, dropout 0.1) and GatedFusion's signature (gate feature, unit linear)
    assert first["params"] == {"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 128, "hidden_dim": 64,
                               "dropout": 0.1, "gated.gate": "feature", "gated.unit": "linear"}
    assert result.default_value == first["value"]
    assert all(result.defaults[k] != v for k, v in result.changes.items())


def test_a_default_outside_a_narrowed_space_is_said_not_passed_off_as_trial_0() -> None:
    (r,) = _tune(_runs(epochs=1), trials=1, pruner="none", space={"lr": [1e-4, 1e-3]})  # the default is 3e-3
    first = r.trials[0]
    assert first["defaults"] is False and 1e-4 <= first["params"]["lr"] <= 1e-3
    assert first["params"]["weight_decay"] == 1e-4  # the others are still the defaults
    assert r.note == "trial 0 is not the defaults: lr outside the space"


def test_the_test_split_is_never_read_while_tuning(monkeypatch) -> None:
    import mmfuse.experiment.run as run_module

    reads = {"test": 0}
    real = run_module.load_data

    class Watched:
        def __init__(self, splits):
            self._splits = splits

        def __getattr__(self, name):
            if name == "test":
                reads["test"] += 1
            return getattr(self._splits, name)

    monkeypatch.setattr(run_module, "load_data", lambda data: Watched(real(data)))
    results = _tune(_runs(unimodal=True), trials=2)
    assert sum(len(r.trials) for r in results) == 6  # gated and two baselines, 2 trials each
    assert reads["test"] == 0
    assert len(run_module.load_data(_runs()[0].spec.data).test) > 0  # the watch does count a read
    assert reads["test"] == 1


def test_the_same_seed_draws_the_same_trials_and_another_seed_others() -> None:
    def params(seed):
        (r,) = _tune(_runs(epochs=1), trials=3, seed=seed, pruner="none")
        return [t["params"] for t in r.trials]

    a, b, c = params(0), params(0), params(1)
    assert a == b
    assert a[0] == c[0]  # trial 0 is the defaults whatever the seed
    assert a[1:] != c[1:]


def test_a_time_limit_stops_a_study_after_the_trial_that_crossed_it() -> None:
    (r,) = _tune(_runs(epochs=1), trials=3, time=1e-6)
    assert len(r.trials) == 1 and r.trials[0]["defaults"]  # the defaults always run
    assert r.note == "stopped by the time limit after 1 trial"


def test_a_trial_below_the_median_of_earlier_ones_is_pruned(tmp_path: Path) -> None:
    store = str(tmp_path / "s.journal")
    runs = _runs(epochs=4)
    _tune(runs, trials=1, storage=store)  # trial 0: the defaults
    study = optuna.load_study(study_name="synthetic/redundancy:gated", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(store)))
    for _ in range(2):  # two finished trials that scored 2.0 at every epoch: no accuracy reaches that
        study.add_trial(optuna.trial.create_trial(value=2.0, intermediate_values={e: 2.0 for e in range(4)}))
    (r,) = _tune(runs, trials=4, storage=store)
    new = r.trials[-1]
    assert r.ran_now == 1 and new["state"] == "pruned"
    assert new["epochs"] == 2  # stopped after epoch 2 of 4: the median pruner waits one epoch (warm-up)


def test_a_killed_tuning_resumes_and_a_storage_of_another_configuration_is_refused(tmp_path: Path) -> None:
    store = str(tmp_path / "studies.db")  # SQLite
    runs = _runs(epochs=1)
    (first,) = _tune(runs, trials=2, storage=store)
    assert first.ran_now == 2
    # a process killed in a trial leaves it running: its pid no longer exists on this machine
    storage = optuna.storages.RDBStorage(f"sqlite:///{store}")
    study = optuna.load_study(study_name="synthetic/redundancy:gated", storage=storage)
    dead = study.ask()
    dead.set_user_attr("owner", f"{__import__('socket').gethostname()}:999999999")
    (again,) = _tune(runs, trials=3, storage=store)
    assert again.ran_now == 1  # the 2 finished trials are not run again
    assert len(again.trials) == 3 and "1 trial(s) of an ended process run again" in again.note
    assert [t["number"] for t in again.trials][:2] == [0, 1]
    with pytest.raises(ConfigError, match=r"another bench configuration.*train\.epochs: 1 there, 2 here"):
        _tune(_runs(epochs=2), trials=3, storage=store)


def test_a_storage_of_the_previous_mmfuse_is_refused_as_another_version(tmp_path: Path) -> None:
    """Its study's identity has spec schema 2 (the five flat balance settings): not "another
    configuration", whose differences would list settings the user never changed."""
    from mmfuse.bench.tune import open_study, resolve_space

    store = str(tmp_path / "old.db")
    (run,) = _runs(epochs=1)
    old = {**run.spec.weights_identity(), "schema": 2}
    old["train"] = {**old["train"], "balance": None, "balance_weight": 1.0, "pareto_gamma": 1.5}
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{store}")
    study.set_user_attr("mmfuse_fingerprint", "0" * 16)
    study.set_user_attr("mmfuse_identity", old)
    with pytest.raises(ConfigError, match=r"its study 's' was made by another version of mmfuse \(spec schema 2, "
                                          r"this one 3\)"):
        open_study("s", run.spec, resolve_space("gated"), "accuracy", True, TuneConfig(trials=1, storage=store))


@pytest.mark.slow  # two fresh processes importing torch and Lightning: ~30 s on 2 CPUs
def test_two_processes_share_one_journal_and_run_the_budget_once(tmp_path: Path) -> None:
    store = tmp_path / "shared.journal"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(SRC)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_tune import _runs
        from mmfuse.bench.tune import TuneConfig, tune_grid
        (r,) = tune_grid(_runs(epochs=1), TuneConfig(trials=4, storage={str(store)!r}),
                         metric_of=lambda spec: ("accuracy", True))
        print(json.dumps({{"ran": r.ran_now}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ran = [json.loads(o[0].strip().splitlines()[-1])["ran"] for o in outs]
    study = optuna.load_study(study_name="synthetic/redundancy:gated", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store))))
    counted = [t for t in study.trials if "discarded" not in t.user_attrs]
    assert sum(ran) == 4 and len(counted) == 4
    assert len({t.number for t in counted}) == 4
    assert all(t.state.is_finished() for t in counted)


@pytest.mark.slow  # a local Ray instance and its workers' imports: ~40 s on 2 CPUs
def test_trials_run_as_ray_tasks_draw_what_the_serial_tuning_draws(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    runs = _runs(("gated",), epochs=1)
    serial = _tune(runs, trials=2, pruner="none")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = tune_grid(runs, TuneConfig(trials=2, pruner="none"), executor="ray", out=tmp_path,
                           metric_of=lambda spec: ("accuracy", True))
    finally:
        ray.shutdown()
    assert (tmp_path / "tuning" / "studies.journal").is_file()
    assert [[t["params"] for t in r.trials] for r in on_ray] == [[t["params"] for t in r.trials] for r in serial]
    assert all(t["state"] == "complete" for r in on_ray for t in r.trials)


# ------------------------------------------------------------------ spaces
@pytest.mark.parametrize("name", list_fusions())
def test_every_strategy_space_names_its_options_with_allowed_values(name: str) -> None:
    check_fusion_space(name)


def test_a_space_with_a_value_its_option_refuses_is_named() -> None:
    with pytest.raises(ConfigError, match=r"gate: 'vector' is not allowed: expected one of \['scalar', 'feature'\]"):
        check_fusion_space("gated", {"gate": Categorical(("scalar", "vector"))})
    with pytest.raises(ConfigError, match="its condition names 'width'"):
        check_fusion_space("bottleneck", {"num_heads": Categorical((1, 2), divides="width")})


def test_conditional_options_follow_the_option_they_depend_on() -> None:
    space = {**resolve_space("bottleneck"), **resolve_space("late")}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_heads: dict[int, set[int]] = {}
    for _ in range(150):
        trial = study.ask()
        got = sample(trial, space)
        seen_heads.setdefault(got["bottleneck.dim"], set()).add(got["bottleneck.num_heads"])
        assert got["bottleneck.dim"] % got["bottleneck.num_heads"] == 0
        assert ("late.decision" in got) == (got["late.level"] == "decision")
        assert ("late.combine" in got) == (got["late.level"] == "feature")
        if got["bottleneck.dim"] == 32:  # 3 heads cannot divide 32: a filtered parameter of its own
            assert "bottleneck.num_heads|bottleneck.dim=32" in trial.params
        study.tell(trial, 0.0)
    assert seen_heads[48] == {1, 2, 3, 4, 8} and seen_heads[32] == {1, 2, 4, 8}


# ------------------------------------------------------------------ settings
def test_tuning_is_set_the_same_way_from_yaml_settings_and_flags(tmp_path: Path) -> None:
    yaml_file = tmp_path / "b.yaml"
    yaml_file.write_text("tune: {trials: 7, pruner: halving, space: {lr: [1.0e-4, 1.0e-3]}}\n")
    from_yaml = load_config(yaml_file).tune
    from_settings = load_config(settings=["tune.trials=7", "tune.pruner=halving",
                                          "tune.space.lr=[0.0001, 0.001]"]).tune
    assert from_yaml == from_settings == TuneConfig(trials=7, pruner="halving", space={"lr": [1e-4, 1e-3]})
    flags = load_config(yaml_file, tune=3, tune_time=60, tune_storage=str(tmp_path / "s.db")).tune
    assert (flags.trials, flags.time, flags.storage, flags.pruner) == (3, 60, str(tmp_path / "s.db"), "halving")
    assert load_config().tune is None  # no tuning unless asked


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tune": 0}, r"trials: expected an int >= 1.*got 0"),
    ({"tune": -2}, r"trials: expected an int >= 1.*got -2"),
    ({"tune_storage": "s.db"}, r"tune.storage given without a number of trials: add --tune N"),
    ({"settings": {"tune": {"trials": 2, "space": {"lrr": [1e-4, 1e-2]}}}},
     r"unknown hyperparameter 'lrr': expected one of \['batch_size', 'dropout', 'hidden_dim', 'lr', 'weight_decay'\]"),
    ({"settings": {"tune": {"trials": 2, "space": {"gated.gates": ["scalar"]}}}},
     r"unknown option 'gates' of gated: expected one of \[.*'gate'"),
    ({"settings": {"tune": {"trials": 2, "space": {"gated.gate": ["scalar", "vector"]}}}},
     r"gated.gate: 'vector' is not allowed: expected one of \['scalar', 'feature'\]"),
    ({"settings": {"tune": {"trials": 2, "space": {"lr": [0, 1e-2]}}}}, r"lr: .*a log scale needs low > 0, got 0"),
    ({"settings": {"tune": {"trials": 2, "space": {"dropout": [0.0, 1.5]}}}}, r"dropout: 1.5 is not allowed: expected"),
    ({"settings": {"tune": {"trials": 2, "space": {"low_rank.dim": [0, 8]}}}},
     r"low_rank.dim: 0 is not allowed: expected a positive int or None"),
    ({"settings": {"tune": {"trials": 2, "space": {"low_rank.rank": {"low": 0, "high": 8, "log": False}}}}},
     r"low_rank.rank: 0 is not allowed: expected a positive int"),
    ({"settings": {"tune": {"trials": 2, "pruner": "hyperband"}}}, r"pruner: expected one of"),
])
def test_bad_tuning_settings_are_refused_by_name(kwargs, match) -> None:
    with pytest.raises(BenchConfigError, match=match):
        load_config(**kwargs)


def test_a_space_for_a_strategy_not_compared_is_refused_before_any_run(tmp_path: Path) -> None:
    from mmfuse.bench import run_bench

    config = load_config(settings={"synthetic_tasks": ["redundancy"], "tune.space.low_rank.rank": [2, 4]},
                         fusions=["gated"], tune=2, out=str(tmp_path / "b"))
    with pytest.raises(BenchConfigError, match=r"low_rank.rank: 'low_rank' is not among the strategies compared"):
        run_bench(config, progress=False)
    assert not (tmp_path / "b" / "runs.jsonl").exists()


def test_a_user_narrows_and_widens_a_space() -> None:
    space = resolve_space("low_rank", {"lr": [1e-5, 1e-1], "low_rank.rank": [2, 4], "low_rank.dim": 8,
                                       "hidden_dim": [16, 32]})
    assert space["lr"] == Float(1e-5, 1e-1, log=True)  # widened, still on a log scale
    assert (space["low_rank.rank"].low, space["low_rank.rank"].high) == (2, 4)
    assert space["low_rank.dim"] == Categorical((8,))
    assert space["hidden_dim"] == Categorical((16, 32))


# ------------------------------------------------------------------ report
def _row(model, mean, ds="d"):
    return SimpleNamespace(dataset=ds, model=model, standard=True, score_mean=mean, score_std=0.01,
                           higher_is_better=True)


def _verdict(pick, tied=()):
    return SimpleNamespace(recommendation=SimpleNamespace(pick=pick, tied=tied) if pick else None)


def test_the_sentence_says_whether_the_ranking_and_the_recommendation_changed() -> None:
    from mmfuse.bench.tuning import change_sentence

    before = [_row("early", 0.8), _row("late", 0.7), _row("uni:a", 0.6)]
    same = [_row("early", 0.85), _row("late", 0.75), _row("uni:a", 0.6)]
    swapped = [_row("early", 0.8), _row("late", 0.9), _row("uni:a", 0.6)]
    assert change_sentence("d", before, same, {"d": _verdict("early")}, {"d": _verdict("early")}) == (
        "Tuning did not change the ranking (early > late > uni:a); the recommendation stayed early.")
    assert change_sentence("d", before, swapped, {"d": _verdict("early")}, {"d": _verdict("late")}) == (
        "Tuning changed the ranking, from early > late > uni:a to late > early > uni:a; the recommendation "
        "changed from early to late.")
    assert change_sentence("d", before, swapped, {"d": _verdict("early")}, {"d": _verdict("late", ("late", "early"))}
                           ).endswith("the recommendation changed from early to late, though early is still among "
                                      "the strategies not significantly worse than the best.")


def test_a_tuned_bench_reports_defaults_beside_tuned_models_and_says_its_budget(tmp_path: Path) -> None:
    """The end-to-end test: a bench of one strategy and its baselines, 2 trials each."""
    from mmfuse.bench import run_bench

    config = load_config(settings={"synthetic_tasks": ["redundancy"], "dataset_options": {"synthetic": {"n": 200}},
                                   "measure.noise_scales": [], "measure.missing": False,
                                   "measure.attribution": False, "measure.intermediates_samples": 0},
                         fusions=["late"], seeds=2, epochs=2, tune=2, modality_dropout=0.0, executor="serial",
                         diagnose=False, plots=False, out=str(tmp_path / "b"))
    outcome = run_bench(config, progress=False)
    assert outcome.failed == 0
    meta = json.loads((tmp_path / "b" / "results.json").read_text())["meta"]
    block = meta["tuning"]["datasets"]["synthetic/redundancy"]
    assert meta["tuning"]["budget"] == "2 trials each, 2 epochs max"
    assert {m["model"] for m in block["models"]} == {"late", "uni:x0", "uni:x1"}
    for m in block["models"]:
        assert m["default_mean"] is not None and m["tuned_mean"] is not None
        assert sum(m["trials"].values()) == 2
    rows = (tmp_path / "b" / "tuning" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 and rows[0].startswith("dataset,model,metric,number,state,value")
    report = (tmp_path / "b" / "report.html").read_text()
    assert "What tuning changed" in report and block["sentence"] in report.replace("&gt;", ">")
    rec = meta["verdicts"]["synthetic/redundancy"]["recommendation"]
    if rec is not None:
        assert rec["sentence"].endswith("(tuned: 2 trials each, 2 epochs max)")
    # the tuned grid covers the same seeds: each model's tuned score is a mean over 2 runs
    tuned = [r for r in outcome.records if r.label == "late"]
    assert sorted(r.spec.seed for r in tuned) == [0, 1]


def test_list_options_shows_every_space(capsys) -> None:
    from mmfuse.cli import main
    from mmfuse.fusions import fusion_class

    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    assert "    lr: float in [0.0001, 0.01], log scale" in out
    assert "        tuned (--tune): one of [1, 2, 3, 4, 8] that divides dim" in out  # bottleneck's heads
    n = sum(len(fusion_class(f).search_space) for f in list_fusions())
    assert out.count("tuned (--tune): ") == n
