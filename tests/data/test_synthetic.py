"""The synthetic interaction suite: the label depends on the modalities as each task says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mmfuse.data import DataError, load_dataset
from mmfuse.data.synthetic import load_synthetic


def _features(ds, mods: list[str]) -> torch.Tensor:
    parts = []
    for m in mods:
        x = ds.inputs[m]
        if x.dim() == 3:  # mean of the valid tokens
            w = ds.masks[m].float().unsqueeze(-1)
            x = (x * w).sum(1) / w.sum(1)
        parts.append(x)
    return torch.cat(parts, dim=1)


def _mlp_accuracy(splits, mods: list[str], steps: int = 150, targets: np.ndarray | None = None) -> float:
    """Test accuracy of a small MLP trained full-batch on the listed modalities, predicting
    the labels or ``targets`` (ints, one per sample of the whole dataset, in split order)."""
    torch.manual_seed(0)
    xtr, xte = _features(splits.train, mods), _features(splits.test, mods)
    ytr, yte = splits.train.labels, splits.test.labels
    if targets is not None:
        t = torch.from_numpy(np.asarray(targets, dtype=np.int64))
        ytr, yte = t[: len(ytr)], t[len(t) - len(yte) :]
    mu, sd = xtr.mean(0), xtr.std(0)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    net = torch.nn.Sequential(
        torch.nn.Linear(xtr.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, int(ytr.max()) + 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return (net(xte).argmax(1) == yte).float().mean().item()


# Test split of 600 samples: chance is 0.5 +- 0.02 (one std), so 0.6 is a > 4 std margin.
CHANCE_MAX = 0.6
WELL_ABOVE = 0.8


@pytest.fixture(scope="module")
def suite():
    return {
        t: load_synthetic(task=t, n=3000, test_fraction=0.2, seed=0)
        for t in ("redundancy", "uniqueness", "synergy")
    }


def test_redundancy_either_modality_suffices(suite) -> None:
    s = suite["redundancy"]
    assert _mlp_accuracy(s, ["x0"]) > WELL_ABOVE
    assert _mlp_accuracy(s, ["x1"]) > WELL_ABOVE


def test_uniqueness_only_x0_carries_the_label(suite) -> None:
    s = suite["uniqueness"]
    assert _mlp_accuracy(s, ["x0"]) > WELL_ABOVE
    assert _mlp_accuracy(s, ["x1"]) < CHANCE_MAX


def test_synergy_needs_both(suite) -> None:
    s = suite["synergy"]
    assert _mlp_accuracy(s, ["x0"]) < CHANCE_MAX
    assert _mlp_accuracy(s, ["x1"]) < CHANCE_MAX
    assert _mlp_accuracy(s, ["x0", "x1"]) > WELL_ABOVE


def test_synergy_labels_are_the_xor_of_the_latent_signs() -> None:
    """Rebuild the latents from the documented recipe (same draw order) and compare the labels."""
    n, k, d = 500, 3, 16
    s = load_synthetic(
        task="synergy", n=n, dim=d, latent_dim=k, noise=0.0, val_fraction=0.1, test_fraction=0.1
    )
    rng = np.random.default_rng(0)
    proj = [rng.standard_normal((2 * k, d)) / np.sqrt(2 * k) for _ in range(2)]
    u_c = rng.standard_normal(k)
    u = [rng.standard_normal(k) for _ in range(2)]
    z_c = rng.standard_normal((n, k))
    z = [rng.standard_normal((n, k)) for _ in range(2)]
    bits = [(z[i] @ u[i] > 0).astype(int) for i in range(2)]
    labels = torch.cat([s.train.labels, s.val.labels, s.test.labels]).numpy()
    np.testing.assert_array_equal(labels, bits[0] ^ bits[1])
    x0 = torch.cat([s.train.inputs["x0"], s.val.inputs["x0"], s.test.inputs["x0"]]).numpy()
    np.testing.assert_allclose(x0, np.concatenate([z[0], z_c], 1) @ proj[0], rtol=1e-5, atol=1e-5)
    assert u_c.shape == (k,)


def test_classes_are_equally_likely_and_tasks_share_observations() -> None:
    a = load_synthetic(task="redundancy", num_classes=4, n=4000)
    b = load_synthetic(task="synergy", num_classes=4, n=4000)
    counts = torch.cat([a.train.labels, a.val.labels, a.test.labels]).bincount(minlength=4).float()
    assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000
    # Equal-probability bins: the edges are the standard normal quantiles.
    np.testing.assert_allclose(norm.cdf(norm.ppf([0.25, 0.5, 0.75])), [0.25, 0.5, 0.75])
    assert torch.equal(a.train.inputs["x0"], b.train.inputs["x0"])
    assert not torch.equal(a.train.labels, b.train.labels)


def test_three_modality_synergy_any_two_are_at_chance() -> None:
    s = load_synthetic(task="synergy", num_modalities=3, n=3000, test_fraction=0.2)
    assert s.modalities == ("x0", "x1", "x2")
    assert _mlp_accuracy(s, ["x0", "x1"]) < CHANCE_MAX
    assert _mlp_accuracy(s, ["x1", "x2"]) < CHANCE_MAX


def test_mixed_task_uses_all_three_rules() -> None:
    s = load_synthetic(task="mixed", n=3000)
    mech = np.array(s.info["mechanism"])
    assert set(np.unique(mech)) == {0, 1, 2}
    assert np.abs(np.bincount(mech) / 3000 - 1 / 3).max() < 0.05


def test_sequence_form_masks_and_padding() -> None:
    s = load_synthetic(task="redundancy", form="sequence", seq_len=8, n=600, dim=12)
    x, mask = s.train.inputs["x0"], s.train.masks["x0"]
    assert x.shape == (420, 8, 12) and x.dtype == torch.float32
    assert mask.shape == (420, 8) and mask.dtype == torch.bool
    lengths = mask.sum(1)
    assert lengths.min() >= 4 and lengths.max() <= 8 and len(lengths.unique()) == 5
    # Valid tokens first, padding after, padded tokens zero.
    assert torch.equal(mask, torch.arange(8)[None, :] < lengths[:, None])
    assert bool((x[~mask] == 0).all())
    assert s.specs["x0"].kind == "sequence" and s.specs["x0"].shape == (8, 12)
    # The item of a sequence dataset has a (t,) token mask.
    assert s.train[0]["masks"]["x0"].shape == (8,)


def test_sequence_synergy_needs_both() -> None:
    s = load_synthetic(task="synergy", form="sequence", n=3000, test_fraction=0.2)
    assert _mlp_accuracy(s, ["x0"]) < CHANCE_MAX
    assert _mlp_accuracy(s, ["x0", "x1"]) > WELL_ABOVE


def test_splits_sizes_and_determinism() -> None:
    a = load_dataset("synthetic", task="uniqueness", seed=3)
    b = load_dataset("synthetic", task="uniqueness", seed=3)
    c = load_dataset("synthetic", task="uniqueness", seed=4)
    assert (len(a.train), len(a.val), len(a.test)) == (1400, 300, 300)
    assert torch.equal(a.test.inputs["x1"], b.test.inputs["x1"]) and torch.equal(
        a.test.labels, b.test.labels
    )
    assert not torch.equal(a.test.inputs["x1"], c.test.inputs["x1"])
    assert a.num_classes == 2 and a.specs["x0"].shape == (32,)
    assert a.train.inputs["x0"].dtype == torch.float32 and a.train.labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"task": "nope"}, "task must be one of"),
        ({"form": "image"}, "form must be"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"num_modalities": 1}, "num_modalities must be an int >= 2"),
        ({"noise": -1.0}, "noise must be >= 0"),
        ({"n": 2.5}, "n must be an int"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
    ],
)
def test_bad_options_raise(option: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_synthetic(**option)


# ------------------------------------------------------------------ designed tasks
def test_alignment_label_is_the_value_of_the_matching_token() -> None:
    s = load_synthetic(task="alignment", n=300, noise=0.0, num_classes=2, seq_len=6, vocab_size=20, dim=8)
    x0, x1, y = s.train.inputs["x0"], s.train.inputs["x1"], s.train.labels
    assert x0.shape == (210, 6, 8) and s.specs["x1"].kind == "sequence"
    assert bool(s.train.masks["x0"].all())
    # x0 repeats one key; exactly one x1 token has that key's code: without noise, the
    # x1 token minus its value vector equals the key
    assert torch.allclose(x0, x0[:, :1].expand_as(x0), atol=1e-6)
    values = x1 - _circle_part(x1, x0[:, 0])
    match = torch.tensor(s.info["match"][:210])
    hit = (x1[torch.arange(210), match] - values[torch.arange(210), match] - x0[:, 0]).abs().max()
    assert float(hit) < 1e-5
    # the value vectors are balanced in every sample: the token mean carries no label
    mean_val = values.mean(1)
    assert torch.allclose(mean_val, mean_val[:1].expand_as(mean_val), atol=1e-5)
    # and the matched token's value vector identifies the label
    v = values[torch.arange(210), match]
    protos = torch.stack([v[y == c][0] for c in range(2)])
    assert torch.equal(torch.cdist(v, protos).argmin(1), y)


def _circle_part(x1: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``x1``'s tokens projected on the plane of the symbol circle, which the keys span."""
    _, sing, vt = torch.linalg.svd(key.double(), full_matrices=False)
    assert float(sing[2] / sing[0]) < 1e-6  # the codes lie in a plane
    basis = vt[:2].T
    return (x1.double() @ basis @ basis.T).float()


def test_alignment_pooled_features_are_near_chance() -> None:
    s = load_synthetic(task="alignment", n=3000, test_fraction=0.2)
    assert _mlp_accuracy(s, ["x0", "x1"]) < 0.7  # token means: the pairing is lost


def _linear_accuracy(splits, m: str) -> float:
    """Test accuracy of the least-squares linear classifier (labels as -1/+1) on modality ``m``."""
    def design(ds):
        x = ds.inputs[m].double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    w = torch.linalg.lstsq(design(splits.train), splits.train.labels.double()[:, None] * 2 - 1).solution
    return ((design(splits.test) @ w)[:, 0] > 0).long().eq(splits.test.labels).double().mean().item()


def _all(s, m: str) -> torch.Tensor:
    return torch.cat([s.train.inputs[m], s.val.inputs[m], s.test.inputs[m]])


def test_reliability_follows_its_equations() -> None:
    # without noise, rebuild every modality from the documented draw order: x0 = key W0;
    # candidate i = [key, z] W_i where it is clean, an independent decoy latent through
    # the same W_i where it is corrupted; y = the sign of z . u
    n, latent_dim, dim = 400, 4, 12
    s = load_synthetic(task="reliability", n=n, noise=0.0, latent_dim=latent_dim, dim=dim)
    l_key, l_label = 6, 2  # latent_dim + latent_dim // 2, latent_dim // 2
    rng = np.random.default_rng([0, 4])
    key = rng.standard_normal((n, l_key))
    z = rng.standard_normal((n, l_label))
    u = rng.standard_normal(l_label)
    u /= np.linalg.norm(u)
    corrupted = rng.integers(1, 3, size=n)
    np.testing.assert_array_equal(np.array(s.info["corrupted"]), corrupted)
    assert s.info["reference"] == "x0"
    want = {"x0": key @ (rng.standard_normal((l_key, dim)) / np.sqrt(l_key))}
    rng.standard_normal((n, dim))  # x0's noise draw (times 0)
    for i in (1, 2):
        decoy = rng.standard_normal((n, l_key + l_label))
        w = rng.standard_normal((l_key + l_label, dim)) / np.sqrt(l_key + l_label)
        rng.standard_normal((n, dim))
        clean = np.concatenate([key, z], axis=1)
        want[f"x{i}"] = np.where((corrupted == i)[:, None], decoy, clean) @ w
    for m, x in want.items():
        np.testing.assert_allclose(_all(s, m).numpy(), x, atol=1e-5, err_msg=m)
    labels = torch.cat([s.train.labels, s.val.labels, s.test.labels]).numpy()
    np.testing.assert_array_equal(labels, (z @ u > 0).astype(int))


def test_reliability_one_unflagged_corrupted_modality_per_sample() -> None:
    s = load_synthetic(task="reliability", n=3000, test_fraction=0.2)
    assert s.modalities == ("x0", "x1", "x2")
    corrupted = np.array(s.info["corrupted"])
    assert corrupted.shape == (3000,)
    # exactly one modality per sample: one of the two candidates, never the reference,
    # each about half the time
    assert set(np.unique(corrupted)) == {1, 2}
    assert 0.45 < float((corrupted == 1).mean()) < 0.55
    for split in (s.train, s.val, s.test):  # not flagged
        assert all(bool(split.masks[m].all()) for m in s.modalities)
    # the reference alone says nothing of the label; a candidate alone is right on its
    # clean half only: about (1 + 1/2) / 2 = 0.75 at best (the best rule reads z . u
    # linearly; measured with a least-squares linear classifier: 0.71 and 0.67)
    assert _mlp_accuracy(s, ["x0"]) < 0.58
    for m in ("x1", "x2"):
        assert 0.62 < _linear_accuracy(s, m) < 0.8
    x0 = _all(s, "x0").double().numpy()
    for i in (1, 2):
        x = _all(s, f"x{i}").double().numpy()
        bad = corrupted == i
        # a decoy is a clean sample of another draw: same scale, and nothing in the
        # candidate alone tells it from a clean one
        assert 0.95 < float(x[bad].std() / x[~bad].std()) < 1.05
        assert _mlp_accuracy(s, [f"x{i}"], targets=bad) < 0.58
        # the reference does: x0 predicted linearly from the candidate leaves a larger
        # residual where the candidate is a decoy (its key is another sample's)
        w, *_ = np.linalg.lstsq(x, x0, rcond=None)
        residual = np.linalg.norm(x0 - x @ w, axis=1)
        assert float(((residual > np.median(residual)) == bad).mean()) > 0.8


def test_groups_label_is_the_sign_of_the_sum_of_pair_products() -> None:
    s = load_synthetic(task="groups", n=600, noise=0.0, latent_dim=3, dim=3)
    assert s.modalities == ("x0", "x1", "x2", "x3")
    assert s.info["groups"] == [["x0", "x1"], ["x2", "x3"]]
    # with dim == latent_dim and no noise, x_i = z_i W_i with W_i invertible: rebuild
    # the latents' projections from the documented draw order
    rng = np.random.default_rng([0, 5])
    zs = [rng.standard_normal((600, 3)) for _ in range(4)]
    us = []
    for _ in range(4):
        u = rng.standard_normal(3)
        us.append(u / np.linalg.norm(u))
    sc = [zs[i] @ us[i] for i in range(4)]
    want = ((sc[0] * sc[1] + sc[2] * sc[3]) > 0).astype(int)
    labels = torch.cat([s.train.labels, s.val.labels, s.test.labels]).numpy()
    np.testing.assert_array_equal(labels, want)
    x0 = torch.cat([s.train.inputs["x0"], s.val.inputs["x0"], s.test.inputs["x0"]]).numpy()
    w = np.linalg.lstsq(zs[0], x0, rcond=None)[0]
    np.testing.assert_allclose(zs[0] @ w, x0, atol=1e-4)


def test_designed_tasks_bad_options_raise() -> None:
    with pytest.raises(DataError, match="exactly 2"):
        load_synthetic(task="alignment", num_modalities=3)
    with pytest.raises(DataError, match="vocab_size"):
        load_synthetic(task="alignment", seq_len=8, vocab_size=10)
    with pytest.raises(DataError, match="even num_modalities"):
        load_synthetic(task="groups", num_modalities=3)
    with pytest.raises(DataError, match="corrupt_scale"):
        load_synthetic(task="reliability", corrupt_scale=0)
    with pytest.raises(DataError, match="exactly 3 modalities"):
        load_synthetic(task="reliability", num_modalities=2)
    assert load_synthetic(task="groups", n=100).modalities == ("x0", "x1", "x2", "x3")


def test_dataset_loader_is_the_registered_function() -> None:
    import inspect

    from mmfuse.data import DataError, dataset_loader, list_datasets, load_dataset
    from mmfuse.data.synthetic import load_synthetic

    assert dataset_loader("synthetic") is load_synthetic
    assert "task" in inspect.signature(dataset_loader("synthetic")).parameters
    with pytest.raises(DataError, match=r"unknown dataset 'nope': expected one of \[") as caught:
        dataset_loader("nope")
    assert all(n in str(caught.value) for n in list_datasets())
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_one_rule_for_the_task_of_a_class_count() -> None:
    import torch

    from mmfuse.data import ModalitySpec, MultimodalDataset
    from mmfuse.data._base import classification_task
    from mmfuse.models import build_model

    assert [classification_task(k) for k in (2, 3, 10)] == ["binary", "multiclass", "multiclass"]
    for k in (2, 3):  # the dataset and the model builder agree with it
        ds = MultimodalDataset("t", {"a": torch.zeros(4, 2)}, torch.arange(4) % k,
                               specs={"a": ModalitySpec("vector", (2,))}, num_classes=k)
        assert ds.task == classification_task(k)
        assert build_model({"a": ModalitySpec("vector", (2,))}, k, "early", hidden_dim=4).config["task"] == ds.task
