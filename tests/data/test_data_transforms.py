"""Batch transforms: modality dropout, missing modality, noise; never in place."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mmfuse.data import Compose, GaussianNoise, MissingModality, ModalityDropout
from mmfuse.data.synthetic import load_synthetic
from mmfuse.errors import ConfigError, DataError


def _batch(b: int = 2000, *, seq_mask: bool = True) -> dict:
    g = torch.Generator().manual_seed(1)
    masks = {"a": torch.ones(b, dtype=torch.bool), "b": torch.ones(b, dtype=torch.bool)}
    inputs = {"a": torch.randn(b, 4, generator=g), "b": torch.randn(b, 3, generator=g)}
    if seq_mask:
        inputs["c"] = torch.randn(b, 5, 2, generator=g)
        masks["c"] = torch.arange(5)[None, :] < torch.randint(1, 6, (b, 1), generator=g)
    return {"inputs": inputs, "masks": masks, "label": torch.zeros(b, dtype=torch.long)}


def _present(batch: dict) -> torch.Tensor:
    return torch.stack(
        [m if m.dim() == 1 else m.any(-1) for _, m in sorted(batch["masks"].items())], 1
    )


def _snapshot(batch: dict) -> dict:
    return {
        k: {m: t.clone() for m, t in v.items()} if isinstance(v, dict) else v.clone()
        for k, v in batch.items()
    }


def _same(a: dict, b: dict) -> bool:
    return all(
        torch.equal(a[k], b[k])
        if not isinstance(a[k], dict)
        else all(torch.equal(a[k][m], b[k][m]) for m in a[k])
        for k in a
    )


def test_dropout_rate_zero_is_identity_and_not_in_place() -> None:
    batch = _batch()
    before = _snapshot(batch)
    out = ModalityDropout(0.0)(batch)
    assert _same(out, before) and _same(batch, before)
    out = ModalityDropout(0.5, generator=torch.Generator().manual_seed(0))(batch)
    assert _same(batch, before)  # the input batch is untouched
    assert out is not batch and out["masks"] is not batch["masks"]


def test_dropout_rate_matches_and_never_drops_everything() -> None:
    batch = _batch(20000)
    out = ModalityDropout(0.3, generator=torch.Generator().manual_seed(0))(batch)
    present = _present(out)
    assert bool(present.any(1).all())
    # Each modality is dropped with p = 0.3, except where all three were drawn (p = 0.027):
    # then one of the three comes back, so the drop rate is 0.3 - 0.027 / 3.
    rate = 1 - present.float().mean(0)
    assert torch.allclose(rate, torch.full((3,), 0.3 - 0.027 / 3), atol=0.015)
    # A dropped token mask is all False; a kept one is unchanged.
    c_in, c_out = batch["masks"]["c"], out["masks"]["c"]
    kept = present[:, 2]
    assert torch.equal(c_out[kept], c_in[kept]) and not bool(c_out[~kept].any())
    assert torch.equal(out["inputs"]["a"], batch["inputs"]["a"])  # values untouched, masks carry it


def test_dropout_rate_one_keeps_exactly_one_at_random() -> None:
    out = ModalityDropout(1.0, generator=torch.Generator().manual_seed(0))(_batch(3000))
    present = _present(out)
    assert bool((present.sum(1) == 1).all())
    share = present.float().mean(0)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.04)


def test_dropout_respects_modalities_and_already_missing() -> None:
    batch = _batch(1000, seq_mask=False)
    batch["masks"]["b"][:100] = False  # b already missing in the first 100 samples
    out = ModalityDropout(1.0, modalities=["a"], generator=torch.Generator().manual_seed(0))(batch)
    assert torch.equal(out["masks"]["b"], batch["masks"]["b"])
    # a is dropped wherever b is present, and kept where it is the only one left.
    assert not bool(out["masks"]["a"][100:].any())
    assert bool(out["masks"]["a"][:100].all())
    # A sample with no modality at all stays as it is.
    batch["masks"]["a"][:10] = False
    out = ModalityDropout(1.0, generator=torch.Generator().manual_seed(0))(batch)
    assert not bool(_present(out)[:10].any())


def test_dropout_is_seeded_by_its_generator() -> None:
    batch = _batch(500)
    a = ModalityDropout(0.4, generator=torch.Generator().manual_seed(3))(batch)
    b = ModalityDropout(0.4, generator=torch.Generator().manual_seed(3))(batch)
    c = ModalityDropout(0.4, generator=torch.Generator().manual_seed(4))(batch)
    assert _same(a, b) and not _same(a, c)


def test_dropout_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"rate must be in \[0, 1\]"):
        ModalityDropout(1.5)
    with pytest.raises(DataError, match="modality 'zz' not in the batch"):
        ModalityDropout(0.5, modalities=["zz"])(_batch(4))


def test_missing_modality() -> None:
    batch = _batch(8)
    before = _snapshot(batch)
    out = MissingModality("c")(batch)
    assert out["masks"]["c"].shape == (8, 5) and not bool(out["masks"]["c"].any())
    assert torch.equal(out["masks"]["a"], batch["masks"]["a"])
    assert _same(batch, before)
    # A batch without masks gets (b,) masks, the missing one all False.
    out = MissingModality("a")(
        {"inputs": {"a": torch.zeros(3, 2), "b": torch.zeros(3, 2)}, "label": torch.zeros(3)}
    )
    assert out["masks"]["a"].tolist() == [False] * 3 and out["masks"]["b"].tolist() == [True] * 3
    with pytest.raises(DataError, match="modality 'x' not in the batch"):
        MissingModality("x")(batch)


def test_gaussian_noise_on_floats() -> None:
    batch = _batch(4000, seq_mask=False)
    before = _snapshot(batch)
    out = GaussianNoise("a", 0.5, seed=7)(batch)
    diff = out["inputs"]["a"] - batch["inputs"]["a"]
    assert diff.std().item() == pytest.approx(0.5, rel=0.03) and diff.mean().abs() < 0.02
    assert torch.equal(out["inputs"]["b"], batch["inputs"]["b"]) and _same(batch, before)
    # Seeded: a fresh transform with the same seed gives the same noise; calls advance it.
    t = GaussianNoise("a", 0.5, seed=7)
    first = t(batch)["inputs"]["a"]
    assert torch.equal(first, out["inputs"]["a"])
    assert not torch.equal(t(batch)["inputs"]["a"], first)
    # Only the first `features` columns (tabular numerics) are touched.
    part = GaussianNoise("a", 1.0, features=2)(batch)["inputs"]["a"]
    assert torch.equal(part[:, 2:], batch["inputs"]["a"][:, 2:])
    assert not torch.equal(part[:, :2], batch["inputs"]["a"][:, :2])
    assert torch.equal(GaussianNoise("a", 0.0)(batch)["inputs"]["a"], batch["inputs"]["a"])


def test_gaussian_noise_on_token_ids_replaces_a_fraction() -> None:
    ids = torch.randint(2, 50, (2000, 16))
    ids[:, 10:] = 0  # padding
    batch = {
        "inputs": {"text": ids},
        "masks": {"text": torch.ones(2000, dtype=torch.bool)},
        "label": ids[:, 0],
    }
    out = GaussianNoise("text", 0.25, vocab_size=1000, seed=1)(batch)["inputs"]["text"]
    assert out.dtype == torch.long
    assert torch.equal(out[:, 10:], ids[:, 10:])  # padding never replaced
    changed = (out[:, :10] != ids[:, :10]).float().mean().item()
    assert changed == pytest.approx(0.25 * (1 - 1 / 998), abs=0.02)  # a redraw may hit the same id
    assert out[:, :10].min() >= 2 and out.max() < 1000
    with pytest.raises(ConfigError, match="integer token ids.*needs vocab_size"):
        GaussianNoise("text", 0.1)(batch)
    with pytest.raises(ConfigError, match="fraction in \\[0, 1\\]"):
        GaussianNoise("text", 2.0, vocab_size=10)(batch)


def test_on_collated_batches_of_a_real_dataset() -> None:
    splits = load_synthetic(task="redundancy", form="sequence", n=200)
    loader = DataLoader(splits.train, batch_size=32)
    transform = Compose(
        [ModalityDropout(0.5, generator=torch.Generator().manual_seed(0)), GaussianNoise("x0", 0.1)]
    )
    for batch in loader:
        out = transform(batch)
        assert set(out) == {"inputs", "masks", "label"}
        assert out["masks"]["x0"].shape == batch["masks"]["x0"].shape
        assert bool(_present(out).any(1).all())
        assert bool((out["masks"]["x0"] <= batch["masks"]["x0"]).all())  # only ever removes


def test_noise_for_spec_keeps_codes_and_tokens_valid() -> None:
    from mmfuse.data import ModalitySpec

    tab = ModalitySpec("tabular", (4,), {"num_numeric": 1, "cardinalities": [3, 5, 2]})
    batch = {
        "inputs": {"t": torch.tensor([[0.3, 1.0, 4.0, 0.0]] * 50)},
        "masks": {},
        "label": torch.zeros(50),
    }
    out = GaussianNoise.for_spec("t", tab, 1.0)(batch)["inputs"]["t"]
    assert torch.equal(out[:, 1:], batch["inputs"]["t"][:, 1:]) and not torch.equal(
        out[:, 0], batch["inputs"]["t"][:, 0]
    )
    text = ModalitySpec("text", (6,), {"vocab_size": 30, "pad_id": 0})
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]] * 200)
    out = GaussianNoise.for_spec("x", text, 0.5)(
        {"inputs": {"x": ids}, "masks": {}, "label": ids[:, 0]}
    )["inputs"]["x"]
    assert (
        torch.equal(out[:, 3:], ids[:, 3:]) and out.max() < 30 and (out[:, :3] != ids[:, :3]).any()
    )
    vec = GaussianNoise.for_spec("v", ModalitySpec("vector", (3,)), 0.5)
    assert vec.features is None and vec.vocab_size is None
