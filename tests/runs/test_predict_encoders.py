"""A user table's text (and image) column through a pretrained encoder: trained, cached and
predicted on new rows with the same embeddings.

The models are tiny and built here from configs (no network), as in
``tests/encoders/test_pretrained.py``: a 2-layer BERT of width 32 with a WordPiece
tokenizer from a small vocabulary file, and a 2-layer ViT with its image processor. The
tables are synthetic and small (300 rows), so every CLI run takes seconds.

Checked: the frozen embedding of a row is BERT's masked mean over the tokens of the row's
*raw* string (not of the ids decoded with the table's vocabulary), pooled and token
outputs; the cache key follows the strings' content; ``mmfuse train --data ... --encoder
review=hf:<folder>`` then ``load_run``: ``transform`` gives the training cache's
embeddings, ``evaluate`` the test metrics training wrote, ``predict`` one row per input;
a changed model folder is refused; fine-tuning inside the model reads the ids decoded
with the table's fitted vocabulary; a frozen image encoder on an image-path column.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

# read by huggingface_hub when it is imported: no attempt to reach the hub (there is no network)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="the hf: encoders need transformers (mmfuse[hf])")

import mmfuse  # noqa: E402
from mmfuse.cli import main  # noqa: E402
from mmfuse.data import from_table  # noqa: E402
from mmfuse.encoders import prepare_encoders  # noqa: E402
from mmfuse.encoders.cache import encode_for_prediction  # noqa: E402
from mmfuse.errors import CheckpointError, ConfigError, MmfuseError  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a dress is nice love it fit small large color too short long fabric soft".split()
GOOD, BAD = ["love", "nice", "soft"], ["small", "short", "too"]
FAST = ["--fusion", "gated", "--epochs", "2", "threads=1", "hidden_dim=16", "progress=false"]


def _save_bert(folder: Path, words: list[str], seed: int = 0) -> Path:
    """The tiny BERT of tests/encoders/test_pretrained.py, saved as a local model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _reviews(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A review text (every 10th missing; capitals, punctuation, a rare and an unknown word),
    two numeric columns and a yes/no target."""
    rng = np.random.default_rng(seed)
    liked = rng.integers(0, 2, n)
    texts = []
    for i, y in enumerate(liked):
        words = [*rng.choice(GOOD if y else BAD, 3), *rng.choice(WORDS, 3)]
        text = " ".join(words).capitalize() + rng.choice(["", "!", ".", "?!"])
        if i % 7 == 3:
            text += " zebra"  # not in BERT's vocabulary: its [UNK]
        if i == 4:
            text += " Fabric, LONG"  # capitals and a comma: the table's ids drop them, BERT reads them
        texts.append(None if i % 10 == 0 else text)
    return pd.DataFrame({"review": texts, "age": rng.normal(40, 10, n).round(1),
                         "size": rng.normal(0, 1, n), "liked": np.where(liked, "yes", "no")})


def _bert_states(folder: Path, texts: list[str], max_length: int = 128) -> list[torch.Tensor]:
    """BERT's last hidden states of each string alone (no padding), called by hand."""
    model = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    out = []
    for t in texts:
        enc = tok([t], return_tensors="pt", truncation=True, max_length=max_length)
        with torch.no_grad():
            out.append(model(**enc).last_hidden_state[0])
    return out


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", WORDS)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "t.csv"
    _reviews().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(bert_dir: Path, table: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``mmfuse train --data t.csv --target liked --encoder review=hf:./tiny-bert`` run in the
    BERT's parent folder (a relative name, as a user types it)."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMFUSE_CACHE", str(root / "cache"))
        mp.chdir(bert_dir.parent)
        code = main(["train", "--data", str(table), "--target", "liked", "--encoder",
                     f"review=hf:./{bert_dir.name}", *FAST, "--out", str(out)])
    assert code == 0
    return {"out": out, "cache": root / "cache" / "embeddings"}


# ---------------------------------------------------------------- the library: from_table -> prepare_encoders


def test_frozen_text_of_a_table_is_bert_on_its_raw_strings(bert_dir: Path, tmp_path: Path) -> None:
    frame = _reviews()
    splits = from_table(frame, target="liked")
    assert splits.specs["review"].kind == "text" and "vocab" not in splits.info  # ids only: no vocab to decode
    enc, opts = prepare_encoders(splits, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    assert opts == {}  # frozen: nothing goes into the model
    assert enc.specs["review"].kind == "vector" and enc.specs["review"].shape == (32,)
    assert enc.specs["tabular"] == splits.specs["tabular"]
    assert enc.info["encoders"]["review"]["reads"] == "raw"
    for split in ("train", "test"):
        rows = splits.info["indices"][split]
        raw = [frame["review"][r] for r in rows]
        x, mask = getattr(enc, split).inputs["review"], getattr(enc, split).masks["review"]
        present = [i for i, t in enumerate(raw) if isinstance(t, str)]
        missing = [i for i, t in enumerate(raw) if not isinstance(t, str)]
        assert missing and mask[present].all() and not mask[missing].any()
        assert torch.all(x[missing] == 0)
        picks = present[:6] + ([rows.index(4)] if 4 in rows else [])
        want = [h.mean(0) for h in _bert_states(bert_dir, [raw[i] for i in picks])]
        torch.testing.assert_close(x[picks], torch.stack(want), atol=1e-5, rtol=1e-5)


def test_raw_strings_not_the_decoded_ids(bert_dir: Path, tmp_path: Path) -> None:
    """Row 4's capitals and comma change BERT's tokens, not the table's ids: the embedding is of the string."""
    frame = _reviews()
    splits = from_table(frame, target="liked")
    split = next(s for s in ("train", "val", "test") if 4 in splits.info["indices"][s])
    i = splits.info["indices"][split].index(4)
    enc, _ = prepare_encoders(splits, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    vocab = splits.info["preprocessor"].blocks["review"].vocabulary
    ids = getattr(splits, split).inputs["review"][i]
    decoded = " ".join(vocab[j] if j != 1 else "[UNK]" for j in ids.tolist() if j != 0)
    (from_ids,) = _bert_states(bert_dir, [decoded])
    (from_raw,) = _bert_states(bert_dir, [frame["review"][4]])
    got = getattr(enc, split).inputs["review"][i]
    torch.testing.assert_close(got, from_raw.mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, from_ids.mean(0), atol=1e-3)


def test_token_output_of_a_table_keeps_each_strings_token_mask(bert_dir: Path, tmp_path: Path) -> None:
    frame = _reviews()
    splits = from_table(frame, target="liked")
    enc, _ = prepare_encoders(splits, {"review": f"hf:{bert_dir},tokens,max_length=12"}, cache_dir=tmp_path,
                              progress=False)
    assert enc.specs["review"].kind == "sequence" and enc.specs["review"].shape == (12, 32)
    tok = transformers.BertTokenizerFast.from_pretrained(bert_dir)
    rows = splits.info["indices"]["val"]
    raw = [frame["review"][r] for r in rows]
    x, mask = enc.val.inputs["review"], enc.val.masks["review"]
    want = torch.tensor([len(tok(t, truncation=True, max_length=12)["input_ids"]) if isinstance(t, str) else 0
                         for t in raw])
    assert torch.equal(mask.sum(1), want) and torch.all(x[~mask] == 0)
    i = next(i for i, t in enumerate(raw) if isinstance(t, str))
    (h,) = _bert_states(bert_dir, [raw[i]], max_length=12)
    torch.testing.assert_close(x[i, : len(h)], h, atol=1e-5, rtol=1e-5)


def test_cache_key_follows_the_strings_not_the_ids(bert_dir: Path, tmp_path: Path) -> None:
    """Two tables whose texts give the same ids (case, punctuation) are two cache entries."""
    frame = _reviews()
    first = from_table(frame, target="liked")
    row = first.info["indices"]["train"][1]
    other = frame.copy()
    other.loc[row, "review"] = str(frame["review"][row]).upper() + "!!!"
    second = from_table(other, target="liked")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).inputs["review"], getattr(second, split).inputs["review"])
    a, _ = prepare_encoders(first, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)
    stats: dict = {}
    b, _ = prepare_encoders(second, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["review"]["train"].encoded == len(first.train) and stats["review"]["train"].reused == 0
    assert stats["review"]["val"].encoded == 0 and stats["review"]["test"].encoded == 0  # unchanged: reused
    assert not torch.allclose(a.train.inputs["review"][1], b.train.inputs["review"][1], atol=1e-4)
    torch.testing.assert_close(a.train.inputs["review"][2:], b.train.inputs["review"][2:])


def test_finetuned_text_of_a_table_reads_its_fitted_vocabulary(bert_dir: Path) -> None:
    from mmfuse.models import build_model

    splits = from_table(_reviews(), target="liked")
    same, opts = prepare_encoders(splits, {"review": f"hf:{bert_dir},finetune_last=1"})
    assert same is splits
    vocab = splits.info["preprocessor"].blocks["review"].vocabulary
    assert opts == {"review": {"pretrained": f"hf:{bert_dir},finetune_last=1", "vocab": vocab}}
    model = build_model(splits, fusion="gated", hidden_dim=8, encoder_options=opts)
    batch = splits.train[:6]
    torch.nn.functional.cross_entropy(model(batch["inputs"], batch["masks"]), batch["label"]).backward()
    assert model.encoders["review"].backbone.model.encoder.layer[1].output.dense.weight.grad is not None


def test_table_texts_that_do_not_match_the_splits_raise(bert_dir: Path, tmp_path: Path) -> None:
    splits = from_table(_reviews(), target="liked")
    splits.info["texts"]["review"]["val"] = splits.info["texts"]["review"]["val"][:-1]
    with pytest.raises(ConfigError, match=r"expected \d+ strings for the val split"):
        prepare_encoders(splits, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path, progress=False)


# ---------------------------------------------------------------- end to end: mmfuse train -> load_run


def test_cli_trains_on_a_tables_text_and_predicts_the_same(trained: dict, table: Path, bert_dir: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = trained["out"]
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["data_encoders"] == {"review": f"hf:./{bert_dir.name}"}
    assert manifest["encoders"]["review"]["folder"] == str(bert_dir.resolve())
    assert list(trained["cache"].glob("review-train-*/manifest.json"))  # the embeddings were cached
    monkeypatch.chdir(tmp_path)  # elsewhere: ./tiny-bert does not exist here; the recorded folder is used
    run = mmfuse.load_run(out)
    frame = pd.read_csv(table)
    splits = from_table(table, target="liked")
    test_rows = frame.iloc[splits.info["indices"]["test"]].reset_index(drop=True)

    # the embeddings of new rows are the training cache's for the same rows
    cached, _ = prepare_encoders(splits, {"review": f"hf:{bert_dir}"}, cache_dir=trained["cache"], progress=False)
    t = run.transform(test_rows)
    torch.testing.assert_close(t.inputs["review"], cached.test.inputs["review"], atol=1e-5, rtol=1e-5)
    assert torch.equal(t.masks["review"], cached.test.masks["review"]) and not t.masks["review"].all()

    got = run.evaluate(test_rows)
    want = manifest["metrics"]["test"]
    assert set(want) <= set(got)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k

    new = pd.DataFrame({"review": ["Love it, so soft!", None, "", "too small and short zebra", "nice"],
                        "age": [30.0, 41.0, np.nan, 52.0, 25.0], "size": [0.1, -1.0, 0.5, 2.0, 0.0]})
    pred = run.predict(new)
    assert len(pred) == len(new) and pred["prediction"].notna().all()  # the tabular columns keep every row
    assert set(pred["prediction"]) <= {"no", "yes"}
    probs = pred[["proba_no", "proba_yes"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    again = run.predict(new.iloc[[3, 0]])  # batch independence; the backbone is loaded once
    np.testing.assert_allclose(again[["proba_no", "proba_yes"]].to_numpy(), probs[[3, 0]], atol=1e-6)
    assert list(run._backbones) == ["review"]
    # rows without text are the model's rows with the review missing
    t_new = run.transform(new)
    assert t_new.masks["review"].tolist() == [True, False, False, True, True]
    assert torch.all(t_new.inputs["review"][1:3] == 0)


def test_cli_predict_command_on_a_tables_text(trained: dict, table: Path, tmp_path: Path) -> None:
    new = pd.read_csv(table).drop(columns="liked").head(40)
    src = tmp_path / "new.csv"
    new.to_csv(src, index=False)
    dest = tmp_path / "pred.csv"
    assert main(["predict", str(trained["out"]), "--data", str(src), "--out", str(dest)]) == 0
    pred = pd.read_csv(dest)
    assert len(pred) == 40 and pred["prediction"].notna().all()
    np.testing.assert_allclose(pred[["proba_no", "proba_yes"]].to_numpy(),
                               mmfuse.load_run(trained["out"]).predict(new)[["proba_no", "proba_yes"]].to_numpy(),
                               atol=1e-6)


def test_changed_model_folder_is_refused_at_prediction(bert_dir: Path, table: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-bert"
    shutil.copytree(bert_dir, folder)
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), "--target", "liked", "--encoder", f"review=hf:{folder}",
                 "--fusion", "late", "--epochs", "1", "threads=1", "hidden_dim=8", "progress=false",
                 "--out", str(out)]) == 0
    rows = pd.read_csv(table).head(5)
    assert len(mmfuse.load_run(out).predict(rows)) == 5
    model = transformers.BertModel.from_pretrained(folder)
    with torch.no_grad():
        model.encoder.layer[1].output.dense.bias.add_(1e-3)  # one bias, slightly changed
    model.save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"not the ones this model was trained with.*changed since training"):
        mmfuse.load_run(out).predict(rows)
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match=r"modality 'review' was encoded at training by the frozen encoder"):
        mmfuse.load_run(out).predict(rows)


def test_cli_finetuned_text_of_a_table_trains_and_predicts(bert_dir: Path, table: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), "--target", "liked", "--encoder",
                 f"review=hf:{bert_dir},finetune_last=1", *FAST, "--out", str(out)]) == 0
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["encoders"]["review"]["in_model"] is True
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("manifest.json"))
    run = mmfuse.load_run(out)
    frame = pd.read_csv(table)
    test_rows = frame.iloc[from_table(table, target="liked").info["indices"]["test"]]
    got = run.evaluate(test_rows)
    for k, v in manifest["metrics"]["test"].items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert run.transform(test_rows).inputs["review"].dtype == torch.int64  # ids: the model encodes them


# ---------------------------------------------------------------- images, and what cannot be encoded


def test_cli_frozen_image_encoder_on_an_image_path_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    vit = tmp_path / "vit"
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(cfg).save_pretrained(vit)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(vit)
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(120):
        y = int(rng.integers(0, 2))
        pixels = rng.integers(0, 90, (12, 12, 3)) + (150 if y else 0)
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"photo": None if i % 9 == 0 else f"img/{i}.png", "x": float(rng.normal()),
                     "liked": "yes" if y else "no"})
    csv = tmp_path / "photos.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(csv), "--target", "liked", "--encoder", f"photo=hf:{vit}",
                 "--fusion", "early", "--epochs", "1", "threads=1", "hidden_dim=8", "progress=false",
                 "--out", str(out)]) == 0
    splits = from_table(csv, target="liked")
    assert splits.specs["photo"].kind == "image"
    cached, _ = prepare_encoders(splits, {"photo": f"hf:{vit}"}, cache_dir=tmp_path / "cache" / "embeddings",
                                 progress=False)
    run = mmfuse.load_run(out)
    test_rows = pd.read_csv(csv).iloc[splits.info["indices"]["test"]]
    t = run.transform(test_rows, base_dir=tmp_path)  # a DataFrame's relative paths: from the table's folder
    assert torch.equal(t.masks["photo"], cached.test.masks["photo"]) and not t.masks["photo"].all()
    torch.testing.assert_close(t.inputs["photo"], cached.test.inputs["photo"], atol=1e-5, rtol=1e-5)
    manifest = json.loads((out / "bundle.json").read_text())
    got = run.evaluate(test_rows, base_dir=tmp_path)
    for k, v in manifest["metrics"]["test"].items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def _fake_run(record: dict) -> SimpleNamespace:
    bundle = SimpleNamespace(folder=Path("run"), manifest={"encoders": {"m": record}})
    return SimpleNamespace(bundle=bundle, preprocessor=None, device=torch.device("cpu"), _backbones={})


def test_encode_for_prediction_refuses_what_it_cannot_encode(bert_dir: Path) -> None:
    rows = SimpleNamespace(inputs={"m": torch.zeros(2, 4, 5)}, masks={"m": torch.ones(2, dtype=torch.bool)},
                           usable=np.ones(2, dtype=bool), texts={})
    with pytest.raises(MmfuseError, match="takes text .* or images, got a audio modality"):
        encode_for_prediction(_fake_run({"source_kind": "audio"}), "m", f"hf:{bert_dir}", rows)
    with pytest.raises(MmfuseError, match="expected the raw strings of its 2 rows"):
        encode_for_prediction(_fake_run({"source_kind": "text"}), "m", f"hf:{bert_dir}", rows)
    # built-in and fine-tuned encoders run inside the model: the stored form goes through as it is
    for name in ("builtin", f"hf:{bert_dir},finetune"):
        x, mask = encode_for_prediction(_fake_run({"source_kind": "audio"}), "m", name, rows)
        assert x is rows.inputs["m"] and mask is rows.masks["m"]


def _rows(texts: list[str]) -> SimpleNamespace:
    """A stand-in for the preprocessing's output of ``len(texts)`` rows of one text modality ``m``."""
    n = len(texts)
    return SimpleNamespace(inputs={"m": torch.zeros(n, 8, dtype=torch.int64)}, usable=np.ones(n, dtype=bool),
                           masks={"m": torch.tensor([bool(t) for t in texts], dtype=torch.bool)}, texts={"m": texts})


def test_encode_for_prediction_of_no_rows_keeps_the_shapes(bert_dir: Path) -> None:
    run = _fake_run({"source_kind": "text"})
    x, mask = encode_for_prediction(run, "m", f"hf:{bert_dir},tokens,max_length=6", _rows([]))
    assert x.shape == (0, 6, 32) and mask.shape == (0, 6) and mask.dtype == torch.bool
    x1, m1 = encode_for_prediction(run, "m", f"hf:{bert_dir},tokens,max_length=6", _rows(["nice dress", ""]))
    (h,) = _bert_states(bert_dir, ["nice dress"], max_length=6)
    assert m1[0].sum() == len(h) and not m1[1].any() and torch.all(x1[1] == 0)
    torch.testing.assert_close(x1[0, : len(h)], h, atol=1e-5, rtol=1e-5)


def test_python_route_save_run_keeps_the_frozen_encoder(bert_dir: Path, tmp_path: Path) -> None:
    """from_table -> prepare_encoders -> fit -> save_run: the bundle names the encoder, and
    load_run runs it on new rows' strings as training did."""
    import mmfuse
    from mmfuse.training import TrainConfig, fit

    frame = _reviews()
    splits = from_table(frame, target="liked")
    enc, opts = prepare_encoders(splits, {"review": f"hf:{bert_dir}"}, cache_dir=tmp_path / "c", progress=False)
    model = mmfuse.build_model(enc, fusion="gated", hidden_dim=16, encoder_options=opts or None)
    result = fit(model, enc, TrainConfig(epochs=1, progress=False, threads=1))
    folder = mmfuse.save_run(tmp_path / "run", result.model, enc)
    run = mmfuse.load_run(folder)
    assert run.bundle.manifest["data_encoders"] == {"review": f"hf:{bert_dir}"}
    test_rows = frame.iloc[splits.info["indices"]["test"]]
    t = run.transform(test_rows)
    torch.testing.assert_close(t.inputs["review"], enc.test.inputs["review"], atol=1e-5, rtol=0)
    assert abs(run.evaluate(test_rows)["accuracy"] - run.bundle.manifest["metrics"]["test"]["accuracy"]) < 1e-6


def test_a_modality_name_with_a_path_in_it_stays_inside_the_cache(bert_dir: Path, tmp_path: Path) -> None:
    frame = _reviews(120)
    splits = from_table(frame, target="liked", modalities={"../../out/x": ["review"], "tabular": ["age"]})
    cache = tmp_path / "cache"
    enc, _ = prepare_encoders(splits, {"../../out/x": f"hf:{bert_dir}"}, cache_dir=cache, progress=False)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(cache in p.parents for p in written), written
    assert enc.specs["../../out/x"].kind == "vector"
