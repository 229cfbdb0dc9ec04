"""A small reviews-like table (a short text, an age, a size) and a model ``mmfuse train`` fits
on it: the run-bundle tests of serving, Ray prediction and explanation share them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.cli import main

WORDS = ["great", "lovely", "poor", "thin", "soft", "small", "fit", "colour", "fabric", "seams"]


def toy_reviews(n: int, seed: int, *, interaction: bool = True) -> pd.DataFrame:
    """``n`` rows of five words from :data:`WORDS`, an age and a size; ``y`` is 1 for a review
    with a praising word, flipped for size L when ``interaction`` (so both modalities matter)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"review": [" ".join(rng.choice(WORDS, 5)) for _ in range(n)],
                       "age": rng.integers(18, 70, n).astype(float), "size": rng.choice(["S", "M", "L"], n)})
    praise = df["review"].str.contains("great|lovely")
    df["y"] = ((praise ^ (df["size"] == "L")) if interaction else praise).astype(int)
    return df


def train_toy(folder: Path, fusion: str, *settings: str, rows: int = 300, interaction: bool = True) -> Path:
    """``mmfuse train`` of ``fusion`` on :func:`toy_reviews` (``rows``, seed 0) written to
    ``folder/train.csv``, for 2 epochs on one thread; returns the run bundle's folder."""
    toy_reviews(rows, 0, interaction=interaction).to_csv(folder / "train.csv", index=False)
    out = folder / "run"
    assert main(["train", "--data", str(folder / "train.csv"), "--target", "y", "--fusion", fusion, "--out",
                 str(out), "epochs=2", "threads=1", *settings]) == 0
    return out
