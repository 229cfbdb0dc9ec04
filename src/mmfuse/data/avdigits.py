"""Audio-visual digits (``avdigits``): a spoken digit (FSDD) paired with a handwritten one (MNIST).

Shape legend: ``n`` samples, ``f`` mel bands, ``t`` frames, ``h``/``w`` image size.

Each of the 3,000 Free Spoken Digit Dataset clips is used once and paired with an
MNIST test-set image of the same digit. The images are split by digit into disjoint
blocks (seeded), one per split, and drawn without reuse, so no image appears twice
or in two splits. Speaker ``yweweler`` is held out for test (500 clips); a seeded
``val_fraction`` of the other speakers' clips, stratified by digit and speaker, is
the validation split.

Modalities:

- ``image`` ``(1, 28, 28)``: degraded as in the AV-MNIST benchmark so that the image
  alone does not suffice: projected onto the leading principal components
  (fitted on the training images only) that keep ``image_energy`` of the variance
  (or exactly ``image_pca_components``), plus optional Gaussian noise of std
  ``image_noise`` (pixel units, 0-1), then standardised with the training mean and
  std (one scalar each).
- ``audio`` ``(f, t)``: log mel spectrogram (8 kHz, Hann window ``n_fft``, ``hop``
  samples, ``n_mels`` HTK mel bands) of the peak-normalised clip, cropped around its
  centre or zero-padded at the end to ``frames`` frames (100 frames = 1.02 s); padded
  frames hold the log floor ``log(1e-6)``. Optional white noise at ``audio_snr_db``
  dB. Standardised with the training mean and std (one scalar each).

The spectrograms of all clips are cached in :func:`mmfuse.data.cache_dir`, keyed by
the spectrogram options and the checksum of the recordings.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile

from mmfuse.data._audio import fit_length, log_mel
from mmfuse.data._base import (
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    register_dataset,
)
from mmfuse.data._common import load_or_build, stratified_split
from mmfuse.data._files import FSDD_SPEAKERS, SOURCES, require
from mmfuse.errors import check_fraction

__all__ = ["MNIST_TEST_COUNTS", "load_avdigits", "read_fsdd", "read_mnist"]

MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
SAMPLE_RATE = 8000
_PROCESSING_VERSION = 1


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot decompress: {e}") from e
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path}: not an IDX file with magic {magic}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) != header + math.prod(shape):
        raise DataError(f"{path}: IDX header says {shape}, data has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(10000, 28, 28)`` uint8 images and ``(10000,)`` int64 labels of the MNIST test set."""
    images = _read_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", 2051, 3)
    labels = _read_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", 2049, 1).astype(np.int64)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise DataError(
            f"{root / 'mnist'}: expected 10000 28x28 images and labels, got {images.shape}, {labels.shape}"
        )
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != MNIST_TEST_COUNTS:
        raise DataError(f"{root / 'mnist'}: class counts {counts}, expected {MNIST_TEST_COUNTS}")
    return images, labels


def read_fsdd(root: Path) -> tuple[list[str], list[np.ndarray]]:
    """Sorted clip names and their waveforms (float32, peak-normalised to 1)."""
    folder = root / "fsdd" / "recordings"
    names = list(SOURCES["fsdd"].folder_names)
    waves = []
    for name in names:
        path = folder / name
        try:
            sr, data = wavfile.read(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read as WAV: {e}") from e
        if sr != SAMPLE_RATE or data.ndim != 1 or data.dtype != np.int16:
            raise DataError(
                f"{path}: expected {SAMPLE_RATE} Hz mono 16-bit, got {sr} Hz {data.dtype} {data.shape}"
            )
        x = data.astype(np.float32) / 32768.0
        peak = float(np.abs(x).max())
        waves.append(x / peak if peak > 0 else x)
    return names, waves


def _spectrograms(
    root: Path, *, n_fft: int, hop: int, n_mels: int, frames: int, snr_db: float | None, seed: int
) -> np.ndarray:
    """``(3000, f, t)`` log mel spectrograms of every clip in sorted name order."""
    _, waves = read_fsdd(root)
    length = (frames - 1) * hop + n_fft
    batch = np.stack([fit_length(w, length) for w in waves])
    if snr_db is not None:
        rng = np.random.default_rng([seed, 11])
        lengths = np.array([min(len(w), length) for w in waves])
        valid = np.arange(length)[None, :] < lengths[:, None]
        power = (batch**2).sum(axis=1) / lengths
        scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
        batch = batch + np.where(valid, rng.standard_normal(batch.shape) * scale[:, None], 0.0)
    return log_mel(batch, sr=SAMPLE_RATE, n_fft=n_fft, hop=hop, n_mels=n_mels)


def _scalar_stats(x: np.ndarray) -> tuple[float, float]:
    """Mean and std of all entries of ``x`` (std 1 if constant)."""
    mean = float(x.mean())
    std = float(x.std())
    return mean, std if std > 1e-8 else 1.0


def _parse_name(name: str) -> tuple[int, str, int]:
    digit, speaker, take = name[: -len(".wav")].split("_")
    return int(digit), speaker, int(take)


@register_dataset("avdigits")
def load_avdigits(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_mels: int = 40,
    n_fft: int = 256,
    hop: int = 80,
    frames: int = 100,
    image_energy: float | None = 0.25,
    image_pca_components: int | None = None,
    image_noise: float = 0.0,
    audio_snr_db: float | None = None,
    val_fraction: float = 0.1,
    test_speaker: str = "yweweler",
) -> DatasetSplits:
    """Load the audio-visual digits (see the module docstring).

    Args:
        root: data root holding ``mnist/`` and ``fsdd/recordings/``.
        seed: seed of the validation split, image pairing and noise.
        n_mels: mel bands ``f``.
        n_fft: FFT window in samples (8 kHz).
        hop: hop in samples.
        frames: frames ``t`` kept per clip.
        image_energy: fraction of the training images' variance the kept principal
            components explain (None with ``image_pca_components`` None: no PCA).
        image_pca_components: exact number of components (overrides ``image_energy``).
        image_noise: std of Gaussian noise added to the (0-1) image after PCA.
        audio_snr_db: add white noise to each clip at this signal-to-noise ratio.
        val_fraction: fraction of the non-test speakers' clips for validation.
        test_speaker: FSDD speaker held out for test.
    """
    for what, v, low in (
        ("n_mels", n_mels, 1),
        ("n_fft", n_fft, 8),
        ("hop", hop, 1),
        ("frames", frames, 1),
    ):
        if not isinstance(v, int) or v < low:
            raise DataError(f"avdigits: {what} must be an int >= {low}, got {v!r}")
    if image_energy is not None and not 0.0 < image_energy <= 1.0:
        raise DataError(f"avdigits: image_energy must be in (0, 1] or None, got {image_energy}")
    if image_pca_components is not None and not 1 <= image_pca_components <= 784:
        raise DataError(
            f"avdigits: image_pca_components must be in [1, 784], got {image_pca_components}"
        )
    if image_noise < 0:
        raise DataError(f"avdigits: image_noise must be >= 0, got {image_noise}")
    check_fraction("avdigits: val_fraction", val_fraction, error=DataError, low_open=True)
    if test_speaker not in FSDD_SPEAKERS:
        raise DataError(
            f"avdigits: test_speaker must be one of {list(FSDD_SPEAKERS)}, got {test_speaker!r}"
        )
    base = require("avdigits", root)

    images, image_labels = read_mnist(base)
    key = {
        "version": _PROCESSING_VERSION,
        "fsdd": SOURCES["fsdd"].folder_sha256,
        "n_fft": n_fft,
        "hop": hop,
        "n_mels": n_mels,
        "frames": frames,
        "snr_db": audio_snr_db,
        "seed": seed if audio_snr_db is not None else None,
    }
    cached = load_or_build(
        "avdigits-audio",
        key,
        lambda: {
            "spec": _spectrograms(
                base,
                n_fft=n_fft,
                hop=hop,
                n_mels=n_mels,
                frames=frames,
                snr_db=audio_snr_db,
                seed=seed,
            )
        },
    )
    spec = cached["spec"]
    names = list(SOURCES["fsdd"].folder_names)
    parsed = [_parse_name(nm) for nm in names]
    digits = np.array([p[0] for p in parsed], dtype=np.int64)
    speakers = np.array([p[1] for p in parsed])

    is_test = speakers == test_speaker
    rest = np.flatnonzero(~is_test)
    strata = digits[rest] * len(FSDD_SPEAKERS) + np.array(
        [FSDD_SPEAKERS.index(s) for s in speakers[rest]]
    )
    tr, va = stratified_split(strata, [1.0 - val_fraction, val_fraction], seed)
    clip_parts = {"train": rest[tr], "val": rest[va], "test": np.flatnonzero(is_test)}

    # Pair clips with images: per digit, a seeded permutation of that digit's images cut into
    # one disjoint block per split, each image used once.
    rng = np.random.default_rng([seed, 3])
    image_parts: dict[str, np.ndarray] = {
        k: np.empty(len(v), dtype=np.int64) for k, v in clip_parts.items()
    }
    for d in range(10):
        pool = rng.permutation(np.flatnonzero(image_labels == d))
        start = 0
        for split, clips in clip_parts.items():
            where = np.flatnonzero(digits[clips] == d)
            image_parts[split][where] = pool[start : start + len(where)]
            start += len(where)

    flat = images.reshape(10000, -1).astype(np.float32) / 255.0
    train_imgs = flat[image_parts["train"]]
    mean_img = train_imgs.mean(axis=0, dtype=np.float64).astype(np.float32)
    components = None
    kept = None
    if image_pca_components is not None or image_energy is not None:
        # Principal axes from the eigendecomposition of the 784 x 784 covariance
        # (much faster than an SVD of the training images themselves).
        centred = train_imgs - mean_img
        evals, evecs = np.linalg.eigh(centred.T.astype(np.float64) @ centred)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
        ratio = np.cumsum(evals) / np.sum(evals)
        if image_pca_components is not None:
            kept = image_pca_components
        else:
            kept = int(np.searchsorted(ratio, image_energy - 1e-12) + 1)
        components = evecs[:, :kept].T.astype(np.float32)
    noise_rng = np.random.default_rng([seed, 5])

    def degrade(x: np.ndarray) -> np.ndarray:
        if components is not None:
            x = mean_img + ((x - mean_img) @ components.T) @ components
        if image_noise > 0:
            x = x + image_noise * noise_rng.standard_normal(x.shape).astype(np.float32)
        return x.astype(np.float32)

    degraded = {k: degrade(flat[v]) for k, v in image_parts.items()}
    img_mean, img_std = _scalar_stats(degraded["train"])
    aud_mean, aud_std = _scalar_stats(spec[clip_parts["train"]])

    specs = {
        "image": ModalitySpec("image", (1, 28, 28), {"pca_components": kept}),
        "audio": ModalitySpec(
            "audio",
            (n_mels, frames),
            {"sample_rate": SAMPLE_RATE, "n_fft": n_fft, "hop": hop, "n_mels": n_mels},
        ),
    }
    splits = {}
    for split, clips in clip_parts.items():
        img = ((degraded[split] - img_mean) / img_std).reshape(-1, 1, 28, 28)
        aud = (spec[clips] - aud_mean) / aud_std
        splits[split] = MultimodalDataset(
            "avdigits",
            {
                "image": torch.from_numpy(img.astype(np.float32)),
                "audio": torch.from_numpy(aud.astype(np.float32)),
            },
            torch.from_numpy(digits[clips]),
            specs=specs,
            num_classes=10,
            class_names=[str(i) for i in range(10)],
        )
    info = {
        "seed": seed,
        "test_speaker": test_speaker,
        "clips": {k: [names[i] for i in v] for k, v in clip_parts.items()},
        "images": {k: v.tolist() for k, v in image_parts.items()},
        "pca_components": kept,
        "image_scale": (img_mean, img_std),
        "audio_scale": (aud_mean, aud_std),
        "speakers": {k: sorted(set(speakers[v].tolist())) for k, v in clip_parts.items()},
    }
    return DatasetSplits("avdigits", splits["train"], splits["val"], splits["test"], info)
