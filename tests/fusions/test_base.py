"""The shared pieces of the contract: masked reductions, input preparation, the registry."""

from __future__ import annotations

import pytest
import torch

import mmfuse
from mmfuse.fusions import Fusion, FusionError, FusionIntermediates, masked_mean, masked_softmax
from mmfuse.fusions._base import _REGISTRY, FusionBatch, register_fusion


def test_masked_mean_matches_the_mean_of_kept_rows() -> None:
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    out = masked_mean(x, mask, dim=1)
    torch.testing.assert_close(out[0], (x[0, 0] + x[0, 2]) / 2)
    assert torch.equal(out[1], torch.zeros(3))


def test_masked_softmax_zeroes_masked_and_handles_empty_rows() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    e1, e3 = torch.exp(torch.tensor(1.0)), torch.exp(torch.tensor(3.0))
    torch.testing.assert_close(w[0], torch.stack([e1 / (e1 + e3), torch.tensor(0.0), e3 / (e1 + e3)]))
    assert torch.equal(w[1], torch.zeros(3))


class _Sum(Fusion):
    """Test double: sum of pooled inputs (all dims equal)."""

    def fuse(self, batch, *, need_intermediates):
        out = sum(batch.pooled(m) for m in self.modalities)
        return out, FusionIntermediates()


def test_prepare_zeroes_missing_and_padded_values_and_combines_masks() -> None:
    f = _Sum(input_dims={"a": 2, "b": 2}, output_dim=2)
    a = torch.full((3, 4, 2), 5.0)
    b = torch.full((3, 2), 7.0)
    tokens = torch.tensor([[True, True, False, False]] * 3)
    batch = f.prepare({"a": a, "b": b}, {"a": tokens, "b": torch.tensor([True, False, True])})
    assert torch.equal(batch.inputs["a"][:, 2:], torch.zeros(3, 2, 2))
    assert torch.equal(batch.inputs["b"][1], torch.zeros(2))
    assert batch.present.tolist() == [[True, True], [True, False], [True, True]]
    torch.testing.assert_close(batch.pooled("a"), torch.full((3, 2), 5.0))
    x, m = batch.as_sequence("b")
    assert x.shape == (3, 1, 2) and m[:, 0].tolist() == [True, False, True]
    # a (b, t) mask with an all-False row marks that sample's modality missing
    batch = f.prepare({"a": a, "b": b}, {"a": torch.tensor([[True] * 4, [False] * 4, [True] * 4])})
    assert batch.present[:, 0].tolist() == [True, False, True]


def test_error_messages_name_modality_expected_and_actual() -> None:
    f = _Sum(input_dims={"image": 64, "audio": 32}, output_dim=4)
    with pytest.raises(FusionError, match=r"modality 'audio': expected last dim 32, got 40"):
        f({"image": torch.randn(2, 64), "audio": torch.randn(2, 40)})


def test_construction_errors() -> None:
    with pytest.raises(FusionError, match="non-empty mapping"):
        _Sum(input_dims={}, output_dim=2)
    with pytest.raises(FusionError, match="positive int"):
        _Sum(input_dims={"a": 2.5}, output_dim=2)


def test_registry_refuses_a_second_class_under_one_name() -> None:
    register_fusion("_test_sum")(_Sum)
    try:
        class Other(_Sum):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_fusion("_test_sum")(Other)
        assert "_test_sum" in mmfuse.list_fusions()
    finally:
        _REGISTRY.pop("_test_sum")


def test_fusion_error_survives_python_O_semantics() -> None:
    # validation uses exceptions, not assert: the check still fires with asserts disabled
    import subprocess
    import sys

    code = (
        "import torch, mmfuse\n"
        "from mmfuse.fusions._base import Fusion\n"
        "f = Fusion(input_dims={'a': 3}, output_dim=2)\n"
        "try:\n"
        "    f.prepare({'a': torch.randn(2, 4)}, None)\n"
        "except mmfuse.FusionError as e:\n"
        "    print('raised', e)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert "expected last dim 3, got 4" in out.stdout


def _op_recorder():  # type: ignore[no-untyped-def]
    """A dispatch mode that records the name of every tensor op run inside it (``.ops``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    return Recorder()


def test_no_mask_fast_path_touches_no_tensor_data() -> None:
    """Without masks, validation is Python-side only: no kernel, no zeroing, no sync."""
    fusion = mmfuse.create_fusion("early", input_dims={"a": 3, "b": 4}, output_dim=2)
    inputs = {"a": torch.randn(5, 3), "b": torch.randn(5, 2, 4)}
    with _op_recorder() as count:
        batch = fusion.prepare(inputs, None)
    assert count.ops == []  # not even a presence tensor: built on first read
    assert batch.all_present and bool(batch.present.all())
    assert batch.inputs["a"] is inputs["a"]  # not copied, not zeroed
    # with masks the all-missing check runs (and on the CPU reads one bool)
    with _op_recorder() as count:
        fusion.prepare(inputs, {"a": torch.ones(5, dtype=torch.bool)})
    assert any("where" in op for op in count.ops)


def test_returned_presence_is_never_the_callers_mask() -> None:
    fusion = mmfuse.create_fusion("gated", input_dims={"a": 3, "b": 4}, output_dim=2)
    inputs = {"a": torch.randn(5, 3), "b": torch.randn(5, 4)}
    _, info = fusion(inputs, return_intermediates=True)
    info.present[0] = False  # the caller may scribble on what it got back
    _, again = fusion(inputs, return_intermediates=True)
    assert bool(again.present.all())


def test_dtype_follows_the_module_after_to() -> None:
    fusion = mmfuse.create_fusion("late", input_dims={"a": 3, "b": 4}, output_dim=2)
    inputs = {"a": torch.randn(5, 3), "b": torch.randn(5, 4)}
    fusion(inputs)
    fusion.double()
    with pytest.raises(FusionError, match=r"modality 'a': expected dtype torch.float64 \(the module's"):
        fusion(inputs)
    assert fusion({k: v.double() for k, v in inputs.items()}).dtype == torch.float64


def test_returned_presence_does_not_alias_a_given_mask() -> None:
    fusion = mmfuse.create_fusion("late", input_dims={"a": 3, "b": 4}, output_dim=2)
    inputs = {"a": torch.randn(5, 3), "b": torch.randn(5, 4)}
    mask = torch.tensor([True, False, True, True, True])
    _, info = fusion(inputs, {"b": mask}, return_intermediates=True)
    info.present[:, 1] = True
    assert mask.tolist() == [True, False, True, True, True]


def test_fast_path_presence_and_token_masks_are_all_true_and_built_on_read() -> None:
    fusion = mmfuse.create_fusion("early", input_dims={"a": 3, "b": 4}, output_dim=2)
    inputs = {"b": torch.randn(5, 6, 4), "a": torch.randn(5, 3)}
    batch = fusion.prepare(inputs, None)
    assert list(batch.inputs) == ["a", "b"]  # modality order, not the dict's
    assert batch.all_present and not batch.all_vectors and batch.batch_size == 5
    assert batch.present.dtype == torch.bool and batch.present.shape == (5, 2) and bool(batch.present.all())
    assert batch.token_masks["a"] is None
    assert batch.token_masks["b"].shape == (5, 6) and bool(batch.token_masks["b"].all())
    # the fast path's pooling is the plain mean; the masked path with every token kept agrees
    masked = fusion.prepare(inputs, {"b": torch.ones(5, 6, dtype=torch.bool)})
    torch.testing.assert_close(batch.pooled("b"), inputs["b"].mean(dim=1))
    torch.testing.assert_close(batch.pooled("b"), masked.pooled("b"))
    assert [x is y for x, y in zip(batch.pooled_all(), [inputs["a"], None], strict=True)] == [True, False]
    vectors = fusion.prepare({"a": inputs["a"], "b": torch.randn(5, 4)}, None)
    assert vectors.all_vectors and vectors.pooled_all()[0] is inputs["a"]


def test_a_batch_without_presence_needs_all_present() -> None:
    with pytest.raises(ValueError, match="required unless all_present"):
        FusionBatch(inputs={"a": torch.randn(2, 3)}, present=None, token_masks=None, modalities=("a",))


def _early_ref(f: Fusion, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return f.encoder(torch.cat([x[m] for m in f.modalities], dim=-1))


def _late_ref(f: Fusion, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([f.encoders[m](x[m]) for m in f.modalities], dim=1).mean(dim=1)


def _gmu_ref(f: Fusion, x: dict[str, torch.Tensor]) -> torch.Tensor:
    p1, p2 = (f.proj[m](x[m]) for m in f.modalities)
    h1, h2 = torch.tanh(p1), torch.tanh(p2)
    g = torch.sigmoid(f.gate_layer(torch.cat([x[m] for m in f.modalities], dim=-1)))
    return h2 + g * (h1 - h2)


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [("early", {"presence_features": False}, _early_ref), ("late", {}, _late_ref),
     ("gated", {"unit": "gmu"}, _gmu_ref)],
)
def test_no_mask_forward_runs_only_the_equations_kernels(name: str, options: dict, reference) -> None:  # type: ignore[no-untyped-def]
    """Without masks the contract adds no tensor operation: ``fusion(inputs)`` dispatches
    exactly the ops of the strategy's equation written out here (no presence tensor,
    no copy, no zeroing), and gives its result."""
    dims = {"a": 3, "b": 4} if name == "gated" else {"a": 3, "b": 4, "c": 5}
    fusion = mmfuse.create_fusion(name, input_dims=dims, output_dim=6, **options)
    inputs = {m: torch.randn(7, d) for m, d in reversed(dims.items())}
    with _op_recorder() as through_contract:
        out = fusion(inputs)
    with _op_recorder() as by_hand:
        ref = reference(fusion, inputs)
    assert through_contract.ops == by_hand.ops and len(by_hand.ops) >= 3
    torch.testing.assert_close(out, ref)
