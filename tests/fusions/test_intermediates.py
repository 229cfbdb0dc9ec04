"""docs/intermediates.md says which intermediates each strategy gives: checked here by
running every registered strategy (default options, three sequence modalities) with
``return_intermediates=True``, so the table cannot drift."""

from __future__ import annotations

from pathlib import Path

import torch

import mmfuse

FIELDS = ("gates", "attention", "modality_weights", "contributions", "present")


def intermediates_table() -> str:
    rows = ["| strategy | " + " | ".join(f"`{f}`" for f in FIELDS) + " | `extras` keys |", "|---|" + "---|" * (len(FIELDS) + 1)]
    for name in mmfuse.list_fusions():
        torch.manual_seed(0)
        fusion = mmfuse.create_fusion(name, input_dims={"a": 4, "b": 5, "c": 6}, output_dim=3).eval()
        inputs = {m: torch.randn(2, 3, d) for m, d in fusion.input_dims.items()}
        _, info = fusion(inputs, return_intermediates=True)
        cells = ["yes" if getattr(info, f) is not None else "-" for f in FIELDS]
        extras = ", ".join(f"`{k}`" for k in sorted(info.extras)) or "-"
        rows.append(f"| `{name}` | " + " | ".join(cells) + f" | {extras} |")
    return "\n".join(rows)


def test_doc_table_is_what_the_strategies_give() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "intermediates.md").read_text()
    table = intermediates_table()
    assert table in doc, "docs/intermediates.md is stale; the current table is:\n" + table


def test_modality_weights_are_per_sample_distributions_over_present_modalities() -> None:
    checked = []
    for name in mmfuse.list_fusions():
        fusion = mmfuse.create_fusion(name, input_dims={"a": 4, "b": 5, "c": 6}, output_dim=3).eval()
        inputs = {m: torch.randn(4, d) for m, d in fusion.input_dims.items()}
        masks = {"a": torch.tensor([True, False, True, True]), "b": torch.tensor([True, True, False, True])}
        _, info = fusion(inputs, masks, return_intermediates=True)
        if info.modality_weights is None:
            continue
        w = info.modality_weights
        assert w.shape == (4, 3), name
        torch.testing.assert_close(w.sum(dim=1), torch.ones(4), msg=f"{name}: rows do not sum to 1")
        assert torch.all(w[~info.present] == 0), f"{name}: a missing modality has weight"
        checked.append(name)
    # the strategies documented to weigh modalities per sample (README, docs/intermediates.md) did
    assert {"gated", "late"} <= set(checked), checked
