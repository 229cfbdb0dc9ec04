"""``RunningMeans``: the running input means that stand in for a missing query or
conditioner (``mmfuse.fusions._fallback``).

Written out here: per batch with a present row, m <- (1 - r) m + r mean_batch(x),
rho <- (1 - r) rho, mu = m / (1 - rho); rows and tokens that are masked out are left out.
"""

from __future__ import annotations

import pytest
import torch

import mmfuse
from mmfuse.fusions._fallback import SAMPLE_EVERY, RunningMeans


def _by_hand(batches: list[torch.Tensor], r: float) -> torch.Tensor:
    m, rho = torch.zeros(batches[0].shape[-1]), 1.0
    for x in batches:
        m = (1 - r) * m + r * x.mean(0)
        rho *= 1 - r
    return m / (1 - rho)


def test_bias_corrected_moving_average_by_hand() -> None:
    running = RunningMeans({"a": 3, "b": 2}, momentum=0.25).train()
    g = torch.Generator().manual_seed(0)
    n_batches = 2 * SAMPLE_EVERY + 3
    a = [torch.randn(5, 3, generator=g) + 4 + n for n in range(n_batches)]
    b = [torch.randn(5, 2, generator=g) - 2 - n for n in range(n_batches)]
    for n in range(n_batches):
        running.update([a[n], b[n]], None)
        # batches without masks are sampled: the 1st, then every SAMPLE_EVERY-th
        torch.testing.assert_close(running.value("a"), _by_hand(a[: n + 1 : SAMPLE_EVERY], 0.25))
        torch.testing.assert_close(running.value("b"), _by_hand(b[: n + 1 : SAMPLE_EVERY], 0.25))
    # the first batch alone gives its own mean (no pull towards the zero start)
    fresh = RunningMeans({"a": 3}).train()
    fresh.update([a[0]], None)
    torch.testing.assert_close(fresh.value("a"), a[0].mean(0))
    # weights (1 - r)^age: equal batches give that batch's mean whatever their number
    for _ in range(30):
        fresh.update([a[0]], None)
    torch.testing.assert_close(fresh.value("a"), a[0].mean(0))


def test_every_batch_with_masks_updates() -> None:
    running = RunningMeans({"a": 3}, momentum=0.25).train()
    g = torch.Generator().manual_seed(2)
    a = [torch.randn(4, 3, generator=g) + n for n in range(5)]
    for x in a:
        running.update([x], [torch.ones(4, dtype=torch.bool)])
    torch.testing.assert_close(running.value("a"), _by_hand(a, 0.25))


def test_masked_rows_and_tokens_are_left_out() -> None:
    running = RunningMeans({"s": 2, "v": 1}).train()
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[100.0, 100.0], [5.0, 6.0]], [[7.0, 8.0], [-1e6, 1e6]]])
    tok = torch.tensor([[True, True], [False, True], [True, False]])
    v = torch.tensor([[1.0], [50.0], [3.0]])
    running.update([x, v], [tok, torch.tensor([True, False, True])])
    torch.testing.assert_close(running.value("s"), torch.tensor([16.0, 20.0]) / 4)
    torch.testing.assert_close(running.value("v"), torch.tensor([2.0]))
    # a batch with no present row of a modality leaves that modality's mean alone
    running.update([torch.full((3, 2, 2), 1e3), torch.full((3, 1), 8.0)],
                   [torch.zeros(3, 2, dtype=torch.bool), torch.ones(3, dtype=torch.bool)])
    torch.testing.assert_close(running.value("s"), torch.tensor([4.0, 5.0]))
    torch.testing.assert_close(running.value("v"), _by_hand([torch.tensor([[2.0]]), torch.tensor([[8.0]])], 0.1))


def test_updates_are_not_recorded_by_autograd() -> None:
    running = RunningMeans({"s": 2, "v": 3}).train()
    x = torch.randn(4, 5, 2, requires_grad=True)
    v = torch.randn(4, 3, requires_grad=True)
    running.update([x * 2, v], None)
    running.update([x, v + 1], [torch.ones(4, 5, dtype=torch.bool), torch.tensor([True, False, True, True])])
    assert not running.mean.requires_grad and not running.decay.requires_grad
    assert running.mean.grad_fn is None


def test_eval_mode_does_not_update_and_a_fresh_mean_is_zero() -> None:
    running = RunningMeans({"a": 2}).eval()
    running.update([torch.ones(3, 2)], None)
    assert torch.equal(running.value("a"), torch.zeros(2))


@pytest.mark.parametrize("name", ["film", "multihead_cross_attention"])
def test_a_checkpoint_without_the_buffers_keeps_its_trained_stand_in(name: str) -> None:
    dims = {"a": 3, "b": 4}
    fusion = mmfuse.create_fusion(name, input_dims=dims, output_dim=2)
    old = {k: v for k, v in fusion.state_dict().items() if not k.startswith("input_mean.")}
    assert len(old) == len(fusion.state_dict()) - 3
    fresh = mmfuse.create_fusion(name, input_dims=dims, output_dim=2)
    fresh.input_mean.assign("a", torch.full((3,), 3.0))
    fresh.load_state_dict(old, strict=True)
    assert torch.equal(fresh.input_mean.value("a"), torch.zeros(3))
    assert bool(fresh.input_mean.trained("a"))  # the stand-in it was measured with


def test_training_tracks_the_query_modalitys_valid_tokens() -> None:
    dims = {"a": 3, "b": 4}
    fusion = mmfuse.create_fusion("multihead_cross_attention", input_dims=dims, output_dim=4).train()
    assert fusion.input_mean.names == ("a",)  # the query modality only
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 3, generator=g)
    tok = torch.tensor([[True, True, False], [True, False, False], [False, False, False], [True, True, True]])
    fusion({"a": x, "b": torch.randn(4, 4, generator=g)}, {"a": tok})
    torch.testing.assert_close(fusion.input_mean.value("a"), x[tok].mean(0))
    # without masks every token counts
    y = torch.randn(4, 3, 3, generator=g)
    fusion({"a": y, "b": torch.randn(4, 4, generator=g)})
    torch.testing.assert_close(fusion.input_mean.value("a"), _by_hand([x[tok], y.reshape(-1, 3)], 0.1))


def test_a_missing_row_in_training_selects_the_trained_stand_in() -> None:
    running = RunningMeans({"s": 2, "v": 1}).train()
    x, v = torch.randn(3, 2, 2), torch.randn(3, 1)
    all_tokens = torch.ones(3, 2, dtype=torch.bool)
    running.update([x, v], None)
    running.update([x, v], [torch.tensor([[True, False]] * 3), torch.ones(3, dtype=torch.bool)])
    assert not bool(running.trained("s")) and not bool(running.trained("v"))  # padding is not missing
    running.update([x, v], [all_tokens & torch.tensor([True, False, True])[:, None], torch.ones(3, dtype=torch.bool)])
    assert bool(running.trained("s")) and not bool(running.trained("v"))
    running.update([x, v], None)  # and it stays so
    assert bool(running.trained("s"))
    a, b = torch.ones(2), torch.zeros(2)
    assert torch.equal(running.choose("s", a, b), a) and torch.equal(running.choose("v", a, b), b)
    running.eval().update([x, v], [all_tokens, torch.zeros(3, dtype=torch.bool)])  # eval: nothing changes
    assert not bool(running.trained("v"))


def test_multihead_trained_with_the_query_missing_queries_with_the_context_mean() -> None:
    dims = {"a": 3, "b": 4}
    fusion = mmfuse.create_fusion("multihead_cross_attention", input_dims=dims, output_dim=4, num_heads=2)
    g = torch.Generator().manual_seed(2)
    inputs = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(4, 2, 4, generator=g)}
    masks = {"a": torch.tensor([True, False, True, False]), "b": torch.tensor([[True, True], [True, False]] * 2)}
    untrained = fusion.eval()(inputs, masks)
    fusion.train()(inputs, masks)  # a training batch with the query missing in two rows
    trained = fusion.eval()(inputs, masks)
    assert bool(fusion.input_mean.trained("a"))
    # by hand: the context mean as the (one-token) query, LN(p + MHA(p, ctx)), W_out
    with torch.no_grad():
        ctx = fusion.proj["b"](inputs["b"])
        p = ((ctx * masks["b"][..., None]).sum(1) / masks["b"].sum(1, keepdim=True))[:, None, :]
        a, _ = fusion.attn["a"](p, ctx, masks["b"])
        expected = fusion.out(fusion.norms["a"](p + a)[:, 0])
    gone = ~masks["a"]
    torch.testing.assert_close(trained[gone], expected[gone])
    torch.testing.assert_close(trained[~gone], untrained[~gone])
    assert not torch.allclose(trained[gone], untrained[gone])


def test_film_trained_with_a_modality_missing_uses_the_present_mean() -> None:
    dims = {"a": 3, "b": 4, "c": 2}
    fusion = mmfuse.create_fusion("film", input_dims=dims, output_dim=3, dim=5)
    g = torch.Generator().manual_seed(3)
    inputs = {m: torch.randn(4, d, generator=g) for m, d in dims.items()}
    masks = {"b": torch.tensor([True, False, True, True])}
    fusion.train()(inputs, masks)
    assert bool(fusion.input_mean.trained("b")) and not bool(fusion.input_mean.trained("a"))
    out = fusion.eval()(inputs, masks)
    with torch.no_grad():
        h = {m: fusion.proj[m](x) for m, x in inputs.items()}
        h_b = (h["a"] + h["c"]) / 2  # sample 1: the mean of the present projections
        ref = fusion.eval()({**inputs}, None)  # a full-data pass, then replace by hand
        s = torch.addcmul(fusion.beta[0](h["a"]), fusion.gamma[0](h["a"]), h_b)
        s = torch.addcmul(fusion.beta[1](s), fusion.gamma[1](s), h["c"])
        torch.testing.assert_close(out[1], fusion.out(s)[1])
        torch.testing.assert_close(out[[0, 2, 3]], ref[[0, 2, 3]])


def test_update_rows_equals_the_per_modality_update() -> None:
    g = torch.Generator().manual_seed(4)
    dims = {"a": 3, "b": 1, "c": 2}
    loop, rows = RunningMeans(dims).train(), RunningMeans(dims).train()
    for step in range(4):
        xs = [torch.randn(5, d, generator=g) for d in dims.values()]
        present = torch.rand(5, 3, generator=g) > 0.4
        present[:, 1] = step != 2  # a batch where "b" has no present row
        loop.update(xs, list(present.unbind(dim=1)))
        rows.update_rows(xs, present)
        for name in dims:
            torch.testing.assert_close(rows.value(name), loop.value(name))
        torch.testing.assert_close(rows.seen_missing, loop.seen_missing)



@pytest.mark.parametrize("name", ["film", "multihead_cross_attention"])
def test_compiled_training_without_masks_compiles_once_and_tracks_every_batch(name: str) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    fusion = mmfuse.create_fusion(name, input_dims={"a": 4, "b": 4}, output_dim=3).train()
    compiled = torch.compile(fusion, backend="aot_eager")
    g = torch.Generator().manual_seed(3)
    batches = [{"a": torch.randn(6, 4, generator=g) + n, "b": torch.randn(6, 4, generator=g)} for n in range(12)]
    for x in batches:
        compiled(x).sum().backward()
    assert counters["stats"]["unique_graphs"] == 1  # no recompilation per call
    expected = _by_hand([x["a"] for x in batches], fusion.input_mean.momentum)  # every batch counted
    torch.testing.assert_close(fusion.input_mean.value("a"), expected)
