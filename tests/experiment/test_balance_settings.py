"""Balance options (one nested ``BalanceOptions``): every route reaches them, an option no
method of the run reads is refused, and the training key holds them only with balancing
on, and then only the method and the options it reads. Nothing trains here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _cli_capture import bench_config, train_spec

from mmfuse.cli import main
from mmfuse.experiment import DataSpec, ExperimentSpec, ModelSpec
from mmfuse.experiment.specs import SPEC_SCHEMA, stable_hash
from mmfuse.training.config import BalanceOptions, TrainConfig

_train, _bench = train_spec, bench_config


def _yaml(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


WANT = BalanceOptions(method="gblend", every=3, floor=0.05)


@pytest.mark.parametrize("route", ["bare", "train.", "mapping", "yaml flat", "yaml nested", "yaml train:"])
def test_train_reaches_the_method_and_its_options_by_every_route(route, tmp_path, monkeypatch) -> None:
    argv = {
        "bare": ["balance=gblend", "balance.every=3", "balance.floor=0.05"],
        "train.": ["train.balance=gblend", "train.balance.every=3", "train.balance.floor=0.05"],
        "mapping": ["balance={method: gblend, every: 3, floor: 0.05}"],
        "yaml flat": ["--config", _yaml(tmp_path, {"balance": "gblend", "balance.every": 3, "balance.floor": 0.05})],
        "yaml nested": ["--config", _yaml(tmp_path, {"balance": {"method": "gblend", "every": 3, "floor": 0.05}})],
        "yaml train:": ["--config", _yaml(tmp_path, {"train": {"balance": {"method": "gblend", "every": 3,
                                                                           "floor": 0.05}}})],
    }[route]
    assert _train(argv, tmp_path, monkeypatch).train.balance == WANT


def test_train_settings_override_the_yaml_option_by_option(tmp_path, monkeypatch) -> None:
    config = _yaml(tmp_path, {"balance": {"method": "gblend", "every": 3, "floor": 0.2}})
    assert _train(["--config", config, "balance.floor=0.05"], tmp_path, monkeypatch).train.balance == WANT


@pytest.mark.parametrize("route", ["flag", "key=value", "yaml", "yaml train:"])
def test_bench_reaches_the_methods_and_their_options_by_every_route(route, tmp_path, monkeypatch) -> None:
    argv = {
        "flag": ["--balance", "gblend,aux", "balance.every=3", "train.balance.floor=0.05"],
        "key=value": ["balance=gblend,aux", "balance.every=3", "balance.floor=0.05"],
        "yaml": ["--config", _yaml(tmp_path, {"balance": ["gblend", "aux"], "balance.every": 3,
                                              "balance.floor": 0.05})],
        "yaml train:": ["--config", _yaml(tmp_path, {"balance": ["gblend", "aux"],
                                                     "train": {"balance": {"every": 3, "floor": 0.05}}})],
    }[route]
    config = _bench([*argv, "--out", str(tmp_path / "b")], monkeypatch)
    assert config.balance == ["gblend", "aux"]
    assert config.train.balance == BalanceOptions(every=3, floor=0.05)
    from mmfuse.bench.grid import build_grid

    runs = build_grid(config, fusions=["late"], modalities_of=lambda d: ["x0", "x1"], models_dir=str(tmp_path))
    balanced = {r.spec.train.balance for r in runs if r.spec.train.balance.method is not None}
    assert balanced == {WANT, BalanceOptions(method="aux", every=3, floor=0.05)}


@pytest.mark.parametrize(("argv", "match"), [
    (["balance.gamma=2"], r"balance.gamma=2.0 is read by no balancing method that runs \(balancing is off\)"),
    (["balance=aux", "balance.gamma=2"], r"balance.gamma=2.0 is read by no .*\(aux\).*mmpareto reads gamma"),
    (["balance_weight=2"], r"'balance_weight' is now 'balance.weight'"),
    (["balance.wieght=2"], r"unknown balance option 'wieght'"),
])
def test_train_refuses_an_option_it_would_ignore_or_an_old_name(argv, match, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("mmfuse.experiment.command.prepare_run_folder", lambda *a, **k: pytest.fail("train ran"))
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) != 0
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize(("argv", "match"), [
    (["--balance", "aux", "balance.gamma=2"], r"balance.gamma=2.0 is read by no .*\(aux\)"),
    (["train.balance=aux"], r"train.balance.method='aux': .*--balance"),
    (["ogm_alpha=0.5"], r"'ogm_alpha' is now 'balance.alpha'"),
])
def test_bench_refuses_an_option_it_would_ignore_a_method_in_train_or_an_old_name(argv, match, tmp_path,
                                                                                  monkeypatch, capsys) -> None:
    monkeypatch.setattr("mmfuse.bench.run_bench", lambda *a, **k: pytest.fail("the bench ran"))
    assert main(["bench", *argv, "--out", str(tmp_path / "b")]) != 0
    assert re.search(match, capsys.readouterr().err)


def _spec(**train: Any) -> ExperimentSpec:
    return ExperimentSpec(data=DataSpec("synthetic", options={"n": 100}), model=ModelSpec(fusion="late"),
                          train=TrainConfig(**train))


def test_the_training_key_holds_balancing_only_when_on_and_only_what_the_method_reads() -> None:
    off = _spec()
    # off: no balance entry at all, and the key is the hash of exactly that identity
    train = off.weights_identity()["train"]
    assert "balance" not in train and not {"balance_weight", "ogm_alpha", "gblend_every", "pareto_gamma",
                                           "gblend_floor"} & set(train)
    assert off.key == stable_hash({"schema": SPEC_SCHEMA, "data": off.data.identity(), "model": off.model.to_json(),
                                   "train": train})
    assert _spec(balance={"weight": 5, "gamma": 3}).key == off.key  # options of no method: not in the key
    aux = _spec(balance={"method": "aux", "weight": 2})
    assert aux.weights_identity()["train"]["balance"] == {"method": "aux", "weight": 2.0}
    assert _spec(balance={"method": "aux", "weight": 2, "gamma": 3, "every": 4}).key == aux.key  # unread by aux
    assert _spec(balance={"method": "aux", "weight": 3}).key != aux.key
    assert _spec(balance={"method": "gblend"}).weights_identity()["train"]["balance"] == {
        "method": "gblend", "every": 1, "floor": 0.01}
    assert len({off.key, aux.key, _spec(balance="gblend").key, _spec(balance="ogm_ge").key,
                _spec(balance="mmpareto").key}) == 5


def test_the_balance_flag_names_every_registered_method_and_option(capsys) -> None:
    """``--balance``'s help is written out (the parser imports no torch): it must not drift
    from the registry."""
    from mmfuse.training.balance import balance_methods

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text.rsplit("--balance BALANCE", 1)[1].split("(default: none)", 1)[0]  # the help, not the usage
    assert [m.strip() for m in listed.split(":", 1)[1].split(",")] == balance_methods()
    for option in BalanceOptions.option_names():
        assert f"balance.{option}" in text
