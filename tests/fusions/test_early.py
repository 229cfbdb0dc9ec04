"""Early fusion: parity with Encoder(Concat(x_1, ..., x_M, presence)) written out by hand."""

from __future__ import annotations

import pytest
import torch
from _fusion_helpers import check_contract
from torch import Tensor, nn

import mmfuse
from mmfuse import FusionError
from mmfuse.fusions.early import EarlyFusion

DIMS = {"text": 4, "audio": 3, "image": 5}  # sorted order: audio, image, text
B = 6
OUT = 7


def gelu_mlp(x: Tensor, mlp: nn.Module) -> Tensor:
    """Linear -> GELU -> Linear by hand, with the module's own weights."""
    first, last = mlp.fc1, mlp.fc_out
    hidden = nn.functional.gelu(x @ first.weight.T + first.bias)
    return hidden @ last.weight.T + last.bias


def vectors(seed: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


def test_vectors_equal_mlp_of_concat_with_presence() -> None:
    fusion = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, hidden_dims=(9,)).eval()
    x = vectors()
    out, info = fusion(x, return_intermediates=True)
    concat = torch.cat([x["audio"], x["image"], x["text"], torch.ones(B, 3)], dim=1)
    assert fusion.concat_dim == 3 + 5 + 4 + 3 == EarlyFusion.concat_dim_for(DIMS)
    torch.testing.assert_close(info.extras["concat"], concat)
    torch.testing.assert_close(out, gelu_mlp(concat, fusion.encoder))
    assert info.modality_weights is None and info.contributions is None
    assert bool(info.present.all())


def test_missing_modality_is_zeros_and_a_zero_indicator() -> None:
    fusion = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, hidden_dims=(9,)).eval()
    x = vectors()
    present = torch.tensor([True, False, True, True, False, True])
    out, info = fusion(x, {"image": present}, return_intermediates=True)
    image = x["image"] * present[:, None]
    indicators = torch.stack([torch.ones(B), present.float(), torch.ones(B)], dim=1)
    concat = torch.cat([x["audio"], image, x["text"], indicators], dim=1)
    torch.testing.assert_close(info.extras["concat"], concat)
    torch.testing.assert_close(out, gelu_mlp(concat, fusion.encoder))
    torch.testing.assert_close(info.present[:, 1], present)


def test_presence_features_tell_missing_from_zero() -> None:
    x = vectors()
    zeroed = {**x, "image": torch.zeros(B, 5)}
    missing = {"image": torch.zeros(B, dtype=torch.bool)}
    with_flags = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT).eval()
    assert not torch.allclose(with_flags(x, missing), with_flags(zeroed))
    without = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, presence_features=False).eval()
    assert without.concat_dim == 12 == EarlyFusion.concat_dim_for(DIMS, presence_features=False)
    torch.testing.assert_close(without(x, missing), without(zeroed))


def test_sequences_are_pooled_by_masked_mean() -> None:
    fusion = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, hidden_dims=(9,)).eval()
    x = vectors()
    g = torch.Generator().manual_seed(5)
    seq = torch.randn(B, 4, 5, generator=g)
    lengths = torch.tensor([1, 4, 2, 3, 4, 1])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    out = fusion({**x, "image": seq}, {"image": mask})
    pooled = (seq * mask[..., None]).sum(1) / lengths[:, None]
    concat = torch.cat([x["audio"], pooled, x["text"], torch.ones(B, 3)], dim=1)
    torch.testing.assert_close(out, gelu_mlp(concat, fusion.encoder))


def test_aligned_tokens_are_concatenated_per_token_then_averaged() -> None:
    dims = {"a": 2, "b": 3}
    fusion = mmfuse.create_fusion("early", input_dims=dims, output_dim=OUT, hidden_dims=(6,), align="tokens")
    fusion.eval()
    g = torch.Generator().manual_seed(2)
    t = 5
    xa, xb = torch.randn(B, t, 2, generator=g), torch.randn(B, t, 3, generator=g)
    ma = torch.arange(t)[None, :] < torch.tensor([5, 2, 3, 1, 4, 5])[:, None]
    mb = torch.arange(t)[None, :] < torch.tensor([3, 4, 3, 2, 4, 1])[:, None]
    mb[4] = False  # modality b missing for sample 4
    out, info = fusion({"a": xa, "b": xb}, {"a": ma, "b": mb}, return_intermediates=True)
    concat = torch.cat([xa * ma[..., None], xb * mb[..., None], ma[..., None].float(), mb[..., None].float()], -1)
    torch.testing.assert_close(info.extras["concat"], concat)
    per_token = gelu_mlp(concat, fusion.encoder)  # (b, t, d_out)
    valid = (ma | mb).float()
    expected = (per_token * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
    torch.testing.assert_close(out, expected)
    # extra padding after the last token changes nothing
    pad = lambda v: torch.cat([v, torch.randn(B, 2, v.shape[-1])], 1)  # noqa: E731
    pad_m = lambda m: torch.cat([m, torch.zeros(B, 2, dtype=torch.bool)], 1)  # noqa: E731
    torch.testing.assert_close(fusion({"a": pad(xa), "b": pad(xb)}, {"a": pad_m(ma), "b": pad_m(mb)}), out)


def test_aligned_tokens_need_equal_length_sequences() -> None:
    fusion = mmfuse.create_fusion("early", input_dims={"a": 2, "b": 3}, output_dim=4, align="tokens")
    with pytest.raises(FusionError, match=r"modality 'b': expected 5 tokens \(as 'a'\), got 4"):
        fusion({"a": torch.randn(2, 5, 2), "b": torch.randn(2, 4, 3)})
    with pytest.raises(FusionError, match=r"modality 'a': expected a sequence \(b, t, d\), got shape \(2, 2\)"):
        fusion({"a": torch.randn(2, 2), "b": torch.randn(2, 4, 3)})


def test_custom_encoder_replaces_the_mlp() -> None:
    encoder = nn.Linear(EarlyFusion.concat_dim_for(DIMS), OUT)
    fusion = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, encoder=encoder).eval()
    assert fusion.encoder is encoder
    x = vectors()
    concat = torch.cat([x["audio"], x["image"], x["text"], torch.ones(B, 3)], dim=1)
    torch.testing.assert_close(fusion(x), concat @ encoder.weight.T + encoder.bias)
    assert {n for n, _ in fusion.named_parameters()} == {"encoder.weight", "encoder.bias"}


def test_custom_encoder_of_the_wrong_width_raises() -> None:
    fusion = mmfuse.create_fusion(
        "early", input_dims=DIMS, output_dim=OUT, encoder=nn.Linear(EarlyFusion.concat_dim_for(DIMS), OUT + 1)
    )
    with pytest.raises(FusionError, match=f"encoder output: expected last dim {OUT}, got {OUT + 1}"):
        fusion(vectors())


def test_norm_and_dropout_options_reach_the_mlp() -> None:
    fusion = mmfuse.create_fusion(
        "early", input_dims=DIMS, output_dim=OUT, hidden_dims=(8, 6), norm_layer=nn.LayerNorm, dropout=0.1
    )
    kinds = [type(layer).__name__ for layer in fusion.encoder.children()]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout", "Linear"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"align": "concat"}, r"align: expected one of \['pool', 'tokens'\], got 'concat'"),
        ({"dropout": 1.0}, r"dropout: expected a float in \[0, 1\), got 1.0"),
        ({"hidden_dims": (8, 0)}, r"hidden_dims: expected a sequence of positive ints, got \(8, 0\)"),
        ({"encoder": lambda x: x}, "encoder: expected an nn.Module or None, got <function"),
    ],
)
def test_bad_options_raise(options: dict, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, **options)


@pytest.mark.parametrize(
    "options",
    [{"presence_features": False}, {"hidden_dims": (), "norm_layer": nn.LayerNorm}, {"align": "tokens"}],
    ids=["no-presence", "linear", "tokens"],
)
def test_options_keep_the_contract(options: dict) -> None:
    torch.manual_seed(0)
    options = {"hidden_dims": (8,), **options}
    fusion = mmfuse.create_fusion("early", input_dims=DIMS, output_dim=OUT, **options)
    g = torch.Generator().manual_seed(7)
    inputs = {m: torch.randn(B, 4, d, generator=g) for m, d in DIMS.items()}
    masks = {m: torch.rand(B, 4, generator=g) > 0.3 for m in DIMS}
    masks["text"][:, 0] = True
    check_contract(fusion, inputs, masks, missing="image")
