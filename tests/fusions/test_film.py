"""``film``: parity with gamma * h + beta computed by hand from the module's weights.

h_i = A_i x_i + a_i,  gamma(c) = G c + g,  beta(c) = E c + e,  out = W s + w
chain:       s_1 = h_1,  s_j = gamma_j(s_{j-1}) * h_j + beta_j(s_{j-1})
all_to_one:  s = (prod_c gamma_c(h_c)) * h_t + sum_c beta_c(h_c)
"""

from __future__ import annotations

import pytest
import torch

import mmfuse
from mmfuse import FusionError

DIMS = {"audio": 3, "image": 5, "text": 4}
OUT = 3
K = 6
B = 4


def _lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


def _h(fusion: mmfuse.Fusion, inputs: dict) -> dict[str, torch.Tensor]:
    return {m: _lin(fusion.proj[m], x) for m, x in inputs.items()}


def test_two_modalities_conditioner_modulates_target() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = mmfuse.create_fusion("film", input_dims=dims, output_dim=OUT, dim=K)
    assert fusion.links == ("audio->text",)
    inputs = {m: x for m, x in _inputs().items() if m in dims}
    h = _h(fusion, inputs)
    gamma = _lin(fusion.gamma[0], h["audio"])
    beta = _lin(fusion.beta[0], h["audio"])
    expected = _lin(fusion.out, gamma * h["text"] + beta)
    out, info = fusion(inputs, return_intermediates=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(info.extras["gamma"]["audio->text"], gamma)
    torch.testing.assert_close(info.extras["beta"]["audio->text"], beta)


def test_chain_of_three_with_chosen_ends() -> None:
    fusion = mmfuse.create_fusion(
        "film", input_dims=DIMS, output_dim=OUT, dim=K, conditioner="text", target="image"
    )
    assert fusion.order == ("text", "audio", "image")
    inputs = _inputs()
    h = _h(fusion, inputs)
    s = h["text"]
    s = _lin(fusion.gamma[0], s) * h["audio"] + _lin(fusion.beta[0], s)
    s = _lin(fusion.gamma[1], s) * h["image"] + _lin(fusion.beta[1], s)
    torch.testing.assert_close(fusion(inputs), _lin(fusion.out, s))


def test_all_to_one_multiplies_gammas_and_adds_betas() -> None:
    fusion = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K, mode="all_to_one", target="audio")
    assert fusion.links == ("image->audio", "text->audio")
    inputs = _inputs()
    h = _h(fusion, inputs)
    gamma = _lin(fusion.gamma[0], h["image"]) * _lin(fusion.gamma[1], h["text"])
    beta = _lin(fusion.beta[0], h["image"]) + _lin(fusion.beta[1], h["text"])
    torch.testing.assert_close(fusion(inputs), _lin(fusion.out, gamma * h["audio"] + beta))


def test_sequences_are_pooled_over_valid_tokens() -> None:
    fusion = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K)
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(B, 6, DIMS["image"], generator=g)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3, 2])[:, None]
    pooled = (seq * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    inputs = _inputs()
    torch.testing.assert_close(
        fusion({**inputs, "image": seq}, {"image": mask}), fusion({**inputs, "image": pooled})
    )


def test_missing_conditioner_means_no_modulation() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = mmfuse.create_fusion("film", input_dims=dims, output_dim=OUT, dim=K)
    inputs = {m: x for m, x in _inputs().items() if m in dims}
    present = torch.tensor([True, False, True, False])
    out, info = fusion(inputs, {"audio": present}, return_intermediates=True)
    h = _h(fusion, inputs)
    unmodulated = _lin(fusion.out, h["text"])
    torch.testing.assert_close(out[~present], unmodulated[~present])
    assert torch.equal(info.extras["gamma"]["audio->text"][~present], torch.ones(2, K))
    assert torch.equal(info.extras["beta"]["audio->text"][~present], torch.zeros(2, K))
    torch.testing.assert_close(out[present], fusion(inputs)[present])


def test_missing_target_uses_conditioner_representation() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = mmfuse.create_fusion("film", input_dims=dims, output_dim=OUT, dim=K)
    inputs = {m: x for m, x in _inputs().items() if m in dims}
    out = fusion(inputs, {"text": torch.tensor([False, True, True, True])})
    torch.testing.assert_close(out[0], _lin(fusion.out, _h(fusion, inputs)["audio"])[0])


def test_chain_skips_missing_links() -> None:
    fusion = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K)
    assert fusion.order == ("audio", "image", "text")
    inputs = _inputs()
    h = _h(fusion, inputs)
    # sample 0: audio missing -> chain starts at image; sample 1: image missing -> audio's
    # representation passes through to modulate text with link 1
    masks = {"audio": torch.tensor([False, True, True, True]), "image": torch.tensor([True, False, True, True])}
    out = fusion(inputs, masks)
    s0 = _lin(fusion.gamma[1], h["image"]) * h["text"] + _lin(fusion.beta[1], h["image"])
    s1 = _lin(fusion.gamma[1], h["audio"]) * h["text"] + _lin(fusion.beta[1], h["audio"])
    torch.testing.assert_close(out[0], _lin(fusion.out, s0)[0])
    torch.testing.assert_close(out[1], _lin(fusion.out, s1)[1])


def test_all_to_one_missing_target_and_conditioner() -> None:
    fusion = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K, mode="all_to_one")
    assert fusion.target == "text"
    inputs = _inputs()
    h = _h(fusion, inputs)
    masks = {"text": torch.tensor([False, True, True, True]), "image": torch.tensor([True, False, True, True])}
    out = fusion(inputs, masks)
    # sample 0: no target -> mean of the conditioners' representations
    torch.testing.assert_close(out[0], _lin(fusion.out, (h["audio"] + h["image"]) / 2)[0])
    # sample 1: image missing -> only audio modulates
    s1 = _lin(fusion.gamma[0], h["audio"]) * h["text"] + _lin(fusion.beta[0], h["audio"])
    torch.testing.assert_close(out[1], _lin(fusion.out, s1)[1])


@pytest.mark.parametrize(
    "options",
    [
        {"target": "video"},
        {"conditioner": "video"},
        {"target": "text", "conditioner": "text"},
        {"mode": "all_to_one", "conditioner": "audio"},
        {"mode": "star"},
        {"dim": 0},
        {"dropout": 1.5},
    ],
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(FusionError):
        mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, **options)


def test_one_modality_is_refused() -> None:
    with pytest.raises(FusionError, match="at least 2 modalities"):
        mmfuse.create_fusion("film", input_dims={"audio": 3}, output_dim=OUT)


@pytest.mark.parametrize("mode", ["chain", "all_to_one"])
def test_state_dict_round_trip_is_exact(mode: str) -> None:
    torch.manual_seed(0)
    a = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K, mode=mode)
    torch.manual_seed(1)
    b = mmfuse.create_fusion("film", input_dims=DIMS, output_dim=OUT, dim=K, mode=mode)
    inputs = _inputs()
    assert not torch.equal(a(inputs), b(inputs))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(inputs), b(inputs))
