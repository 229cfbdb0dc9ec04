"""Ship the model: the exported ONNX file (in onnxruntime) and pt2 program give the PyTorch
model's outputs, for every registered strategy and the unimodal baselines.

A small table read by the real preprocessing: a vector, a ragged sequence (token mask),
a text and a tabular modality, each missing in some rows, a few rows with every modality
missing. Untrained weights (parity does not need training), eval mode. Each model is
traced once and saved in both formats; outputs are compared at batch 1 and 37, with a
longer padded sequence than training's, and with NaN where PyTorch refuses the row. The
fusions read the vector, sequence and tabular modalities (a fourth makes the pairwise
strategies' graphs, and their ONNX conversion, twice as large; the two largest,
cross_modal_transformer and bottleneck, read the vector and the sequence); the text encoder
is checked in its baseline and in the bundle's model, which reads all four.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

import mmfuse
from mmfuse.cli import main
from mmfuse.data import ModalitySpec
from mmfuse.encoders import VectorEncoder
from mmfuse.errors import CheckpointError, ConfigError, MmfuseError
from mmfuse.runs.export import EXPORT_FORMAT, feeds, read_export, trace

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_onnx_registry():
    """Build torch's ATen-to-ONNX registry once for the module, not once per export.

    ``torch.onnx.export(dynamo=True)`` rebuilds it on every call (``ONNXRegistry.from_torchlib``
    compiles ~500 onnxscript functions to IR: about a quarter of the CPU time of converting a
    small strategy here). The registry is the same for every call at one opset and the
    exporter only adds to it when given a custom translation table, which mmfuse never
    passes; so every conversion below still runs the full exporter on the same registry
    contents. Without that private hook (another torch), exports just build their own.
    """
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    real = _registration.ONNXRegistry.__dict__.get("from_torchlib")
    if not isinstance(real, classmethod):
        yield
        return
    cache: dict = {}

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = real.__func__(cls, *args, **kwargs)
        return cache[key]

    _registration.ONNXRegistry.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = real


def table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["great", "lovely", "poor", "thin", "soft", "small", "fit", "seams"]
    df = pd.DataFrame({
        "note": [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(n)],
        "age": rng.integers(18, 70, n).astype(float),
        "size": rng.choice(["S", "M", "L"], n),
        "vec": [list(rng.normal(size=4)) for _ in range(n)],
        "seq": [[list(rng.normal(size=3)) for _ in range(rng.integers(1, 6))] for _ in range(n)],
    })
    df["label"] = np.where(df["note"].str.contains("great|lovely"), "yes", np.where(df["age"] > 45, "old", "no"))
    gone = rng.random((n, 3)) < 0.2
    df.loc[gone[:, 0], "note"] = ""
    df.loc[gone[:, 1], "vec"] = None
    df.loc[gone[:, 2], "seq"] = None
    return df


@pytest.fixture(scope="module")
def splits() -> mmfuse.data.DatasetSplits:
    return mmfuse.from_table(table(90), target="label", max_tokens=8)


def _present(mask: Tensor) -> Tensor:
    return mask if mask.dim() == 1 else mask.any(dim=1)


@pytest.fixture(scope="module")
def batch(splits) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """37 training rows, more modalities dropped at random, rows 0-2 with every modality missing."""
    g = torch.Generator().manual_seed(0)
    ds = splits.train
    inputs = {m: x[:37] for m, x in ds.inputs.items()}
    masks = {}
    for m, k in ds.masks.items():
        drop = torch.rand(37, generator=g) < 0.25
        drop[:3] = True
        k = k[:37].clone()
        k[drop] = False
        masks[m] = k
    assert masks["seq"].dim() == 2 and (~masks["seq"][masks["seq"].any(1)]).any()  # padded tokens
    return inputs, masks


#: the fusions' modalities in the parity test (text: its baseline, and the bundle test's model)
PARITY_MODALITIES = ("seq", "tabular", "vec")


#: one cross-modal layer instead of two (each kind of block is still there, a cross-modal one and a
#: self-attention one; the ONNX conversion of the default's graph takes about a minute here)
OPTIONS = {"cross_modal_transformer": {"num_layers": 1}}
#: the two largest graphs read two modalities, a ragged sequence and a vector: every block and
#: the missing-modality paths are the same, and a third modality adds blocks of the same kinds
#: (cross_modal_transformer: 6 directed pairs instead of 2), about 8 s of conversion each
TWO_MODALITIES = {"cross_modal_transformer": ("seq", "vec"), "bottleneck": ("seq", "vec")}


def _model(splits, case: str, modalities=PARITY_MODALITIES) -> torch.nn.Module:
    torch.manual_seed(0)
    if case.startswith("uni:"):
        return mmfuse.build_unimodal_model(splits, modality=case[4:], hidden_dim=8).eval()
    name, _, level = case.partition(":")
    options = {"level": level} if level else OPTIONS.get(name, {})
    if modalities == PARITY_MODALITIES:
        modalities = TWO_MODALITIES.get(name, modalities)
    return mmfuse.build_model(splits, fusion=name, hidden_dim=8, fusion_options=options,
                              modalities=modalities).eval()


def _rows(inputs, masks, idx) -> tuple[dict, dict]:
    return {m: x[idx] for m, x in inputs.items()}, {m: k[idx] for m, k in masks.items()}


def _eager(model, inputs, masks) -> np.ndarray:
    """PyTorch's logits, NaN on the rows it refuses (every modality it reads missing)."""
    mods = model.modalities
    ok = torch.stack([_present(masks[m]) for m in mods], 1).any(1)
    if not hasattr(model, "fusion"):
        ok[:] = True  # a unimodal baseline refuses nothing
    out = np.full((len(ok), model.config["num_classes"]), np.nan, dtype=np.float32)
    if ok.any():
        with torch.no_grad():
            out[ok.numpy()] = model(*_rows(inputs, masks, ok)).numpy()
    return out


def _longer(inputs, masks, extra: int = 3) -> tuple[dict, dict]:
    """The sequence padded with ``extra`` more tokens (random values, masked out)."""
    x, k = inputs["seq"], masks["seq"]
    pad = torch.randn(x.shape[0], extra, x.shape[2]) * 100
    return ({**inputs, "seq": torch.cat([x, pad], 1)},
            {**masks, "seq": torch.cat([k, torch.zeros(k.shape[0], extra, dtype=torch.bool)], 1)})


CASES = [*mmfuse.list_fusions(), "late:decision", "uni:note", "uni:seq", "uni:tabular", "uni:vec"]


@pytest.mark.parametrize("case", CASES)
def test_exported_model_matches_pytorch(case: str, splits, batch, tmp_path: Path) -> None:
    model = _model(splits, case)
    inputs, masks = batch
    traced = trace(model, class_names=splits.train.class_names)
    onnx_info = traced.save(tmp_path / "m.onnx")
    pt2_info = traced.save(tmp_path / "m.pt2")
    assert onnx_info.inputs == pt2_info.inputs and onnx_info.output_names == ["logits", "probabilities"]
    if "seq" in model.modalities:  # the sequence's length is a dynamic axis of every strategy
        assert {t.name: t.shape for t in pt2_info.inputs}["seq__tokens"] == ("batch", "seq__length")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(tmp_path / "m.pt2")).module()

    here = torch.stack([_present(masks[m]) for m in model.modalities], 1)
    # batch 1: a row with some of the model's modalities missing, not all (a baseline's: missing)
    one = int(next(i for i in range(3, 37) if here[i].any() != here[i].all() or (len(here[i]) == 1 and not here[i])))
    batches = {"1": _rows(inputs, masks, slice(one, one + 1)), "37": (inputs, masks), "37 long": _longer(inputs, masks)}
    for label, (x, k) in batches.items():
        want = _eager(model, x, k)
        got_onnx = session.run(None, feeds(onnx_info, x, k))
        with torch.no_grad():
            got_pt2 = [t.numpy() for t in program(*feeds(pt2_info, x, k, numpy=False).values())]
        for fmt, (logits, proba) in (("onnx", got_onnx), ("pt2", got_pt2)):
            np.testing.assert_array_equal(np.isnan(logits), np.isnan(want), err_msg=f"{case} {fmt} b={label}")
            diff = float(np.nanmax(np.abs(logits - want))) if not np.isnan(want).all() else 0.0
            assert diff <= TOL, f"{case} {fmt} b={label}: max |diff| {diff:.2e}"
            expect = torch.softmax(torch.from_numpy(want), -1).numpy()
            np.testing.assert_allclose(proba, expect, atol=TOL, rtol=0)
    if hasattr(model, "fusion"):  # rows 0-2: every modality missing -> NaN, the others finite
        assert np.isnan(got_onnx[0][:3]).all() and np.isfinite(got_onnx[0][3:][~np.isnan(want[3:]).any(1)]).all()


def test_bundle_export_reproduces_predict(splits, tmp_path: Path, capsys) -> None:
    """save_run -> `mmfuse export` -> onnxruntime on run.transform(df) == run.predict_proba(df);
    the sidecar and the preprocessing beside the file reproduce it without the bundle."""
    model = _model(splits, "gated", modalities=None)
    model.temperature.fill_(2.5)  # a calibrated model: the exported graph divides by its T, as predict does
    folder = mmfuse.save_run(tmp_path / "run", model, splits, metrics={})
    out = tmp_path / "ship" / "gated.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out)]) == 0
    assert "note__present: bool (batch)" in capsys.readouterr().out

    doc = json.loads((tmp_path / "ship" / "gated.onnx.json").read_text())
    assert doc["format"] == EXPORT_FORMAT and doc["model_format"] == "onnx" and doc["file"] == "gated.onnx"
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert doc["bundle"] == str(folder.resolve()) and doc["task"] == "multiclass"
    assert doc["class_names"] == ["no", "old", "yes"] and doc["label"] == "gated"
    assert doc["opset"] >= 18 and "NaN" in doc["all_missing"]
    shapes = {t["name"]: (t["dtype"], t["shape"], t["role"], t["kind"]) for t in doc["inputs"]}
    assert shapes == {
        "note": ("int64", ["batch", 8], "data", "text"), "note__present": ("bool", ["batch"], "present", "text"),
        "seq": ("float32", ["batch", "seq__length", 3], "data", "sequence"),
        "seq__present": ("bool", ["batch"], "present", "sequence"),
        "seq__tokens": ("bool", ["batch", "seq__length"], "tokens", "sequence"),
        "tabular": ("float32", ["batch", 2], "data", "tabular"),
        "tabular__present": ("bool", ["batch"], "present", "tabular"),
        "vec": ("float32", ["batch", 4], "data", "vector"), "vec__present": ("bool", ["batch"], "present", "vector"),
    }
    assert [(t["name"], t["shape"]) for t in doc["outputs"]] == [("logits", ["batch", 3]),
                                                                ("probabilities", ["batch", 3])]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [t["name"] for t in doc["inputs"]]
    assert session.get_inputs()[2].shape == ["batch", "seq__length", 3]  # the axes are named in the graph too

    new = table(40, seed=7).drop(columns=["label"])
    for col, empty in (("note", ""), ("vec", None), ("seq", None), ("age", np.nan), ("size", None)):
        new.loc[new.index[:2], col] = empty  # rows 0-1: nothing at all
    run = mmfuse.load_run(folder)
    want = run.predict_proba(new).to_numpy()
    assert np.isnan(want[:2]).all() and np.isfinite(want[2:]).all()
    info = read_export(out)
    prep = mmfuse.data.TablePreprocessor.load(out.parent / info.preprocessor)  # without the bundle
    t = prep.transform(new)
    logits, proba = session.run(None, feeds(info, t.inputs, t.masks))
    np.testing.assert_array_equal(np.isnan(proba), np.isnan(want))
    np.testing.assert_allclose(proba[2:], want[2:], atol=TOL, rtol=0)
    assert [info.class_names[i] for i in proba[2:].argmax(1)] == run.predict(new)["prediction"][2:].tolist()

    pt2 = run.export(tmp_path / "ship" / "gated.pt2")  # the same through Run.export, the format from the suffix
    assert pt2.model_format == "pt2" and pt2.opset is None
    program = torch.export.load(str(tmp_path / "ship" / "gated.pt2")).module()
    with torch.no_grad():
        logits2, _ = program(*feeds(pt2, t.inputs, t.masks, numpy=False).values())
    np.testing.assert_allclose(logits2.numpy(), logits, atol=TOL, rtol=0)

    out.write_bytes(out.read_bytes() + b"x")  # replaced after export: the sidecar no longer matches
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_export(out)


@pytest.mark.parametrize(("task", "names"), [("regression", ["prediction"]), ("multilabel", ["logits", "probabilities"])])
def test_outputs_by_task(task: str, names: list[str], tmp_path: Path) -> None:
    df = table(60).drop(columns=["note", "label"])
    if task == "regression":
        df["y"] = np.random.default_rng(1).normal(50, 10, len(df))
        split = mmfuse.from_table(df, target="y")
    else:
        rng = np.random.default_rng(1)
        df["a"], df["b"] = rng.integers(0, 2, len(df)), rng.integers(0, 2, len(df))
        split = mmfuse.from_table(df, target=["a", "b"], task="multilabel")
    model = mmfuse.build_model(split, fusion="gated", hidden_dim=8).eval()
    info = trace(model).save(tmp_path / "m.pt2")
    assert info.output_names == names and info.task == task
    ds = split.train
    masks = {m: k.clone() for m, k in ds.masks.items()}
    for k in masks.values():
        k[0] = False  # row 0: every modality missing
    with torch.no_grad():
        outs = torch.export.load(str(tmp_path / "m.pt2")).module()(*feeds(info, ds.inputs, masks, numpy=False).values())
    want = _eager(model, ds.inputs, masks)
    assert len(outs) == len(names) and torch.isnan(outs[0][0]).all()
    np.testing.assert_allclose(outs[0][1:].numpy(), want[1:], atol=TOL, rtol=0)
    if task == "multilabel":
        np.testing.assert_allclose(outs[1][1:].numpy(), torch.sigmoid(torch.from_numpy(want[1:])).numpy(), atol=TOL)
    else:  # in the target's units, not standardised
        assert abs(float(outs[0][1:].mean()) - 50) < 20


def test_image_and_audio_encoders(tmp_path: Path) -> None:
    """The two kinds the table above lacks: image (conv, GroupNorm, ceil-mode pooling) and
    audio (frames: a dynamic length), from a specs mapping as in tests/models, both formats."""
    specs = {"aud": ModalitySpec("audio", (6, 10)), "img": ModalitySpec("image", (1, 7, 7))}
    model = mmfuse.build_model(specs, 3, "gated", hidden_dim=8).eval()
    g = torch.Generator().manual_seed(3)
    n, frames = 9, 13  # more frames than the spec's 10: the audio length is dynamic
    inputs = {"aud": torch.randn(n, 6, frames, generator=g), "img": torch.randn(n, 1, 7, 7, generator=g)}
    masks = {"aud": torch.arange(frames)[None] < torch.randint(0, frames + 1, (n, 1), generator=g),
             "img": torch.rand(n, generator=g) > 0.3}
    for m in masks:
        masks[m][0] = False  # row 0: every modality missing
    traced = trace(model)
    assert {t.name: t.shape for t in traced.inputs}["aud"] == ("batch", 6, "aud__length")
    want = _eager(model, inputs, masks)
    info = traced.save(tmp_path / "m.onnx")
    logits = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feeds(info, inputs, masks))[0]
    info = traced.save(tmp_path / "m.pt2")
    with torch.no_grad():
        logits2 = torch.export.load(str(tmp_path / "m.pt2")).module()(*feeds(info, inputs, masks, numpy=False).values())[0]
    for got in (logits, logits2.numpy()):
        assert np.isnan(got[0]).all() and np.isnan(want[0]).all()
        np.testing.assert_allclose(got[1:], want[1:], atol=TOL, rtol=0)


class _Branchy(VectorEncoder):
    """A vector encoder with data-dependent Python control flow: cannot be a graph."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, present = super().forward(x, mask)
        if bool(h.sum() > 0):
            h = h * 2
        return h, present


def test_untraceable_part_is_named_and_nothing_is_written(splits, tmp_path: Path) -> None:
    model = _model(splits, "gated")
    model.encoders["vec"] = _Branchy(4, 8)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(MmfuseError, match=r"cannot export gated: encoder 'vec' \(_Branchy\).*test_export.py.*"
                       r"data-dependent"):
        mmfuse.runs.export.trace(model).save(out)
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert not model.training  # the model's mode is left as it was


def test_bad_requests(splits, tmp_path: Path) -> None:
    traced = trace(_model(splits, "early"))
    with pytest.raises(ConfigError, match=r"a \.onnx file for format 'pt2'"):
        traced.save(tmp_path / "m.onnx", format="pt2")
    with pytest.raises(ConfigError, match="format: expected one of"):
        traced.save(tmp_path / "m.bin", format="tflite")
    assert not list(tmp_path.iterdir())
    hand = mmfuse.MultimodalModel({"a": torch.nn.Linear(3, 4), "b": torch.nn.Linear(2, 4)},
                                  mmfuse.create_fusion("early", input_dims={"a": 4, "b": 4}, output_dim=2))
    with pytest.raises(MmfuseError, match="no config"):
        trace(hand)
    with pytest.raises(CheckpointError, match="no export sidecar"):
        read_export(tmp_path / "nothing.onnx")


def test_names_become_identifiers() -> None:
    from mmfuse.runs.export import _input_names, _slots

    specs = {"Review Text": {"kind": "text"}, "2nd": {"kind": "audio"}, "logits": {"kind": "vector"},
             "Review_Text": {"kind": "vector"}}
    names = [n for _, _, n in _input_names(_slots(specs, sorted(specs), "binary"), "binary")]
    assert names == ["m_2nd", "m_2nd__present", "m_2nd__tokens", "Review_Text", "Review_Text__present",
                     "Review_Text_2", "Review_Text_2__present", "logits_2", "logits_2__present"]
