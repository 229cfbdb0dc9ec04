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


def _film(**kw) -> mmfuse.Fusion:
    """A film fusion with random FiLM weights (they start at zero: no modulation), so that
    the parity tests below exercise gamma and beta."""
    fusion = mmfuse.create_fusion("film", **kw)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in list(fusion.gamma) + list(fusion.beta):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
    return fusion


def _lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


def _h(fusion: mmfuse.Fusion, inputs: dict) -> dict[str, torch.Tensor]:
    return {m: _lin(fusion.proj[m], x) for m, x in inputs.items()}


def test_two_modalities_conditioner_modulates_target() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = _film(input_dims=dims, output_dim=OUT, dim=K)
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
    # without masks or intermediates: the fast path; with them: the general one
    torch.testing.assert_close(fusion(inputs), _lin(fusion.out, s))
    torch.testing.assert_close(fusion(inputs, return_intermediates=True)[0], _lin(fusion.out, s))
    all_kept = {m: torch.ones(B, dtype=torch.bool) for m in inputs}
    torch.testing.assert_close(fusion(inputs, all_kept), _lin(fusion.out, s))


def test_all_to_one_multiplies_gammas_and_adds_betas() -> None:
    fusion = _film(input_dims=DIMS, output_dim=OUT, dim=K, mode="all_to_one", target="audio")
    assert fusion.links == ("image->audio", "text->audio")
    inputs = _inputs()
    h = _h(fusion, inputs)
    gamma = _lin(fusion.gamma[0], h["image"]) * _lin(fusion.gamma[1], h["text"])
    beta = _lin(fusion.beta[0], h["image"]) + _lin(fusion.beta[1], h["text"])
    torch.testing.assert_close(fusion(inputs), _lin(fusion.out, gamma * h["audio"] + beta))


def test_sequences_are_pooled_over_valid_tokens() -> None:
    fusion = _film(input_dims=DIMS, output_dim=OUT, dim=K)
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(B, 6, DIMS["image"], generator=g)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3, 2])[:, None]
    pooled = (seq * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    inputs = _inputs()
    torch.testing.assert_close(
        fusion({**inputs, "image": seq}, {"image": mask}), fusion({**inputs, "image": pooled})
    )


def test_fresh_module_is_close_to_no_modulation() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = mmfuse.create_fusion("film", input_dims=dims, output_dim=OUT, dim=64)
    inputs = {m: torch.randn(512, d) for m, d in dims.items()}
    _, info = fusion(inputs, return_intermediates=True)
    c = _h(fusion, inputs)["audio"]
    rms = c.pow(2).mean().sqrt()
    # documented: gamma - 1 and beta have a std of 0.1 * rms(c) per entry
    for got in (info.extras["gamma"]["audio->text"] - 1, info.extras["beta"]["audio->text"]):
        ratio = float(got.detach().std() / rms.detach())
        assert 0.07 < ratio < 0.13, ratio


def _set_running_means(fusion: mmfuse.Fusion, seed: int = 5) -> dict[str, torch.Tensor]:
    """Give every modality's running input mean a known random value ``mu_m`` and return them."""
    g = torch.Generator().manual_seed(seed)
    mus = {}
    for m in fusion.modalities:
        mus[m] = torch.randn(fusion.input_dims[m], generator=g)
        fusion.input_mean.assign(m, mus[m])
    return mus


def test_missing_conditioner_or_target_is_its_projected_running_mean() -> None:
    dims = {"audio": 3, "text": 4}
    fusion = _film(input_dims=dims, output_dim=OUT, dim=K).eval()
    mu = _set_running_means(fusion)
    inputs = {m: x for m, x in _inputs().items() if m in dims}
    h = _h(fusion, inputs)
    h_mu = {m: _lin(fusion.proj[m], mu[m]) for m in dims}
    # the missing conditioner is W_a mu_audio + a; the link still applies
    audio_here = torch.tensor([True, False, True, False])
    out = fusion(inputs, {"audio": audio_here})
    s = _lin(fusion.gamma[0], h_mu["audio"]) * h["text"] + _lin(fusion.beta[0], h_mu["audio"])
    torch.testing.assert_close(out[~audio_here], _lin(fusion.out, s)[~audio_here])
    torch.testing.assert_close(out[audio_here], fusion(inputs)[audio_here])
    # the missing target is W_t mu_text + t
    text_here = torch.tensor([False, True, True, True])
    out = fusion(inputs, {"text": text_here})
    s = _lin(fusion.gamma[0], h["audio"]) * h_mu["text"] + _lin(fusion.beta[0], h["audio"])
    torch.testing.assert_close(out[0], _lin(fusion.out, s)[0])
    # the stand-in's projection is trained by the rows whose modality is missing
    fusion.zero_grad()
    fusion(inputs, {"text": text_here})[0].sum().backward()
    assert fusion.proj["text"].weight.grad.abs().sum() > 0


def test_chain_fills_missing_links_with_their_running_means() -> None:
    fusion = _film(input_dims=DIMS, output_dim=OUT, dim=K).eval()
    assert fusion.order == ("audio", "image", "text")
    mu = _set_running_means(fusion, seed=6)
    inputs = _inputs()
    h = _h(fusion, inputs)
    h_mu = {m: _lin(fusion.proj[m], mu[m]) for m in DIMS}
    masks = {"audio": torch.tensor([False, True, True, True]), "image": torch.tensor([True, False, True, True])}
    out = fusion(inputs, masks)

    def chain(a: torch.Tensor, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = _lin(fusion.gamma[0], a) * i + _lin(fusion.beta[0], a)
        return _lin(fusion.out, _lin(fusion.gamma[1], s) * t + _lin(fusion.beta[1], s))

    # sample 0: audio missing -> its running mean; sample 1: image missing -> its running mean
    torch.testing.assert_close(out[0], chain(h_mu["audio"].expand(B, -1), h["image"], h["text"])[0])
    torch.testing.assert_close(out[1], chain(h["audio"], h_mu["image"].expand(B, -1), h["text"])[1])
    torch.testing.assert_close(out[2:], fusion(inputs)[2:])
    changed = dict(inputs, audio=inputs["audio"] + 100)
    torch.testing.assert_close(fusion(changed, masks)[0], out[0])


def test_training_tracks_the_running_mean_of_present_pooled_inputs() -> None:
    fusion = _film(input_dims=DIMS, output_dim=OUT, dim=K).train()
    g = torch.Generator().manual_seed(9)
    seq = torch.randn(B, 5, DIMS["image"], generator=g)
    tok = torch.arange(5)[None, :] < torch.tensor([5, 2, 1, 3])[:, None]
    present = torch.tensor([True, False, True, True])
    inputs = {**_inputs(), "image": seq}
    fusion(inputs, {"image": tok & present[:, None]})
    # image: the mean over present samples of each one's mean over its valid tokens
    pooled = (seq * tok[..., None]).sum(1) / tok.sum(1, keepdim=True)
    torch.testing.assert_close(fusion.input_mean.value("image"), pooled[present].mean(0))
    torch.testing.assert_close(fusion.input_mean.value("audio"), inputs["audio"].mean(0))
    # eval mode leaves the means alone
    before = {m: fusion.input_mean.value(m) for m in DIMS}
    fusion.eval()(_inputs(seed=2))
    for m in DIMS:
        torch.testing.assert_close(fusion.input_mean.value(m), before[m])


def test_all_to_one_missing_target_and_conditioner() -> None:
    fusion = _film(input_dims=DIMS, output_dim=OUT, dim=K, mode="all_to_one").eval()
    assert fusion.target == "text"
    mu = _set_running_means(fusion, seed=7)
    inputs = _inputs()
    h = _h(fusion, inputs)
    h_mu = {m: _lin(fusion.proj[m], mu[m]).expand(B, -1) for m in DIMS}
    masks = {"text": torch.tensor([False, True, True, True]), "image": torch.tensor([True, False, True, True])}
    out = fusion(inputs, masks)

    def star(a: torch.Tensor, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = _lin(fusion.gamma[0], a) * _lin(fusion.gamma[1], i)
        return _lin(fusion.out, g * t + _lin(fusion.beta[0], a) + _lin(fusion.beta[1], i))

    # sample 0: no target -> its projected running mean; sample 1: no image -> its projected running mean
    torch.testing.assert_close(out[0], star(h["audio"], h["image"], h_mu["text"])[0])
    torch.testing.assert_close(out[1], star(h["audio"], h_mu["image"], h["text"])[1])


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
        _film(input_dims=DIMS, output_dim=OUT, **options)


def test_one_modality_is_refused() -> None:
    with pytest.raises(FusionError, match="at least 2 modalities"):
        _film(input_dims={"audio": 3}, output_dim=OUT)


@pytest.mark.parametrize("mode", ["chain", "all_to_one"])
def test_state_dict_round_trip_is_exact(mode: str) -> None:
    torch.manual_seed(0)
    a = _film(input_dims=DIMS, output_dim=OUT, dim=K, mode=mode)
    torch.manual_seed(1)
    b = _film(input_dims=DIMS, output_dim=OUT, dim=K, mode=mode)
    inputs = _inputs()
    assert not torch.equal(a(inputs), b(inputs))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(inputs), b(inputs))
