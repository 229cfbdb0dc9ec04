"""avdigits (MNIST image + FSDD audio) and the log-mel front end, against known facts and by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import flip_byte
from scipy.io import wavfile

from mmfuse.data import DataError, load_dataset, verify
from mmfuse.data import avdigits as av
from mmfuse.data._audio import LOG_FLOOR, fit_length, hz_to_mel, log_mel, mel_filterbank, mel_to_hz


@pytest.fixture(scope="module")
def splits(real_root: Path):
    return load_dataset("avdigits")


# ---------------------------------------------------------------- the mel front end


def test_mel_scale_round_trip_and_known_value() -> None:
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * np.log10(2))
    f = np.array([0.0, 123.0, 1000.0, 3999.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


def test_filterbank_triangles_by_hand() -> None:
    sr, n_fft, n_mels = 8000, 256, 40
    bank = mel_filterbank(sr, n_fft, n_mels)
    assert bank.shape == (40, 129) and bank.dtype == np.float32
    mels = np.linspace(0.0, 2595 * np.log10(1 + 4000 / 700), n_mels + 2)
    edges = 700 * (10 ** (mels / 2595) - 1)
    freqs = np.arange(129) * sr / n_fft
    for j in (0, 7, 39):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        for k, f in enumerate(freqs):
            if lo <= f <= mid:
                want = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                want = (hi - f) / (hi - mid)
            else:
                want = 0.0
            assert bank[j, k] == pytest.approx(want, abs=1e-6)
    # Neighbouring triangles sum to one between the first and the last centre.
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(bank[:, inside].sum(0), 1.0, atol=1e-5)
    assert (bank >= 0).all() and (bank.max(1) > 0).all()


def test_pure_tone_lands_in_the_band_around_its_frequency() -> None:
    sr, n_fft, hop, n_mels = 8000, 256, 80, 40
    t = np.arange(8176) / sr
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), n_mels + 2))
    for f in (440.0, 1500.0, 3000.0):
        spec = log_mel(np.sin(2 * np.pi * f * t)[None], sr=sr, n_fft=n_fft, hop=hop, n_mels=n_mels)[
            0
        ]
        assert spec.shape == (40, 100)
        peak = int(spec.mean(1).argmax())
        assert edges[peak] < f < edges[peak + 2]


def test_log_mel_matches_a_loop_over_frames() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1000)).astype(np.float32)
    n_fft, hop = 256, 80
    got = log_mel(x, sr=8000, n_fft=n_fft, hop=hop, n_mels=32, chunk=1)
    bank = mel_filterbank(8000, n_fft, 32).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (1000 - n_fft) // hop
    assert got.shape == (2, 32, frames)
    for c in range(2):
        for i in range(frames):
            seg = x[c, i * hop : i * hop + n_fft] * window
            power = np.abs(np.fft.rfft(seg)) ** 2
            np.testing.assert_allclose(
                got[c, :, i], np.log(bank @ power + LOG_FLOOR), rtol=1e-4, atol=1e-4
            )


def test_fit_length_crops_centre_and_pads_end() -> None:
    x = np.arange(10.0)
    np.testing.assert_array_equal(fit_length(x, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(fit_length(x[:3], 5), [0, 1, 2, 0, 0])


# ---------------------------------------------------------------- the dataset


def test_sizes_speakers_and_balance(splits) -> None:
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2250, 250, 500)
    assert splits.info["speakers"]["test"] == ["yweweler"]
    assert "yweweler" not in splits.info["speakers"]["train"] + splits.info["speakers"]["val"]
    assert splits.info["speakers"]["train"] == ["george", "jackson", "lucas", "nicolas", "theo"]
    assert splits.train.class_counts().tolist() == [225] * 10
    assert splits.val.class_counts().tolist() == [25] * 10
    assert splits.test.class_counts().tolist() == [50] * 10
    # Validation is stratified by digit and speaker: 5 clips of each of the 50 pairs.
    pairs = [tuple(c.split("_")[:2]) for c in splits.info["clips"]["val"]]
    assert len(set(pairs)) == 50 and all(pairs.count(p) == 5 for p in set(pairs))


def test_each_clip_once_images_unique_and_digits_match(splits, data_root: Path) -> None:
    clips = [c for k in ("train", "val", "test") for c in splits.info["clips"][k]]
    assert len(clips) == len(set(clips)) == 3000
    images = [i for k in ("train", "val", "test") for i in splits.info["images"][k]]
    assert len(images) == len(set(images)) == 3000
    _, mnist_labels = av.read_mnist(data_root)
    for k, ds in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        clip_digits = [int(c.split("_")[0]) for c in splits.info["clips"][k]]
        assert ds.labels.tolist() == clip_digits
        assert mnist_labels[splits.info["images"][k]].tolist() == clip_digits


def test_specs_dtypes_and_standardisation(splits) -> None:
    assert splits.specs["image"].kind == "image" and splits.specs["image"].shape == (1, 28, 28)
    assert splits.specs["audio"].kind == "audio" and splits.specs["audio"].shape == (40, 100)
    for m in ("image", "audio"):
        x = splits.train.inputs[m]
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        assert float(x.mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(x.std()) == pytest.approx(1.0, abs=1e-3)
    assert splits.num_classes == 10 and splits.train.masks["audio"].all()


def test_image_is_the_pca_reconstruction_fitted_on_train(splits, data_root: Path) -> None:
    images, _ = av.read_mnist(data_root)
    flat = images.reshape(10000, -1).astype(np.float64) / 255.0
    train = flat[splits.info["images"]["train"]]
    mean = train.mean(0)
    _, sing, vt = np.linalg.svd(train - mean, full_matrices=False)
    energy = np.cumsum(sing**2) / np.sum(sing**2)
    k = splits.info["pca_components"]
    assert energy[k - 2] < 0.25 <= energy[k - 1]  # the fewest components reaching 25%
    v = vt[:k]
    test = flat[splits.info["images"]["test"]]
    recon = mean + (test - mean) @ v.T @ v
    m, s = splits.info["image_scale"]
    got = splits.test.inputs["image"].reshape(500, -1).numpy() * s + m
    np.testing.assert_allclose(got, recon, atol=2e-4)


def test_audio_is_the_log_mel_of_the_clip(splits, data_root: Path) -> None:
    name = splits.info["clips"]["test"][17]
    sr, data = wavfile.read(data_root / "fsdd" / "recordings" / name)
    x = data.astype(np.float64) / 32768.0
    x = x / np.abs(x).max()
    length = 99 * 80 + 256
    x = (
        x[(len(x) - length) // 2 :][:length]
        if len(x) >= length
        else np.pad(x, (0, length - len(x)))
    )
    want = log_mel(x[None], sr=8000, n_fft=256, hop=80, n_mels=40)[0]
    m, s = splits.info["audio_scale"]
    got = splits.test.inputs["audio"][17].numpy() * s + m
    np.testing.assert_allclose(got, want, atol=2e-3)
    if len(data) < length:  # padded frames sit at the log floor
        assert np.allclose(got[:, -1], np.log(LOG_FLOOR), atol=2e-3)


def test_deterministic_and_seeded(splits) -> None:
    again = load_dataset("avdigits")
    assert torch.equal(again.val.inputs["image"], splits.val.inputs["image"])
    assert torch.equal(again.test.inputs["audio"], splits.test.inputs["audio"])
    other = load_dataset("avdigits", seed=1)
    assert other.info["clips"]["test"] == splits.info["clips"]["test"]  # the held-out speaker
    assert other.info["clips"]["val"] != splits.info["clips"]["val"]
    assert other.info["images"]["test"] != splits.info["images"]["test"]


def test_degradation_options(splits) -> None:
    clean = load_dataset("avdigits", image_energy=None)
    assert clean.info["pca_components"] is None
    # The image alone is much less informative degraded than clean (nearest class mean).
    assert _centroid_accuracy(clean, "image") > _centroid_accuracy(splits, "image") + 0.15
    ten = load_dataset("avdigits", image_pca_components=10, image_noise=0.2)
    assert ten.specs["image"].meta["pca_components"] == 10
    with pytest.raises(DataError, match="image_energy"):
        load_dataset("avdigits", image_energy=1.5)
    with pytest.raises(DataError, match="test_speaker"):
        load_dataset("avdigits", test_speaker="nobody")


def _centroid_accuracy(splits, mod: str) -> float:
    """Validation accuracy of the nearest training class mean."""
    xtr, xva = splits.train.inputs[mod].flatten(1), splits.val.inputs[mod].flatten(1)
    means = torch.stack([xtr[splits.train.labels == c].mean(0) for c in range(10)])
    pred = torch.cdist(xva, means).argmin(1)
    return (pred == splits.val.labels).float().mean().item()


def test_spectrogram_cache_is_used_and_keyed(
    scratch_cache: Path, monkeypatch: pytest.MonkeyPatch, splits
) -> None:
    first = load_dataset("avdigits")
    cached = sorted(scratch_cache.glob("avdigits-audio-*.npz"))
    assert len(cached) == 1
    assert torch.equal(first.test.inputs["audio"], splits.test.inputs["audio"])

    def no_processing(*args, **kwargs):
        raise AssertionError("spectrograms recomputed despite the cache")

    with monkeypatch.context() as m:
        m.setattr(av, "_spectrograms", no_processing)
        second = load_dataset(
            "avdigits", image_pca_components=3
        )  # image options do not touch the cache
        with pytest.raises(AssertionError, match="recomputed"):
            load_dataset("avdigits", n_mels=32)  # another key
    assert torch.equal(second.test.inputs["audio"], first.test.inputs["audio"])


def test_corrupt_mnist_names_the_file(copy_source, scratch_cache: Path, data_root: Path) -> None:
    root = copy_source("mnist")
    (root / "fsdd").symlink_to(data_root / "fsdd")
    assert verify("avdigits", root) == []
    flip_byte(root / "mnist" / "t10k-images-idx3-ubyte.gz", offset=5000)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt") as err:
        load_dataset("avdigits", root=root)
    assert "mmfuse data download avdigits" in str(err.value)


def test_idx_reader_checks_counts(tmp_path: Path) -> None:
    """Past the checksum, the parser itself rejects files that break the known facts."""
    (tmp_path / "mnist").mkdir()
    header = (2051).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (2, 28, 28))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + bytes(2 * 784))
    )
    labels = (2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(DataError, match="expected 10000 28x28 images"):
        av.read_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 20))
    with pytest.raises(DataError, match="not an IDX file"):
        av.read_mnist(tmp_path)


def test_processed_cache_round_trip_and_broken_entry(scratch_cache: Path) -> None:
    from mmfuse.data._common import load_or_build

    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}

    key = {"version": 1, "x": 2}
    out = load_or_build("thing", key, build)
    again = load_or_build("thing", key, build)
    np.testing.assert_array_equal(again["a"], out["a"])
    assert len(calls) == 1
    load_or_build("thing", {"version": 1, "x": 3}, build)
    assert len(calls) == 2
    assert len(list(scratch_cache.glob("thing-*.npz"))) == 2
    load_or_build("other", key, build)
    (entry,) = scratch_cache.glob("other-*.npz")
    entry.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match=rf"{entry}.*damaged.*cannot be read"):
        np.testing.assert_array_equal(load_or_build("other", key, build)["a"], out["a"])
    assert len(calls) == 4  # rebuilt, not trusted


def _entry_with(path: Path, **arrays: np.ndarray) -> None:
    """Rewrite the arrays of a cache entry, keeping its checksum record."""
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files}
    kept.update(arrays)
    with open(path, "wb") as f:
        np.savez(f, **kept)


@pytest.mark.parametrize("damage", ["truncated", "bad crc", "nan", "wrong shape", "other values", "no record"])
def test_damaged_cache_entry_is_rebuilt_with_a_warning_naming_it(scratch_cache: Path, damage: str) -> None:
    from mmfuse.data._common import load_or_build

    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"spec": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "ids": np.arange(3)}

    key = {"version": 1}
    good = load_or_build("entry", key, build)
    (entry,) = scratch_cache.glob("entry-*.npz")
    raw = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "bad crc":
        # np.savez stores members uncompressed: flip one byte of the float data itself.
        at = raw.index(np.linspace(-1, 1, 12, dtype=np.float32).tobytes()) + 5
        entry.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :])
    elif damage == "nan":
        bad = good["spec"].copy()
        bad[1, 2] = np.nan
        _entry_with(entry, spec=bad)
    elif damage == "wrong shape":
        _entry_with(entry, spec=good["spec"].reshape(4, 3))
    elif damage == "other values":
        _entry_with(entry, ids=np.arange(3)[::-1].copy())
    else:
        with open(entry, "wb") as f:
            np.savez(f, **good)
    with pytest.warns(UserWarning, match=rf"processed cache entry {entry} is damaged"):
        again = load_or_build("entry", key, build)
    assert len(calls) == 2
    for k in good:
        np.testing.assert_array_equal(again[k], good[k])
    assert load_or_build("entry", key, build)["ids"].tolist() == [0, 1, 2] and len(calls) == 2  # rewritten


def test_unwritable_cache_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmfuse.data._common import load_or_build

    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where the cache folder should be
    monkeypatch.setenv("MMFUSE_CACHE", str(blocked / "cache"))
    with pytest.warns(UserWarning, match="cannot write the processed cache"):
        out = load_or_build("thing", {"k": 1}, lambda: {"a": np.ones(3)})
    np.testing.assert_array_equal(out["a"], np.ones(3))


def test_unwritable_cache_keeps_no_hash_records_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where the cache folder should be
    monkeypatch.setenv("MMFUSE_CACHE", str(blocked / "cache"))
    assert load_dataset("mfeat", views=["mor"]).num_classes == 10  # hash records: silently not kept
