"""Pretrained encoders loaded by local path (the code path a hub name takes) and the
embedding cache: parity with the backbone called by hand, the cache reused, invalidated,
resumed and rebuilt, trainable-parameter counts, and end-to-end fits on real data.

The models are tiny and built from configs here (no network): a 2-layer BERT of width
32 with a WordPiece tokenizer from a small vocabulary file, and a 2-layer ViT with its
image processor.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# read by huggingface_hub when it is imported: no attempt to reach the hub (there is no network)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="the hf: encoders need transformers (mmfuse[hf])")

from mmfuse.data import DatasetSplits, ModalitySpec, MultimodalDataset  # noqa: E402
from mmfuse.encoders import (  # noqa: E402
    EncoderSpec,
    PretrainedEncoder,
    build_encoder,
    encode_dataset,
    load_backbone,
    parse_encoder,
)
from mmfuse.errors import ConfigError  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a dress is nice love it fit small large color too short long fabric soft".split()


def _save_bert(folder: Path, words: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _save_vit(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(cfg).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_bert(tmp_path_factory.mktemp("bert"), WORDS)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_vit(tmp_path_factory.mktemp("vit"))


# A small text + image dataset; the text vocabulary (id -> word) lives in info["vocab"]
VOCAB = ["<pad>", "<unk>", *WORDS, "zebra"]  # "zebra" is not in the BERT vocabulary


def _toy(n: int = 24, seed: int = 0, t: int = 6) -> DatasetSplits:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, len(VOCAB), (n, t), generator=g)
    ids[:, -2:] = 0  # padding
    ids[0, :] = 0  # an empty text
    present = torch.ones(n, dtype=torch.bool)
    present[3] = False
    images = torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.arange(n) % 2
    specs = {"text": ModalitySpec("text", (t,), {"vocab_size": len(VOCAB), "pad_id": 0, "unk_id": 1}),
             "image": ModalitySpec("image", (1, 8, 8))}
    full = MultimodalDataset("toy", {"text": ids, "image": images}, labels, specs=specs, num_classes=2,
                             masks={"text": present})
    parts = [torch.arange(0, n // 2), torch.arange(n // 2, 3 * n // 4), torch.arange(3 * n // 4, n)]
    return DatasetSplits("toy", *(full.subset(p) for p in parts), info={"vocab": VOCAB})


class _CountCalls:
    """Counts the rows each backbone's model.forward sees (patched on the class)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
        self.rows = 0
        orig = cls.forward

        def forward(mod, *args, **kwargs):  # type: ignore[no-untyped-def]
            first = args[0] if args else next(iter(kwargs.values()))
            self.rows += int(first.shape[0])
            return orig(mod, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", forward)


# ---------------------------------------------------------------- names and errors


def test_parse_encoder_options_and_bad_names() -> None:
    spec = parse_encoder("hf:./my-bert,finetune_last=2,tokens,max_length=32,revision=v1")
    assert spec == EncoderSpec("hf:./my-bert", finetune=2, output="tokens", max_length=32, revision="v1")
    assert parse_encoder(str(spec)) == spec
    assert EncoderSpec.from_json(spec.to_json()) == spec
    assert parse_encoder("timm:resnet18").frozen and parse_encoder("hf:x,finetune").finetune == "all"
    for bad in ("resnet18", "hf:", "hf:x,finetune_last=0", "hf:x,finetune_last=two", "hf:x,fast", ""):
        with pytest.raises(ConfigError):
            parse_encoder(bad)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'mmfuse\[hf\]'"):
        load_backbone("hf:bert-base-uncased", "text")


def test_timm_needs_timm_or_is_tested() -> None:
    try:
        import timm  # noqa: F401
    except Exception as err:  # timm absent, or its torchvision does not import
        with pytest.raises(ConfigError, match=r"mmfuse\[timm\]"):
            load_backbone("timm:resnet18", "image")
        pytest.skip(f"timm does not import here ({type(err).__name__}); only its error is tested")
    with pytest.raises(ConfigError, match="timm models encode images"):
        load_backbone("timm:resnet18", "text")


def test_unreachable_hub_name_says_how_to_use_a_local_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub name the Hub cannot provide. Offline mode is set (as HF_HUB_OFFLINE=1 would, read
    at import) so that the libraries answer at once: with the network merely absent they
    retry for about 25 s before giving the same answer, and the message is the same."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)
    with pytest.raises(ConfigError, match=r"'nobody-xyz/no-model'.*local copy.*hf:\./no-model"):
        load_backbone("hf:nobody-xyz/no-model", "text")


def test_local_folder_without_the_preprocessor(vit_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not hold a complete"):
        load_backbone(f"hf:{vit_dir}", "text")  # a ViT folder has no tokenizer


# ---------------------------------------------------------------- parity


def test_text_embedding_is_masked_mean_of_bert_states(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    out = encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    assert out.specs["text"].kind == "vector" and out.specs["text"].shape == (32,)
    assert out.specs["image"] == splits.specs["image"]  # untouched
    model = transformers.BertModel.from_pretrained(bert_dir).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(bert_dir)
    ids = splits.train.inputs["text"]
    for r in (0, 1, 5):
        words = ["[UNK]" if i == 1 else VOCAB[i] for i in ids[r].tolist() if i != 0]
        enc = tok([" ".join(words)], return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        torch.testing.assert_close(out.train.inputs["text"][r], h.mean(0), atol=1e-5, rtol=1e-5)
    # the missing sample (row 3) is zeros with mask False; the others are present
    assert not out.train.masks["text"][3] and torch.all(out.train.inputs["text"][3] == 0)
    assert out.train.masks["text"].sum() == len(out.train) - 1


def test_image_embedding_is_vit_pooler_of_the_processed_image(vit_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    out = encode_dataset(splits, {"image": f"hf:{vit_dir}"}, cache_dir=tmp_path, progress=False)
    model = transformers.ViTModel.from_pretrained(vit_dir).eval()
    x = splits.val.inputs["image"][:3]
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    pix = ((x - lo) / (hi - lo)).repeat(1, 3, 1, 1)
    pix = torch.nn.functional.interpolate(pix, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        want = model(pixel_values=(pix - 0.5) / 0.5).pooler_output
    torch.testing.assert_close(out.val.inputs["image"][:3], want, atol=1e-5, rtol=1e-5)


def test_token_output_keeps_the_attention_mask(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    out = encode_dataset(splits, {"text": f"hf:{bert_dir},tokens,max_length=10"}, cache_dir=tmp_path, progress=False)
    spec = out.specs["text"]
    assert spec.kind == "sequence" and spec.shape == (10, 32)
    mask = out.train.masks["text"]
    ids = splits.train.inputs["text"]
    # [CLS] + words + [SEP] are valid, the rest is padding; a missing sample has no valid token
    want = (ids != 0).sum(1) + 2
    want[3] = 0
    assert torch.equal(mask.sum(1), want)
    assert torch.all(out.train.inputs["text"][~mask] == 0)


# ---------------------------------------------------------------- the cache


def test_cache_is_reused_without_calling_the_encoder(bert_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _CountCalls(monkeypatch, transformers.BertModel)
    splits = _toy()
    first = encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    encoded = calls.rows
    assert encoded >= len(splits.train) + len(splits.val) + len(splits.test)
    stats: dict = {}
    again = encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False, stats=stats)
    assert calls.rows - encoded == 1  # only the one-row probe of the hidden size at load time
    assert all(s.encoded == 0 and s.reused > 0 for s in stats["text"].values())
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).inputs["text"], getattr(again, split).inputs["text"])
        assert torch.equal(getattr(first, split).masks["text"], getattr(again, split).masks["text"])


def test_cache_off_encodes_every_time(bert_dir: Path, tmp_path: Path) -> None:
    stats: dict = {}
    encode_dataset(_toy(), {"text": f"hf:{bert_dir}"}, cache=False, cache_dir=tmp_path, progress=False, stats=stats)
    assert not any(tmp_path.iterdir())
    assert all(s.reused == 0 and s.encoded > 0 for s in stats["text"].values())


def test_changed_data_invalidates_only_its_split(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    splits.val.inputs["text"][2, 0] = 5  # one token of one validation review
    stats: dict = {}
    encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["text"]["val"].encoded == len(splits.val)
    assert stats["text"]["train"].encoded == 0 and stats["text"]["test"].encoded == 0


def test_changed_weights_invalidate_everything(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    other = _save_bert(tmp_path / "bert2", WORDS, seed=0)
    encode_dataset(splits, {"text": f"hf:{other}"}, cache_dir=tmp_path / "c", progress=False)
    stats: dict = {}
    encode_dataset(splits, {"text": f"hf:{other}"}, cache_dir=tmp_path / "c", progress=False, stats=stats)
    assert all(s.encoded == 0 for s in stats["text"].values())  # nothing changed: reused
    model = transformers.BertModel.from_pretrained(other)
    with torch.no_grad():
        model.encoder.layer[1].output.dense.bias.add_(1e-3)  # one bias, slightly changed
    model.save_pretrained(other)
    encode_dataset(splits, {"text": f"hf:{other}"}, cache_dir=tmp_path / "c", progress=False, stats=stats)
    assert all(s.encoded > 0 and s.reused == 0 for s in stats["text"].values())


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_manifest", "garbage_manifest", "newer_manifest",
                                    "manifest_as_written_before"])
def test_corrupt_entry_is_detected_and_rebuilt(bert_dir: Path, tmp_path: Path, damage: str) -> None:
    splits = _toy()
    enc = {"text": f"hf:{bert_dir}"}
    clean = encode_dataset(splits, enc, cache_dir=tmp_path, progress=False, chunk_size=4)
    folder = next(tmp_path.glob("text-train-*"))
    chunk = folder / "chunk-00001.safetensors"
    blob = bytearray(chunk.read_bytes())
    if damage == "flip":
        blob[-3] ^= 0xFF  # a float of the embeddings: only the manifest's checksum can tell
        chunk.write_bytes(bytes(blob))
    elif damage == "truncate":
        chunk.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "delete_manifest":
        (folder / "manifest.json").unlink()
    elif damage in ("newer_manifest", "manifest_as_written_before"):
        doc = json.loads((folder / "manifest.json").read_text())
        assert doc.pop("format") == "mmfuse.embedding_cache/1"
        layout = {"format": "mmfuse.embedding_cache/2"} if damage == "newer_manifest" else {"version": 1}
        (folder / "manifest.json").write_text(json.dumps({**doc, **layout}))
    else:
        (folder / "manifest.json").write_text('{"key": 3, "chunks": "nope"')
    stats: dict = {}
    again = encode_dataset(splits, enc, cache_dir=tmp_path, progress=False, chunk_size=4, stats=stats)
    st = stats["text"]["train"]
    if damage == "manifest_as_written_before":  # the earlier mmfuse's "version": 1: its chunks are used
        assert st.reused == len(splits.train) and st.encoded == 0
    elif damage in ("delete_manifest", "garbage_manifest", "newer_manifest"):  # no checksum to trust: encoded again
        assert st.reused == 0 and st.encoded == len(splits.train) and (folder / "manifest.json").is_file()
    else:
        assert st.rebuilt_chunks == 1 and st.encoded == 4 and st.reused == len(splits.train) - 4
    torch.testing.assert_close(again.train.inputs["text"], clean.train.inputs["text"])
    third: dict = {}
    encode_dataset(splits, enc, cache_dir=tmp_path, progress=False, chunk_size=4, stats=third)
    assert third["text"]["train"].encoded == 0 and third["text"]["train"].rebuilt_chunks == 0


def test_encoding_resumes_after_a_crash(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    enc = EncoderSpec(f"hf:{bert_dir}", batch_size=2)
    seen = {"rows": 0}

    def crashing(spec: EncoderSpec, kind: str):  # type: ignore[no-untyped-def]
        bb = load_backbone(spec, kind)
        orig = bb.forward

        def forward(raw):  # type: ignore[no-untyped-def]
            if seen["rows"] >= 8:
                raise KeyboardInterrupt  # killed after two chunks of 4
            seen["rows"] += len(raw)
            return orig(raw)

        bb.forward = forward  # type: ignore[method-assign]
        return bb

    with pytest.raises(KeyboardInterrupt):
        encode_dataset(splits, {"text": enc}, cache_dir=tmp_path, progress=False, chunk_size=4,
                       backbone_factory=crashing)
    stats: dict = {}
    resumed = encode_dataset(splits, {"text": enc}, cache_dir=tmp_path, progress=False, chunk_size=4, stats=stats)
    assert stats["text"]["train"].reused == 8 and stats["text"]["train"].encoded == len(splits.train) - 8
    fresh = encode_dataset(splits, {"text": enc}, cache=False, progress=False)
    torch.testing.assert_close(resumed.train.inputs["text"], fresh.train.inputs["text"])


def test_bad_requests_raise(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        encode_dataset(splits, {"audio": f"hf:{bert_dir}"}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="fine-tunes"):
        encode_dataset(splits, {"text": f"hf:{bert_dir},finetune_last=1"}, cache_dir=tmp_path)
    no_vocab = DatasetSplits("toy", splits.train, splits.val, splits.test, info={})
    with pytest.raises(ConfigError, match="vocabulary"):
        encode_dataset(no_vocab, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path)


def test_raw_strings_instead_of_the_stored_ids(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    raw = {s: ["the dress is nice"] * len(getattr(splits, s)) for s in ("train", "val", "test")}
    out = encode_dataset(splits, {"text": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False,
                         raw_inputs={"text": raw})
    x = out.train.inputs["text"]
    present = out.train.masks["text"]
    torch.testing.assert_close(x[present], x[present][:1].expand(int(present.sum()), -1))


# ---------------------------------------------------------------- inside the model


def _trainable(mod: torch.nn.Module) -> int:
    return sum(p.numel() for p in mod.parameters() if p.requires_grad)


def test_frozen_and_finetune_last_parameter_counts(bert_dir: Path) -> None:
    spec = ModalitySpec("text", (6,), {"vocab_size": len(VOCAB), "pad_id": 0, "vocab": VOCAB})
    frozen = build_encoder(spec, 8, pretrained=f"hf:{bert_dir}")
    last1 = build_encoder(spec, 8, pretrained=f"hf:{bert_dir},finetune_last=1")
    full = build_encoder(spec, 8, pretrained=f"hf:{bert_dir},finetune")
    assert isinstance(frozen, PretrainedEncoder)
    bert = last1.backbone.model
    proj = 32 * 8 + 8
    layer = sum(p.numel() for p in bert.encoder.layer[1].parameters())
    pooler = 32 * 32 + 32
    assert _trainable(frozen) == proj
    assert _trainable(last1) == proj + layer + pooler
    assert _trainable(full) == proj + sum(p.numel() for p in bert.parameters())
    with pytest.raises(ConfigError, match="at most 2 blocks"):
        build_encoder(spec, 8, pretrained=f"hf:{bert_dir},finetune_last=3")


def test_finetune_last_updates_only_the_last_block(vit_dir: Path) -> None:
    from mmfuse.models import build_model

    splits = _toy()
    model = build_model(splits, fusion="early", hidden_dim=8,
                        encoder_options={"image": {"pretrained": f"hf:{vit_dir},finetune_last=1"}})
    vit = model.encoders["image"].backbone.model
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    model.train()
    batch = splits.train[:8]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(batch["inputs"], batch["masks"]), batch["label"])
    loss.backward()
    opt.step()
    changed = {n for n, p in vit.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("encoder.layer.1.", "layernorm.", "pooler.")) for n in changed)
    assert "encoder.layer.1.output.dense.weight" in changed


def test_frozen_backbone_stays_in_eval_mode(vit_dir: Path) -> None:
    enc = build_encoder(ModalitySpec("image", (1, 8, 8)), 4, pretrained=f"hf:{vit_dir}")
    enc.train()
    assert enc.training and not enc.backbone.model.training
    x = torch.randn(3, 1, 8, 8)
    y, mask = enc(x, torch.tensor([True, False, True]))
    assert torch.all(y[1] == 0) and mask.tolist() == [True, False, True]
    torch.testing.assert_close(enc(x[:1])[0], y[:1])  # no dropout, batch-independent


# ---------------------------------------------------------------- end to end on real data


def _subset(splits: DatasetSplits, n: tuple[int, int, int]) -> DatasetSplits:
    parts = [getattr(splits, s).subset(range(min(k, len(getattr(splits, s)))))
             for s, k in zip(("train", "val", "test"), n, strict=True)]
    return DatasetSplits(splits.name, *parts, info=splits.info)


def test_reviews_text_via_tiny_bert_trains(data_root: Path, tmp_path: Path) -> None:
    from mmfuse.data import load_dataset
    from mmfuse.models import build_model
    from mmfuse.training import TrainConfig, evaluate, fit

    splits = load_dataset("reviews", root=data_root, n=400, max_tokens=32)
    words = [w for w in splits.info["vocab"][2:300] if w.isalnum()]  # the BERT vocabulary: frequent words
    bert = _save_bert(tmp_path / "bert", words)
    enc = encode_dataset(splits, {"text": f"hf:{bert}"}, cache_dir=tmp_path / "cache", progress=False)
    assert enc.specs["text"].kind == "vector" and enc.specs["tabular"] == splits.specs["tabular"]
    model = build_model(enc, fusion="gated", hidden_dim=16)
    res = fit(model, enc, TrainConfig(epochs=4, batch_size=64, lr=3e-3, patience=10, progress=False))
    losses = [h["val_loss"] for h in res.history]
    assert len(losses) == 4 and min(losses[1:]) < losses[0]  # it learns from the cached features
    assert np.isfinite(evaluate(res.model, enc.test)["accuracy"])


def test_avdigits_image_via_tiny_vit_trains(data_root: Path, tmp_path: Path) -> None:
    from mmfuse.data import load_dataset
    from mmfuse.models import build_model
    from mmfuse.training import TrainConfig, evaluate, fit

    splits = _subset(load_dataset("avdigits", root=data_root), (300, 100, 100))
    vit = _save_vit(tmp_path / "vit")
    enc = encode_dataset(splits, {"image": f"hf:{vit}", "audio": "builtin"}, cache_dir=tmp_path / "cache",
                         progress=False)
    assert enc.specs["image"].kind == "vector" and enc.specs["audio"] == splits.specs["audio"]
    model = build_model(enc, fusion="early", hidden_dim=32)
    res = fit(model, enc, TrainConfig(epochs=6, batch_size=50, lr=3e-3, patience=10, progress=False))
    acc = evaluate(res.model, enc.test)["accuracy"]
    assert acc > 0.3  # 10 balanced classes: chance is 0.1 (the built-in audio encoder learns the digits)


def test_prepare_encoders_splits_frozen_from_finetuned(bert_dir: Path, vit_dir: Path, tmp_path: Path) -> None:
    from mmfuse.encoders import prepare_encoders
    from mmfuse.models import build_model

    splits = _toy()
    enc, opts = prepare_encoders(splits, {"image": f"hf:{vit_dir}", "text": f"hf:{bert_dir},finetune_last=1"},
                                 cache_dir=tmp_path, progress=False)
    assert enc.specs["image"].kind == "vector" and enc.specs["text"] == splits.specs["text"]
    assert opts == {"text": {"pretrained": f"hf:{bert_dir},finetune_last=1", "vocab": VOCAB}}
    model = build_model(enc, fusion="gated", hidden_dim=8, encoder_options=opts)
    batch = enc.train[:5]
    loss = torch.nn.functional.cross_entropy(model(batch["inputs"], batch["masks"]), batch["label"])
    loss.backward()
    bert = model.encoders["text"].backbone.model
    assert bert.encoder.layer[1].output.dense.weight.grad is not None
    assert bert.encoder.layer[0].output.dense.weight.grad is None
    # the same model rebuilt from its JSON config (the checkpoint path)
    from mmfuse.models import build_model_from_config

    again = build_model_from_config(model.config)
    assert isinstance(again.encoders["text"], PretrainedEncoder)


def test_changed_chunk_size_does_not_mix_chunks(bert_dir: Path, tmp_path: Path) -> None:
    splits = _toy()
    enc = {"text": f"hf:{bert_dir}"}
    first = encode_dataset(splits, enc, cache_dir=tmp_path, progress=False, chunk_size=4)
    stats: dict = {}
    again = encode_dataset(splits, enc, cache_dir=tmp_path, progress=False, chunk_size=5, stats=stats)
    assert stats["text"]["train"].encoded == len(splits.train)  # 4-row chunks are not 5-row chunks
    torch.testing.assert_close(again.train.inputs["text"], first.train.inputs["text"])


def test_wav2vec2_on_raw_waveforms(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    folder = tmp_path / "w2v"
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000, return_attention_mask=True).save_pretrained(folder)
    n = 6
    specs = {"audio": ModalitySpec("audio", (4, 5)), "x": ModalitySpec("vector", (2,))}
    ds = MultimodalDataset("toy", {"audio": torch.zeros(n, 4, 5), "x": torch.randn(n, 2)}, torch.arange(n) % 2,
                           specs=specs, num_classes=2)
    splits = DatasetSplits("toy", ds, ds.subset([0, 1]), ds.subset([2, 3]))
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(800 + 300 * i).astype(np.float32) for i in range(n)]
    raw = {"train": waves, "val": waves[:2], "test": waves[2:4]}
    with pytest.raises(ConfigError, match="reads waveforms"):
        encode_dataset(splits, {"audio": f"hf:{folder}"}, cache_dir=tmp_path / "c")
    out = encode_dataset(splits, {"audio": f"hf:{folder}"}, cache_dir=tmp_path / "c", progress=False,
                         raw_inputs={"audio": raw})
    assert out.specs["audio"].kind == "vector" and out.specs["audio"].shape == (16,)
    # each clip alone (no padding) gives the mean of its frames: padding in a batch changes nothing
    model = transformers.Wav2Vec2Model.from_pretrained(folder).eval()
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    for i in (0, 5):
        v = fe(waves[i], sampling_rate=8000, return_tensors="pt").input_values
        with torch.no_grad():
            want = model(v).last_hidden_state[0].mean(0)
        torch.testing.assert_close(out.train.inputs["audio"][i], want, atol=1e-4, rtol=1e-4)


def test_unwritable_cache_warns_and_encodes(bert_dir: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the embedding cache"):
        out = encode_dataset(_toy(), {"text": f"hf:{bert_dir}"}, cache_dir=blocked, progress=False)
    ref = encode_dataset(_toy(), {"text": f"hf:{bert_dir}"}, cache=False, progress=False)
    torch.testing.assert_close(out.test.inputs["text"], ref.test.inputs["text"])


def test_token_embeddings_feed_a_token_fusion_and_padding_is_ignored(bert_dir: Path, tmp_path: Path) -> None:
    from mmfuse.models import build_model

    out = encode_dataset(_toy(), {"text": f"hf:{bert_dir},tokens,max_length=10"}, cache_dir=tmp_path,
                         progress=False)
    model = build_model(out, fusion="cross_modal_transformer", hidden_dim=16).eval()
    batch = out.train[:6]
    with torch.no_grad():
        y = model(batch["inputs"], batch["masks"])
        noisy = dict(batch["inputs"])
        pad = ~batch["masks"]["text"]
        noisy["text"] = torch.where(pad.unsqueeze(-1), torch.randn_like(noisy["text"]) * 100, noisy["text"])
        y2 = model(noisy, batch["masks"])
    assert pad.any()
    torch.testing.assert_close(y, y2)


class _FakeTimmNet(torch.nn.Module):
    """Stands in for a timm model: the same methods mmfuse calls (forward_features, forward_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(6, 6, 3, padding=1) for _ in range(3))
        self.norm = torch.nn.GroupNorm(1, 6)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for blk in self.blocks:
            x = torch.relu(blk(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_timm_glue_with_a_stand_in_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    """The timm: adapter (size, mean/std, forward_features + forward_head, finetune_last)
    against a stand-in module, since timm itself does not import here."""
    import importlib.machinery
    import sys
    import types

    torch.manual_seed(0)
    net = _FakeTimmNet()
    fake = types.ModuleType("timm")
    fake.__spec__ = importlib.machinery.ModuleSpec("timm", None)
    created: list[dict] = []

    def create_model(name: str, **kw):  # type: ignore[no-untyped-def]
        created.append({"name": name, **kw})
        return net

    fake.create_model = create_model  # type: ignore[attr-defined]
    fake.data = types.SimpleNamespace(  # type: ignore[attr-defined]
        resolve_data_config=lambda cfg, model: {"input_size": (3, 12, 12), "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)})
    monkeypatch.setitem(sys.modules, "timm", fake)

    splits = _toy()
    out = encode_dataset(splits, {"image": "timm:fakenet"}, cache_dir=tmp_path, progress=True)
    assert created[0] == {"name": "fakenet", "pretrained": True, "num_classes": 0}
    assert "encoding toy/image/train with timm:fakenet" in capfd.readouterr().err
    x = splits.test.inputs["image"]
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    pix = ((x - lo) / (hi - lo)).repeat(1, 3, 1, 1)
    pix = torch.nn.functional.interpolate(pix, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    pix = (pix - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net.forward_features(pix).mean(dim=(2, 3))
    torch.testing.assert_close(out.test.inputs["image"], want, atol=1e-5, rtol=1e-5)
    tokens = encode_dataset(splits, {"image": "timm:fakenet,tokens"}, cache_dir=tmp_path, progress=False)
    assert tokens.specs["image"].shape == (144, 6)  # 12 x 12 feature-map positions, 6 channels
    enc = build_encoder(ModalitySpec("image", (1, 8, 8)), 4, pretrained="timm:fakenet,finetune_last=1")
    block = sum(p.numel() for p in net.blocks[2].parameters())
    assert _trainable(enc) == 6 * 4 + 4 + block + 12  # proj + last block + the norm after it


def test_model_with_a_finetuned_backbone_round_trips_a_checkpoint(vit_dir: Path, tmp_path: Path) -> None:
    from mmfuse.models import build_model
    from mmfuse.training import load_checkpoint, save_checkpoint

    splits = _toy()
    model = build_model(splits, fusion="gated", hidden_dim=8,
                        encoder_options={"image": {"pretrained": f"hf:{vit_dir},finetune_last=1"}})
    with torch.no_grad():
        model.encoders["image"].backbone.model.encoder.layer[1].output.dense.bias.add_(0.5)  # "trained"
    model.eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    again = load_checkpoint(path)
    batch = splits.test[:4]
    torch.testing.assert_close(again(batch["inputs"], batch["masks"]), model(batch["inputs"], batch["masks"]))


def test_cli_encoder_flag_trains_and_benches_on_cached_embeddings(bert_dir: Path, data_root: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--encoder text=hf:<folder>`` through mmfuse train and mmfuse bench: the same code path a hub name takes."""
    import json

    from mmfuse.cli import main

    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    small = ["data.n=300", "epochs=1", "hidden_dim=16", "progress=false"]
    out = tmp_path / "run"
    assert main(["train", "--dataset", "reviews", "--fusion", "gated", "--out", str(out),
                 "--encoder", f"text=hf:{bert_dir}", *small]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["data"]["encoders"] == {"text": f"hf:{bert_dir}"}
    assert list((tmp_path / "cache").rglob("manifest.json"))  # the embeddings were cached
    bench = tmp_path / "bench"
    assert main(["bench", "--dataset", "reviews", "--fusions", "late", "--seeds", "1", "--modality-dropout", "0",
                 "--no-unimodal", "--executor", "serial", "--out", str(bench), "--no-plots", "--no-report",
                 "--no-progress", "--encoder", f"text=hf:{bert_dir}", "dataset_options={reviews: {n: 300}}",
                 "epochs=1", "hidden_dim=16"]) == 0
    run = json.loads((bench / "runs.jsonl").read_text().splitlines()[0])
    assert run["status"] == "ok" and run["spec"]["data"]["encoders"] == {"text": f"hf:{bert_dir}"}


def test_cli_image_encoder_on_avdigits(vit_dir: Path, data_root: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``--encoder image=hf:<tiny ViT folder>`` on avdigits through mmfuse train and mmfuse bench."""
    import json

    from mmfuse.cli import main

    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    common = ["--dataset", "avdigits", "--encoder", f"image=hf:{vit_dir}", "epochs=1", "hidden_dim=16"]
    assert main(["train", "--fusion", "early", "--out", str(tmp_path / "run"), *common, "progress=false"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "ok"
    bench = tmp_path / "bench"
    assert main(["bench", "--fusions", "early", "--seeds", "1", "--modality-dropout", "0", "--no-unimodal",
                 "--executor", "serial", "--out", str(bench), "--no-plots", "--no-report", "--no-progress",
                 "diagnose=false", "measure.attribution=false", *common]) == 0
    (run,) = [json.loads(line) for line in (bench / "runs.jsonl").read_text().splitlines()]
    assert run["status"] == "ok" and run["spec"]["data"]["encoders"] == {"image": f"hf:{vit_dir}"}


# ---------------------------------------------------------------- tokenizers without a length


def _no_length_bert(folder: Path, positions: int) -> Path:
    """A tiny BERT of ``positions`` positions whose tokenizer was saved without ``model_max_length``
    (transformers then reports its sentinel, 1e30: no limit)."""
    _save_bert(folder, WORDS)
    cfg = transformers.BertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=positions)
    torch.manual_seed(1)
    transformers.BertModel(cfg).save_pretrained(folder)
    config = folder / "tokenizer_config.json"
    import json

    doc = json.loads(config.read_text())
    doc.pop("model_max_length", None)
    config.write_text(json.dumps(doc))
    assert transformers.BertTokenizerFast.from_pretrained(folder).model_max_length > 10**20
    return folder


def test_a_tokenizer_without_a_length_truncates_to_the_models_positions(tmp_path: Path) -> None:
    folder = _no_length_bert(tmp_path / "bert16", positions=16)
    splits = _toy(n=8)
    texts = {split: [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(40)) for i in range(len(part))]
             for split, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    long_texts = texts["train"]
    for output, shape in (("pooled", (32,)), ("tokens", (16, 32))):
        out = encode_dataset(splits, {"text": f"hf:{folder},{output}"}, cache_dir=tmp_path / output,
                             progress=False, raw_inputs={"text": texts})
        assert out.specs["text"].shape == shape  # 16 positions, not the default max_length 128
    # the pooled vector is the model's mean over its first 16 tokens ([CLS], 14 words, [SEP]), computed by hand
    out = encode_dataset(splits, {"text": f"hf:{folder}"}, cache_dir=tmp_path / "pooled", progress=False,
                         raw_inputs={"text": texts})
    model = transformers.BertModel.from_pretrained(folder).eval()
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    for r in (0, 2):
        ids = [vocab["[CLS]"], *(vocab[w] for w in long_texts[r].split()[:14]), vocab["[SEP]"]]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        torch.testing.assert_close(out.train.inputs["text"][r], h.mean(0), atol=1e-5, rtol=1e-5)


def test_positions_numbered_after_the_padding_id_are_left_out() -> None:
    """RoBERTa numbers positions from ``padding_idx + 1``: 18 rows with padding id 1 place 16 tokens."""
    from mmfuse.encoders.pretrained import position_limit

    cfg = transformers.RobertaConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=18, pad_token_id=1)
    roberta = transformers.RobertaModel(cfg).eval()
    assert position_limit(roberta) == 16
    with torch.no_grad():  # the limit is the real one: 16 tokens run, 17 do not
        roberta(input_ids=torch.full((1, 16), 5))
        with pytest.raises((IndexError, RuntimeError)):
            roberta(input_ids=torch.full((1, 17), 5))
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=64,
                                                          max_position_embeddings=18))
    assert position_limit(bert) == 18
    assert position_limit(torch.nn.Linear(2, 2)) is None
