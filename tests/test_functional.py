"""mmfuse.functional: the guide's parameter-free ops, on numpy and torch, against numpy by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse import FusionError
from mmfuse import functional as MF
from mmfuse.fusions import masked_softmax

RNG = np.random.default_rng(0)
X1 = RNG.standard_normal((4, 3))
X2 = RNG.standard_normal((4, 3))
X3 = RNG.standard_normal((4, 3))


def both(fn, *arrays: np.ndarray, **kwargs: object) -> np.ndarray:
    """Run ``fn`` on numpy and on torch copies; check the types and that the results agree exactly."""
    out_np = fn(*arrays, **kwargs)
    t_kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    out_t = fn(*(torch.from_numpy(a) for a in arrays), **t_kwargs)
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    assert out_np.dtype == out_t.numpy().dtype
    np.testing.assert_array_equal(out_np, out_t.numpy())
    return out_np


def test_early_fusion_concatenates() -> None:
    out = both(MF.early_fusion, X1, RNG.standard_normal((4, 2)))
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out[:, :3], X1)
    seqs = both(MF.early_fusion, np.ones((2, 3, 4)), np.zeros((2, 5, 4)), axis=1)
    np.testing.assert_array_equal(seqs, np.concatenate([np.ones((2, 3, 4)), np.zeros((2, 5, 4))], axis=1))


@pytest.mark.parametrize(
    ("method", "expected"),
    [("mean", (X1 + X2 + X3) / 3), ("max", np.maximum(np.maximum(X1, X2), X3)), ("sum", X1 + X2 + X3)],
)
def test_late_fusion(method: str, expected: np.ndarray) -> None:
    np.testing.assert_allclose(both(MF.late_fusion, X1, X2, X3, method=method), expected, rtol=1e-12)


def test_weighted_fusion_global_and_per_sample_weights() -> None:
    out = MF.weighted_fusion(X1, X2, X3, weights=[0.2, 0.3, 0.5])
    np.testing.assert_allclose(out, 0.2 * X1 + 0.3 * X2 + 0.5 * X3, rtol=1e-12)
    w = RNG.random((4, 3))
    out = both(MF.weighted_fusion, X1, X2, X3, weights=w)
    np.testing.assert_allclose(out, w[:, :1] * X1 + w[:, 1:2] * X2 + w[:, 2:] * X3, rtol=1e-12)
    t = MF.weighted_fusion(*(torch.from_numpy(x) for x in (X1, X2, X3)), weights=[0.2, 0.3, 0.5])
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), 0.2 * X1 + 0.3 * X2 + 0.5 * X3, rtol=1e-12)


def test_gated_combine() -> None:
    g = 1 / (1 + np.exp(-RNG.standard_normal((4, 1))))
    np.testing.assert_allclose(both(MF.gated_combine, X1, X2, g), g * X1 + (1 - g) * X2, rtol=1e-12)
    g_feat = RNG.random((4, 3))
    np.testing.assert_allclose(both(MF.gated_combine, X1, X2, g_feat), g_feat * X1 + (1 - g_feat) * X2, rtol=1e-12)
    np.testing.assert_allclose(MF.gated_combine(X1, X2, 0.25), 0.25 * X1 + 0.75 * X2, rtol=1e-12)
    out = MF.gated_combine(torch.from_numpy(X1), torch.from_numpy(X2), 1.0)
    np.testing.assert_array_equal(out.numpy(), X1)


def test_additive_attention_weights_masked_softmax() -> None:
    scores = RNG.standard_normal((3, 4))
    mask = np.array([[True, False, True, True], [False, False, False, False], [True, True, True, True]])
    w = both(MF.additive_attention_weights, scores, mask=mask)
    e = np.exp(scores - scores.max(axis=1, keepdims=True)) * mask
    expected = np.divide(e, e.sum(1, keepdims=True), out=np.zeros_like(e), where=e.sum(1, keepdims=True) > 0)
    np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-15)
    assert (w[~mask] == 0).all() and (w[1] == 0).all()  # an all-masked row gives zeros, not NaN
    np.testing.assert_allclose(w[[0, 2]].sum(1), 1.0)
    torch.testing.assert_close(
        torch.from_numpy(w), masked_softmax(torch.from_numpy(scores), torch.from_numpy(mask), dim=-1)
    )
    plain = both(MF.additive_attention_weights, scores, axis=0)
    np.testing.assert_allclose(plain, np.exp(scores) / np.exp(scores).sum(0, keepdims=True), rtol=1e-12)


def test_product_of_experts() -> None:
    p1, p2 = RNG.dirichlet(np.ones(5), size=4), RNG.dirichlet(np.ones(5), size=4)
    out = both(MF.product_of_experts, np.log(p1), np.log(p2))
    prod = p1 * p2
    np.testing.assert_allclose(out, np.log(prod / prod.sum(1, keepdims=True)), rtol=1e-10)


def test_float32_stays_float32() -> None:
    a, b = X1.astype(np.float32), X2.astype(np.float32)
    assert both(MF.late_fusion, a, b).dtype == np.float32
    assert MF.gated_combine(a, b, 0.5).dtype == np.float32
    assert MF.weighted_fusion(a, b, weights=[1.0, 2.0]).dtype == np.float32


def test_results_are_new_arrays() -> None:
    out = MF.early_fusion(X1)
    out[:] = 0
    assert not (X1 == 0).all()


T1 = torch.from_numpy(X1)
BAD = [
    (lambda: MF.early_fusion(X1, T1), "x\\[1\\]: expected a numpy array like x\\[0\\], got a torch one"),
    (lambda: MF.early_fusion(X1, [[1.0]]), "x\\[1\\]: expected a numpy array or a torch tensor, got list"),
    (lambda: MF.early_fusion(), "expected at least one array, got none"),
    (lambda: MF.early_fusion(X1, np.ones((5, 3))), "x\\[1\\]: expected shape \\(4, 3\\) except on axis -1, got \\(5, 3\\)"),
    (lambda: MF.early_fusion(X1, np.ones((4, 3, 1))), "x\\[1\\]: expected 2 axes \\(as x\\[0\\]\\), got 3"),
    (lambda: MF.early_fusion(X1, X2, axis=2), "axis: expected an int in \\[-2, 2\\), got 2"),
    (lambda: MF.late_fusion(X1, np.ones((4, 2))), "x\\[1\\]: expected shape \\(4, 3\\) \\(as x\\[0\\]\\), got \\(4, 2\\)"),
    (lambda: MF.late_fusion(X1, X2, method="median"), "method: expected one of \\['mean', 'max', 'sum'\\]"),
    (lambda: MF.late_fusion(np.ones((2, 2), dtype=int)), "x\\[0\\]: expected a floating-point array, got torch.int64"),
    (lambda: MF.late_fusion(T1, X2), "x\\[1\\]: expected a torch array like x\\[0\\], got a numpy one"),
    (lambda: MF.weighted_fusion(X1, X2, weights=[1.0]), "weights: expected shape \\(2,\\) or \\(4, 2\\), got \\(1,\\)"),
    (lambda: MF.weighted_fusion(X1, X2, weights=T1), "weights: expected a numpy array like x\\[0\\], got a torch one"),
    (lambda: MF.weighted_fusion(X1, X2, weights=0.5), "weights: expected a sequence of floats or an array, got float"),
    (lambda: MF.gated_combine(X1, X2, np.ones((4, 5))), "gate: expected a shape broadcastable to \\(4, 3\\), got \\(4, 5\\)"),
    (lambda: MF.gated_combine(X1, X2, np.ones((2, 4, 3))), "gate: expected a shape broadcastable to \\(4, 3\\), got \\(2, 4, 3\\)"),
    (lambda: MF.gated_combine(X1, np.ones((4, 2)), 0.5), "h2: expected shape \\(4, 3\\) \\(as h1\\), got \\(4, 2\\)"),
    (lambda: MF.gated_combine(T1, T1, np.ones((4, 1))), "gate: expected a torch array like h1, got a numpy one"),
    (lambda: MF.additive_attention_weights(X1, np.ones((4, 3))), "mask: expected a bool array, got torch.float64"),
    (lambda: MF.additive_attention_weights(X1, np.ones((4, 2), bool)), "mask: expected shape \\(4, 3\\) \\(as scores\\)"),
    (lambda: MF.product_of_experts(X1, np.ones((4, 2))), "log_probs\\[1\\]: expected shape \\(4, 3\\)"),
]


@pytest.mark.parametrize(("call", "message"), BAD, ids=range(len(BAD)))
def test_bad_input_raises(call, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        call()


def test_masked_mean_counts_only_kept_tokens_in_numpy_and_torch() -> None:
    from mmfuse.functional import masked_mean

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    want = np.stack([x[0, :2].mean(0), np.zeros(2, np.float32), x[2].mean(0)])  # by hand; none kept -> 0
    got_np = masked_mean(x, mask, dim=1)
    got_t = masked_mean(torch.from_numpy(x), torch.from_numpy(mask), dim=1)
    assert isinstance(got_np, np.ndarray) and isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_np, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_t.numpy(), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(masked_mean(x, None, dim=1), x.mean(1), rtol=1e-6)
