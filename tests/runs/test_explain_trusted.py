"""``Run.explain`` / ``mmfuse predict --explain`` of a ``trusted`` model: the uncertainty of
each prediction and each modality's own opinion, as the strategy's intermediates give them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _toy_reviews import toy_reviews, train_toy

import mmfuse
from mmfuse.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy(tmp_path_factory.mktemp("trusted-run"), "trusted", "hidden_dim=8", "fusion.hidden_dims=[]",
                     rows=240, interaction=False)


def test_explain_gives_the_uncertainty_and_each_modalitys_opinion(trained: Path, tmp_path: Path) -> None:
    run = mmfuse.load_run(trained)
    mods = run.model.fusion.modalities
    new = toy_reviews(12, 1, interaction=False).drop(columns=["y"])
    new.loc[[2, 5], "review"] = None  # the text modality missing on two rows
    ex = run.explain(new)
    cols = ["uncertainty", *(f"uncertainty_{m}" for m in mods), *(f"belief_{m}" for m in mods)]
    assert set(cols) <= set(ex.columns)
    # the values of the strategy's own intermediates, in the explained class
    t = run.transform(new)
    with torch.inference_mode():
        out, info = run.model(t.inputs, t.masks, return_intermediates=True)
    k = out.argmax(-1).numpy()
    np.testing.assert_allclose(ex["uncertainty"], info.extras["uncertainty"].numpy(), rtol=1e-6)
    for i, m in enumerate(mods):
        np.testing.assert_allclose(ex[f"uncertainty_{m}"], info.extras["modality_uncertainty"][:, i].numpy(), rtol=1e-6)
        np.testing.assert_allclose(ex[f"belief_{m}"], info.extras["modality_belief"][np.arange(12), i, k].numpy(),
                                   rtol=1e-6)
    text = next(m for m in mods if m == "review")
    assert (ex.loc[[2, 5], f"uncertainty_{text}"] == 1).all() and (ex.loc[[2, 5], f"belief_{text}"] == 0).all()
    assert ((ex["uncertainty"] > 0) & (ex["uncertainty"] <= 1)).all()
    # the command line writes the same columns
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(trained), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"),
                 "--explain"]) == 0
    got = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(got["uncertainty"], ex["uncertainty"], rtol=1e-6)
