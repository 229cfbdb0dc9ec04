"""What ``import mmfuse`` loads: nothing heavy until it is used (checked by module names, not timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "scipy", "pandas", "pyarrow", "lightning", "matplotlib", "ray", "cvxpy", "transformers")


def _loaded(code: str) -> list[str]:
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_mmfuse_loads_nothing_heavy() -> None:
    assert _loaded("import mmfuse") == []


def test_the_command_line_parser_loads_nothing_heavy() -> None:
    # what `mmfuse --help` runs before it prints
    assert _loaded("from mmfuse.cli import build_parser\nbuild_parser().format_help()") == []


def test_building_a_model_loads_torch_but_no_data_or_training_stack() -> None:
    assert _loaded("import mmfuse\nmmfuse.build_model\nmmfuse.create_fusion") == ["torch"]


def test_lazy_names_are_the_real_ones() -> None:
    import mmfuse
    import mmfuse.data
    from mmfuse.data.table import from_table
    from mmfuse.fusions import create_fusion

    assert mmfuse.create_fusion is create_fusion and mmfuse.data.from_table is from_table
    assert set(mmfuse.__all__) <= set(dir(mmfuse))
    for name in mmfuse.__all__:  # every public name resolves (dir() lists the lazy keys by construction)
        assert getattr(mmfuse, name) is not None, name
    import mmfuse.data

    for name in mmfuse.data.__all__:
        assert getattr(mmfuse.data, name) is not None, f"mmfuse.data.{name}"
    assert "synthetic" in mmfuse.list_datasets()
    assert mmfuse.fusions.create_fusion is create_fusion  # subpackages are attributes, as before
    import mmfuse.training

    for name in mmfuse.training.__all__:  # lazy names point at the module that defines them
        assert getattr(mmfuse.training, name) is not None, f"mmfuse.training.{name}"


def test_evaluating_and_loading_a_checkpoint_do_not_load_lightning() -> None:
    # only fit and the parts of it (module, resume, loaders, console, launch) need Lightning;
    # prediction shares the thread rule (training.threads) without it
    code = "from mmfuse.training import TrainConfig, evaluate, load_checkpoint\nimport mmfuse.training.threads"
    assert "lightning" not in _loaded(code)


def test_mmfuse_list_loads_nothing_heavy() -> None:
    code = ("import contextlib, io\nfrom mmfuse.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])")
    assert _loaded(code) == []


def test_the_source_catalogue_is_the_live_registry() -> None:
    from mmfuse._catalogue import builtin_fusions
    from mmfuse.fusions import fusion_class, list_fusions

    catalogue = builtin_fusions()
    assert list(catalogue) == list_fusions()
    for name, summary in catalogue.items():
        assert summary == (fusion_class(name).__doc__ or "").strip().splitlines()[0]


def test_mmfuse_list_prints_every_strategy_with_its_summary(capsys) -> None:
    from mmfuse.cli import main
    from mmfuse.fusions import fusion_class, list_fusions

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_fusions()
    first = (fusion_class("gated").__doc__ or "").strip().splitlines()[0]
    assert any(line.startswith("gated ") and line.endswith(first) for line in lines)


def test_building_a_model_does_not_load_the_compiler() -> None:
    # torch._dynamo costs about a second to import; only torch.compile needs it
    probe = ("import mmfuse, sys\nimport torch\n"
             "f = mmfuse.create_fusion('gated', input_dims={'a': 4, 'b': 4}, output_dim=4)\n"
             "f({'a': torch.ones(2, 4), 'b': torch.ones(2, 4)}, {'a': torch.tensor([True, False])})\n"
             "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_lower_layers_never_import_the_bench() -> None:
    """The bench sits on top: data, encoders, fusions, models, training and experiment (the
    measuring of one run) import nothing from it, not even inside a function."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "mmfuse"
    upward = []
    for layer in ("data", "encoders", "fusions", "models", "training", "experiment"):
        for path in sorted((root / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                upward += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names
                           if n == "mmfuse.bench" or n.startswith("mmfuse.bench.")]
    assert not upward, upward
