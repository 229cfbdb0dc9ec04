"""Bench settings (defaults, YAML, flag overrides, bad values) and the grid they make."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfuse.bench import BenchConfig, BenchConfigError, build_grid, load_config
from mmfuse.bench.config import DEFAULT_TRAIN
from mmfuse.cli import build_parser, main
from mmfuse.experiment import DataSpec, ExperimentSpec, MeasureConfig, ModelSpec, Variant
from mmfuse.training import TrainConfig


def _mods(data: DataSpec) -> tuple[str, ...]:
    return {"mfeat": ("fac", "fou", "kar"), "synthetic": ("x1", "x2")}[data.name]


def test_defaults_are_the_readme_command() -> None:
    cfg = BenchConfig()
    assert cfg.datasets == ["synthetic"] and cfg.fusions is None and cfg.seeds == 3
    assert cfg.modality_dropout == 0.3 and cfg.dropout_seeds == 1 and cfg.measure.noise_scales == (0.5, 1.0, 2.0)
    assert cfg.train == DEFAULT_TRAIN and cfg.train.epochs == 15 and cfg.train.progress is False


def test_yaml_then_settings_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("datasets: [mfeat]\nseeds: 5\nepochs: 7\nfusion_options:\n  gated: {hidden: 8}\n"
                    "dataset_options:\n  synthetic: {n: 300}\ntrain:\n  precision: bf16-mixed\n  lr: 1\n"
                    "measure:\n  noise_scales: [1, 3]\n")
    cfg = load_config(path)
    assert cfg.datasets == ["mfeat"] and cfg.seeds == 5 and cfg.train.epochs == 7
    assert cfg.train.precision == "bf16-mixed" and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.patience == DEFAULT_TRAIN.patience  # the bench's defaults stay where not set
    assert cfg.measure.noise_scales == (1.0, 3.0)
    assert cfg.fusion_options == {"gated": {"hidden": 8}}
    assert cfg.options_for("synthetic") == {"n": 300}
    cfg = load_config(path, seeds=2, epochs=None, datasets=["all"])  # None: flag not given
    assert cfg.seeds == 2 and cfg.train.epochs == 7
    assert cfg.datasets == ["avdigits", "mfeat", "reviews", "synthetic"]
    # every TrainConfig field is settable, with the key=value syntax of mmfuse train
    cfg = load_config(path, settings=["devices=2", "train.weight_decay=0", "measure.intermediates_samples=0",
                                      "seeds=4"], epochs=9)
    assert cfg.train.devices == 2 and cfg.train.weight_decay == 0 and cfg.train.epochs == 9 and cfg.seeds == 4
    assert cfg.measure.intermediates_samples == 0


def test_yaml_aliases_and_huge_files_are_refused_at_once(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchConfigError, match="aliases are not allowed"):
        load_config(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("seeds: 1\n" + "#" * (2 << 20))
    with pytest.raises(BenchConfigError, match="more than the"):
        load_config(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("seeds: 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(BenchConfigError, match=r"latin.yaml.*not UTF-8"):
        load_config(latin)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sedes: 3\n", "unknown key 'sedes'"),
        ("train: {epoch: 3}\n", "unknown training setting 'epoch'"),
        ("train: {lr: 0}\n", "lr"),
        ("seeds: three\n", "seeds: expected an int"),
        ("seeds: 0\n", "seeds: expected an int >= 1"),
        ("datasets: [imagenet]\n", "unknown dataset 'imagenet'"),
        ("modality_dropout: 1.5\n", "modality_dropout"),
        ("executor: slurm\n", "executor"),
        ("noise_scales: [0, -1]\n", "noise_scales"),
        ("ray_address: x:1\n", "add --executor ray"),
        ("synthetic_tasks: [xor]\n", "unknown task 'xor'"),
        ("fusion_options: [1, 2]\n", "fusion_options"),
        ("[1, 2]\n", "expected a mapping"),
        ("seeds: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_raise(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(BenchConfigError, match=match):
        load_config(path)


def test_missing_config_file_and_unknown_override(tmp_path: Path) -> None:
    with pytest.raises(BenchConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(BenchConfigError, match="unknown setting 'colour'"):
        BenchConfig().replace(colour="red")
    with pytest.raises(BenchConfigError, match="unknown key 'colour'"):
        load_config(settings=["colour=red"])


def test_cli_flags_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, BenchConfig] = {}

    def fake_run_bench(config: BenchConfig, **kw: object) -> object:
        seen["cfg"] = config
        return type("Outcome", (), {"failed": 0})()

    monkeypatch.setattr("mmfuse.bench.run_bench", fake_run_bench)
    path = tmp_path / "b.yaml"
    path.write_text("seeds: 4\njobs: 1\n")
    rc = main(["bench", "--config", str(path), "--dataset", "mfeat,synthetic", "--fusions", "early,gated",
               "--seeds", "2", "--epochs", "3", "--noise-scales", "0,1", "--executor", "serial",
               "--out", str(tmp_path / "o"), "--no-unimodal"])
    cfg = seen["cfg"]
    assert rc == 0
    assert cfg.datasets == ["mfeat", "synthetic"] and cfg.fusions == ["early", "gated"]
    assert cfg.seeds == 2 and cfg.train.epochs == 3 and cfg.jobs == 1 and cfg.measure.noise_scales == (1.0,)
    assert cfg.executor == "serial" and cfg.unimodal is False and cfg.out == str(tmp_path / "o")


def test_cli_reports_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--dataset", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["bench", "--fusions", "no_such_fusion", "--dataset", "synthetic"]) == 2
    assert "unknown strategy 'no_such_fusion'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--executor", "slurm"])


def test_grid_counts_variants_and_keys() -> None:
    cfg = BenchConfig(datasets=["synthetic", "mfeat"], synthetic_tasks=["redundancy", "synergy"], seeds=3,
                      dropout_seeds=1, fusion_options={"gated": {"hidden": 8}})
    runs = build_grid(cfg, fusions=["early", "gated"], modalities_of=_mods)
    # per synthetic task: 2 unimodal x 3 + 2 fusions x 3 + 2 fusions x 1; mfeat: 3 unimodal x 3 + ... = 17
    assert len(runs) == 2 * 14 + 17
    assert len({r.key for r in runs}) == len(runs) == len({r.train_key for r in runs})
    labels = {r.spec.data.display for r in runs}
    assert labels == {"synthetic/redundancy", "synthetic/synergy", "mfeat"}
    syn = [r for r in runs if r.spec.data.display == "synthetic/synergy"]
    assert all(r.spec.data.options["task"] == "synergy" and r.spec.data.options["n"] == 2000 for r in syn)
    assert {r.label for r in syn} == {"uni:x1", "uni:x2", "early", "gated"}
    drop = [r for r in runs if r.spec.variant is Variant.MODALITY_DROPOUT]
    assert drop and all(r.spec.model.unimodal is None and r.spec.seed == 0 for r in drop)
    assert all(r.spec.train.modality_dropout == 0.3 for r in drop)
    assert all(r.spec.train.modality_dropout == 0.0 for r in runs if r.spec.variant is not Variant.MODALITY_DROPOUT)
    assert all(r.spec.model.fusion_options == ({"hidden": 8} if r.label == "gated" else {}) for r in runs)
    # intermediates are kept once per strategy and dataset
    kept = [r for r in runs if r.measure.intermediates_samples]
    assert len(kept) == 3 * 2 and all(r.spec.seed == 0 and r.spec.variant is Variant.STANDARD for r in kept)


def test_training_key_hashes_what_changes_the_weights_and_nothing_else() -> None:
    a = ExperimentSpec(data=DataSpec("mfeat"), model=ModelSpec(fusion="early"), train=TrainConfig(epochs=3))
    assert a.key == ExperimentSpec.from_json(a.to_json()).key
    # where the data lives, or how loud the fit is, does not change the weights
    assert a.key == a.replace(data=DataSpec("mfeat", root="/elsewhere", label="x")).key
    assert a.key == a.replace(train=a.train.replace(progress=False, num_workers=2)).key
    for change in ({"train": a.train.replace(seed=1)}, {"train": a.train.replace(epochs=4)},
                   {"model": ModelSpec(fusion="early", fusion_options={"dropout": 0.1})},
                   {"model": ModelSpec(fusion="early", hidden_dim=32)},
                   {"train": a.train.replace(modality_dropout=0.3)},
                   {"data": DataSpec("mfeat", options={"n": 5})}, {"data": DataSpec("mfeat", seed=1)}):
        assert a.replace(**change).key != a.key, change
    # the measurement key adds the test-time settings to the training key
    from mmfuse.experiment import measure_key

    m1, m2 = MeasureConfig(noise_scales=(1.0,)), MeasureConfig(noise_scales=(1.0, 2.0))
    assert measure_key(a.key, m1) != measure_key(a.key, m2)
    assert measure_key(a.key, m1) == measure_key(a.key, MeasureConfig(noise_scales=(0.0, 1.0)))  # 0 is clean


def test_dropout_variant_off() -> None:
    cfg = BenchConfig(modality_dropout=0.0, seeds=2)
    runs = build_grid(cfg, fusions=["early"], modalities_of=_mods)
    assert {r.spec.variant for r in runs} == {Variant.STANDARD, Variant.UNIMODAL}
    assert len(runs) == len(cfg.synthetic_tasks) * (2 + 1) * 2
