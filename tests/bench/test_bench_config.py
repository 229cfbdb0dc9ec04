"""Bench settings (defaults, YAML, flag overrides, bad values) and the grid they make."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfuse.bench import BenchConfig, BenchConfigError, RunSpec, build_grid, load_config
from mmfuse.bench.grid import STANDARD, UNIMODAL, WITH_DROPOUT
from mmfuse.cli import build_parser, main


def _mods(dataset: str, options: object) -> tuple[str, ...]:
    return {"mfeat": ("fac", "fou", "kar"), "synthetic": ("x1", "x2")}[dataset]


def test_defaults_are_the_readme_command() -> None:
    cfg = BenchConfig()
    assert cfg.datasets == ["synthetic"] and cfg.fusions is None and cfg.seeds == 3
    assert cfg.modality_dropout == 0.3 and cfg.dropout_seeds == 1 and cfg.noise_scales == [0.0, 0.5, 1.0, 2.0]


def test_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("datasets: [mfeat]\nseeds: 5\nepochs: 7\nfusion_options:\n  gated: {hidden: 8}\n"
                    "dataset_options:\n  synthetic: {n: 300}\n")
    cfg = load_config(path)
    assert cfg.datasets == ["mfeat"] and cfg.seeds == 5 and cfg.epochs == 7
    assert cfg.fusion_options == {"gated": {"hidden": 8}}
    assert cfg.options_for("synthetic") == {"n": 300}
    cfg = load_config(path, seeds=2, epochs=None, datasets=["all"])  # None: flag not given
    assert cfg.seeds == 2 and cfg.epochs == 7
    assert cfg.datasets == ["avdigits", "mfeat", "reviews", "synthetic"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sedes: 3\n", "unknown key 'sedes'"),
        ("seeds: three\n", "seeds: expected an int"),
        ("seeds: 0\n", "seeds: expected an int >= 1"),
        ("datasets: [imagenet]\n", "unknown dataset 'imagenet'"),
        ("modality_dropout: 1.5\n", "modality_dropout"),
        ("executor: slurm\n", "executor"),
        ("noise_scales: [0, -1]\n", "noise_scales"),
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
    assert cfg.seeds == 2 and cfg.epochs == 3 and cfg.jobs == 1 and cfg.noise_scales == [0.0, 1.0]
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
    specs = build_grid(cfg, fusions=["early", "gated"], modalities_of=_mods)
    # per synthetic task: 2 unimodal x 3 + 2 fusions x 3 + 2 fusions x 1; mfeat: 3 unimodal x 3 + ... = 17
    assert len(specs) == 2 * 14 + 17
    assert len({s.key for s in specs}) == len(specs)
    labels = {s.dataset_label for s in specs}
    assert labels == {"synthetic/redundancy", "synthetic/synergy", "mfeat"}
    syn = [s for s in specs if s.dataset_label == "synthetic/synergy"]
    assert all(s.dataset_options["task"] == "synergy" and s.dataset_options["n"] == 2000 for s in syn)
    assert {s.label for s in syn} == {"uni:x1", "uni:x2", "early", "gated"}
    drop = [s for s in specs if s.variant == WITH_DROPOUT]
    assert drop and all(s.model != UNIMODAL and s.seed == 0 and s.train["modality_dropout"] == 0.3 for s in drop)
    assert all(s.train["modality_dropout"] == 0.0 for s in specs if s.variant == STANDARD)
    assert all(s.fusion_options == ({"hidden": 8} if s.model == "gated" else {}) for s in specs)
    # intermediates are kept once per strategy and dataset
    kept = [s for s in specs if s.intermediates_samples]
    assert len(kept) == 3 * 2 and all(s.seed == 0 and s.variant == STANDARD and not s.is_unimodal for s in kept)


def test_run_key_is_a_hash_of_every_setting() -> None:
    a = RunSpec(dataset="mfeat", dataset_label="mfeat", model="early", seed=0, train={"epochs": 3})
    assert a.key == RunSpec.from_dict(a.to_dict()).key
    assert a.key == RunSpec(dataset="mfeat", dataset_label="mfeat", model="early", seed=0, train={"epochs": 3},
                            data_root="/elsewhere").key
    for change in ({"seed": 1}, {"train": {"epochs": 4}}, {"fusion_options": {"x": 1}}, {"hidden_dim": 32},
                   {"variant": WITH_DROPOUT}, {"dataset_options": {"n": 5}}):
        assert RunSpec(**{**a.to_dict(), **change}).key != a.key, change


def test_dropout_variant_off() -> None:
    cfg = BenchConfig(modality_dropout=0.0, seeds=2)
    specs = build_grid(cfg, fusions=["early"], modalities_of=_mods)
    assert {s.variant for s in specs} == {STANDARD}
    assert len(specs) == 3 * (2 + 1) * 2
