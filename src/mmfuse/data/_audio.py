"""Log-mel spectrograms in numpy/scipy, vectorised over many clips.

Shape legend: ``n`` clips, ``s`` samples per clip, ``t`` frames, ``k`` FFT bins
(``n_fft // 2 + 1``), ``f`` mel bands.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["LOG_FLOOR", "fit_length", "hz_to_mel", "log_mel", "mel_filterbank", "mel_to_hz"]

LOG_FLOOR = 1e-6
"""Added to the mel power before the log: silence and padding sit at ``log(1e-6)``."""


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """``(f, k)`` triangular filters, centres equally spaced on the mel scale.

    Filter ``j`` rises linearly from edge ``j`` to 1 at centre ``j + 1`` and falls to 0
    at edge ``j + 2`` of ``n_mels + 2`` points equally spaced in mel between ``fmin``
    and ``fmax`` (default ``sr / 2``); peak height 1 (no area normalisation).
    """
    fmax = sr / 2.0 if fmax is None else fmax
    points = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    lo, mid, hi = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """``(length,)``: a longer clip cropped around its centre, a shorter one padded with zeros at the end."""
    if wave.shape[0] >= length:
        start = (wave.shape[0] - length) // 2
        return wave[start : start + length]
    return np.pad(wave, (0, length - wave.shape[0]))


def log_mel(
    waves: np.ndarray, *, sr: int, n_fft: int, hop: int, n_mels: int, chunk: int = 256
) -> np.ndarray:
    """``(n, f, t)`` log mel power of ``(n, s)`` clips (Hann window, no centring).

    ``t = 1 + (s - n_fft) // hop``; computed ``chunk`` clips at a time to bound memory.
    """
    if waves.ndim != 2 or waves.shape[1] < n_fft:
        raise ValueError(
            f"log_mel: expected (n, s) clips with s >= n_fft={n_fft}, got {waves.shape}"
        )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    bank = mel_filterbank(sr, n_fft, n_mels)
    out = []
    for start in range(0, waves.shape[0], chunk):
        x = waves[start : start + chunk].astype(np.float32)
        frames = sliding_window_view(x, n_fft, axis=1)[:, ::hop]  # (c, t, n_fft)
        spec = scipy.fft.rfft(frames * window, axis=-1)
        power = spec.real**2 + spec.imag**2  # (c, t, k)
        mel = np.einsum("ctk,fk->cft", power, bank)
        out.append(np.log(mel + LOG_FLOOR).astype(np.float32))
    return np.concatenate(out, axis=0)
