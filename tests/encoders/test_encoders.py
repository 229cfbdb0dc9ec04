"""Encoders: output shapes and masks, formulas written out by hand, masking and
batch invariances, and every bad input raising."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.data import ModalitySpec
from mmfuse.encoders import (
    AudioEncoder,
    EncoderError,
    ImageEncoder,
    SequenceEncoder,
    TabularEncoder,
    TextEncoder,
    VectorEncoder,
    build_encoder,
)
from mmfuse.fusions import FusionError

B = 4
SPECS = {
    "vector": (ModalitySpec("vector", (5,)), lambda: torch.randn(B, 5)),
    "sequence": (ModalitySpec("sequence", (6, 5)), lambda: torch.randn(B, 6, 5)),
    "image": (ModalitySpec("image", (1, 12, 12)), lambda: torch.randn(B, 1, 12, 12)),
    "audio": (ModalitySpec("audio", (8, 10)), lambda: torch.randn(B, 8, 10)),
    "text": (ModalitySpec("text", (7,), {"vocab_size": 30, "pad_id": 0}), lambda: torch.randint(1, 30, (B, 7))),
    "tabular": (
        ModalitySpec("tabular", (4,), {"num_numeric": 2, "cardinalities": [3, 5]}),
        lambda: torch.cat([torch.randn(B, 2), torch.randint(0, 3, (B, 1)).float(), torch.randint(0, 5, (B, 1)).float()], 1),
    ),
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_build_encoder_shapes_and_presence(kind: str) -> None:
    spec, make = SPECS[kind]
    enc = build_encoder(spec, 16)
    x = make()
    present = torch.tensor([True, False, True, True])
    y, mask = enc(x, present)
    if enc.outputs_tokens:
        assert y.shape == (B, x.shape[1], 16) and mask.shape == (B, x.shape[1])
        assert torch.equal(mask.any(dim=1), present)
    else:
        assert y.shape == (B, 16) and torch.equal(mask, present)
    assert torch.isfinite(y).all()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())


@pytest.mark.parametrize("kind", list(SPECS))
def test_batch_independence_and_missing_rows_ignored(kind: str) -> None:
    spec, make = SPECS[kind]
    enc = build_encoder(spec, 8).eval()
    x = make()
    present = torch.tensor([True, False, True, True])
    y, _ = enc(x, present)
    # each sample alone gives the same output as in the batch
    for i in (0, 2):
        yi, _ = enc(x[i : i + 1], present[i : i + 1])
        torch.testing.assert_close(yi[0], y[i], rtol=1e-5, atol=1e-6)
    # the values of a missing sample do not matter, not even NaN
    x2 = x.clone()
    x2[1] = float("nan") if x.is_floating_point() else 10**6
    y2, _ = enc(x2, present)
    assert torch.equal(y2, y)


def test_vector_encoder_is_mlp_with_layernorm() -> None:
    enc = VectorEncoder(5, 3, hidden_dims=(4,))
    x = torch.randn(2, 5)
    lin1, norm, lin2 = enc.mlp.fc1, enc.mlp.norm1, enc.mlp.fc_out
    h = torch.nn.functional.gelu(torch.nn.functional.layer_norm(x @ lin1.weight.T + lin1.bias, (4,), norm.weight, norm.bias))
    torch.testing.assert_close(enc(x)[0], h @ lin2.weight.T + lin2.bias)


def test_sequence_encoder_per_token_and_pooled() -> None:
    enc = SequenceEncoder(5, 8)
    x = torch.randn(3, 6, 5)
    tokens = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6]).bool()
    y, mask = enc(x, tokens)
    assert torch.equal(mask, tokens)
    torch.testing.assert_close(y[0, :3], enc.mlp(x[0, :3]))  # per token, padding cannot reach valid tokens
    pooled = SequenceEncoder(5, 8, pool=True)
    pooled.load_state_dict(enc.state_dict())
    p, pmask = pooled(x, tokens)
    torch.testing.assert_close(p[0], enc.mlp(x[0, :3]).mean(0))
    torch.testing.assert_close(p[1], enc.mlp(x[1, :1])[0])
    assert pmask.tolist() == [True, True, False]


def test_text_bag_of_words_formula_and_padding() -> None:
    enc = TextEncoder(20, 6, pad_id=0)
    ids = torch.tensor([[3, 5, 7, 0, 0], [4, 0, 0, 0, 0]])
    y, mask = enc(ids)
    assert mask.tolist() == [True, True]
    mean0 = enc.embed.weight[[3, 5, 7]].mean(0)
    torch.testing.assert_close(y[0], enc.proj(mean0))
    torch.testing.assert_close(y[1], enc.proj(enc.embed.weight[4]))
    # more padding, or a token mask hiding the extra tokens, changes nothing
    longer = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(enc(longer)[0], y)
    hidden = torch.tensor([[3, 5, 7, 9, 9], [4, 11, 0, 0, 0]])
    tok = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()
    torch.testing.assert_close(enc(hidden, tok)[0], y)


def test_text_transformer_tokens_and_empty_rows() -> None:
    enc = TextEncoder(20, 8, num_layers=1, num_heads=2, max_len=5, pool=False).eval()
    ids = torch.tensor([[3, 5, 0, 0, 0], [0, 0, 0, 0, 0]])
    y, mask = enc(ids, torch.tensor([True, True]))
    assert y.shape == (2, 5, 8) and mask.tolist() == [[True, True, False, False, False], [False] * 5]
    assert torch.isfinite(y).all()
    # masked tokens are kept out of attention: real ids behind a token mask change nothing
    other = torch.tensor([[3, 5, 9, 12, 4]])
    y2, _ = enc(other, torch.tensor([[True, True, False, False, False]]))
    torch.testing.assert_close(y2[0, :2], y[0, :2])


def test_tabular_formula() -> None:
    enc = TabularEncoder(2, [3, 5], 4, embed_dims=[2, 3])
    x = torch.tensor([[0.5, -1.0, 2.0, 4.0]])
    feats = torch.cat([x[0, :2], enc.embeds[0].weight[2], enc.embeds[1].weight[4]])
    torch.testing.assert_close(enc(x)[0][0], enc.mlp(feats))


def test_audio_frame_mask_excludes_padding() -> None:
    enc = AudioEncoder(8, 4, kernel_size=3).eval()
    x = torch.randn(1, 8, 10)
    frames = torch.zeros(1, 10, dtype=torch.bool)
    frames[:, :6] = True
    y, present = enc(x, frames)
    assert present.tolist() == [True]
    # what lies in the padded frames does not matter (they are zeroed before the convs)
    x2 = x.clone()
    x2[..., 6:] = 100.0
    torch.testing.assert_close(enc(x2, frames)[0], y)
    # equivalent to a clip of 6 frames padded with zeros, pooled over its 6 frames
    padded = torch.cat([x[..., :6], torch.zeros(1, 8, 4)], -1)
    h = enc.convs(padded).transpose(1, 2)[:, :6].mean(1)
    torch.testing.assert_close(y, enc.proj(h))


def test_image_encoder_any_size() -> None:
    enc = ImageEncoder(3, 5)
    for size in (1, 7, 28):
        assert enc(torch.randn(2, 3, size, size))[0].shape == (2, 5)


@pytest.mark.parametrize(
    ("make", "x", "mask", "match"),
    [
        (lambda: VectorEncoder(5, 4), torch.randn(2, 6), None, "expected input shape"),
        (lambda: VectorEncoder(5, 4), torch.randn(2, 5), torch.ones(2, 3, dtype=torch.bool), r"\(b,\) presence"),
        (lambda: VectorEncoder(5, 4), torch.randn(2, 5), torch.ones(2), "torch.bool"),
        (lambda: SequenceEncoder(5, 4), torch.randn(2, 5), None, "expected input shape"),
        (lambda: SequenceEncoder(5, 4), torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.bool), "expected shape"),
        (lambda: ImageEncoder(1, 4), torch.randn(2, 3, 8, 8), None, "expected input shape"),
        (lambda: AudioEncoder(8, 4), torch.randn(2, 9, 10), None, "expected input shape"),
        (lambda: TextEncoder(10, 4), torch.tensor([[1, 10]]), None, r"token ids in \[0, 10\)"),
        (lambda: TextEncoder(10, 4), torch.tensor([[1, -1]]), None, "token ids"),
        (lambda: TextEncoder(10, 4), torch.randn(2, 3), None, "int token ids"),
        (lambda: TabularEncoder(1, [3], 4), torch.tensor([[0.0, 3.0]]), None, r"column 0: expected a code in \[0, 3\)"),
        (lambda: TabularEncoder(1, [3], 4), torch.randn(2, 3), None, "expected input shape"),
    ],
)
def test_bad_inputs_raise(make, x, mask, match) -> None:
    with pytest.raises(EncoderError, match=match):
        make()(x, mask)


def test_encoder_error_is_a_fusion_error() -> None:
    assert issubclass(EncoderError, FusionError)


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        (ModalitySpec("video", (3,)), {}, "unknown modality kind"),  # type: ignore[arg-type]
        (ModalitySpec("image", (28, 28)), {}, r"\(c, h, w\)"),
        (ModalitySpec("text", (7,)), {}, "vocab_size"),
        (ModalitySpec("tabular", (4,), {"num_numeric": 1, "cardinalities": [3]}), {}, "shape"),
        (ModalitySpec("vector", (4,)), {"bogus": 1}, "bogus"),
        (ModalitySpec("text", (7,), {"vocab_size": 9}), {"num_layers": 1, "num_heads": 3}, "must divide"),
    ],
)
def test_build_encoder_bad_specs(spec, options, match) -> None:
    with pytest.raises(EncoderError, match=match):
        build_encoder(spec, 8, **options)


def test_a_new_modality_kind_is_one_registration(monkeypatch) -> None:
    """Adding a kind is a builder and a registration: build_encoder and its errors follow the registry."""
    from mmfuse.encoders import _base as enc_base
    from mmfuse.encoders import build_encoder, encoder_kinds, register_encoder_kind

    assert {"vector", "sequence", "image", "audio", "text", "tabular"} <= set(encoder_kinds())
    monkeypatch.setattr(enc_base, "_KINDS", dict(enc_base._KINDS))  # the registration ends with the test
    with pytest.raises(EncoderError, match="unknown modality kind 'video'"):
        build_encoder(ModalitySpec("video", (3, 8)), 4)  # type: ignore[arg-type]

    @register_encoder_kind("video", shape="(t, d)")
    def _video(shape, meta, out_dim, options):
        return VectorEncoder(shape[1], out_dim, **options)

    enc = build_encoder(ModalitySpec("video", (3, 8)), 4)  # type: ignore[arg-type]
    assert isinstance(enc, VectorEncoder) and "video" in encoder_kinds()
    with pytest.raises(EncoderError, match=r"video modality: expected a per-sample shape \(t, d\), got \(8,\)"):
        build_encoder(ModalitySpec("video", (8,)), 4)  # type: ignore[arg-type]
    with pytest.raises(EncoderError, match="video encoder: .*unexpected keyword"):
        build_encoder(ModalitySpec("video", (3, 8)), 4, nonsense=1)  # type: ignore[arg-type]
