"""The README cannot drift: every Python snippet runs, every ``mmfuse`` command line parses into a valid config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[str]:
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("mmfuse "):
                out.append(line)
    return out


def test_the_readme_has_snippets_and_commands() -> None:
    assert len(_blocks("python")) >= 2 and len(_commands()) >= 10


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})  # noqa: S102


@pytest.mark.parametrize("line", _commands())
def test_every_command_parses_and_its_settings_are_valid(line: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command's flags parse, and for train and bench its settings resolve into a
    valid config (nothing is trained: the training and bench entry points are replaced)."""
    import mmfuse.bench
    import mmfuse.experiment.command
    from mmfuse import cli

    argv = shlex.split(line)[1:]
    seen: dict[str, object] = {}

    def fake_bench(config, **kw):
        seen["bench"] = config
        return type("Outcome", (), {"failed": 0})()

    def fake_train(settings, **kw):
        from mmfuse.experiment.config import experiment_from_settings

        seen["train"] = experiment_from_settings(settings, dataset=kw["dataset"], fusion=kw["fusion"],
                                                 unimodal=kw["unimodal"], data_root=None)
        return 0

    def fake_predict(run, **kw):
        seen["predict"] = (run, kw)
        return 0

    def fake_serve(run, **kw):
        seen["serve"] = (run, kw)
        return 0

    def fake_export(run, **kw):
        seen["export"] = (run, kw)
        return 0

    monkeypatch.setattr("mmfuse.runs.serve.serve_command", fake_serve)
    monkeypatch.setattr("mmfuse.runs.export.export_command", fake_export)
    monkeypatch.setattr(mmfuse.bench, "run_bench", fake_bench)
    monkeypatch.setattr("mmfuse.runs.command.predict_command", fake_predict)
    monkeypatch.setattr(mmfuse.experiment.command, "train_command", fake_train)
    monkeypatch.chdir(tmp_path)
    for i, arg in enumerate(argv[:-1]):  # a user's table is only fingerprinted here: any file will do
        if arg == "--data" and not Path(argv[i + 1]).is_absolute():  # (an absolute one: predict's, faked)
            (tmp_path / argv[i + 1]).write_text("label\n1\n")
        if arg == "--base-dir":  # a folder the command checks exists
            (tmp_path / argv[i + 1]).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr("mmfuse.data.download", lambda name, root=None: tmp_path, raising=False)
    monkeypatch.setattr("mmfuse.data.verify", lambda name, root=None: [], raising=False)
    if argv[:2] == ["data", "inspect"]:
        # it reads the user's file (its loading is covered by the data inspect tests): here its flags
        # must parse into a target, and nothing else be left over
        args, extra = cli.build_parser().parse_known_args(argv)
        assert args.target and not extra, line
        return
    assert cli.main(argv) == 0, line
    command = argv[0]
    if command in ("train", "bench", "predict", "serve", "export"):
        assert command in seen, f"{line}: the {command} entry point was not reached"
    if "--data" in argv and command in ("train", "bench"):
        path = str((tmp_path / argv[argv.index("--data") + 1]).resolve())
        if command == "train":
            options = seen["train"].data.options
        else:
            options = seen["bench"].options_for("table")
        assert options["path"] == path, line  # the user's table reached the loader's options
        assert options["fingerprint"], line
