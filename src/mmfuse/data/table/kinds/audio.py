"""Audio-path columns: log-mel spectrograms with a frame mask.

Shape legend: ``n`` rows, ``f`` mel bands, ``t`` frames.

A ``.wav`` path (``.flac``/``.ogg`` too when ``soundfile`` is installed) is mixed to
mono, resampled to ``audio_sample_rate``, cropped around its centre or padded to
``audio_seconds``, turned into a log-mel spectrogram
(:func:`mmfuse.data._audio.log_mel`) and standardised with one mean and std of the
training rows' valid frames. The ``(t,)`` frame mask is False on frames that start
after the clip's end. A bad file makes the modality missing for that row (recorded).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data._audio import log_mel
from mmfuse.data._base import DataError, ModalitySpec
from mmfuse.data.table.kinds._base import (
    Block,
    ColumnKind,
    Encoded,
    Raw,
    ReadContext,
    is_blank,
    paths_ending,
    register_kind,
)

__all__ = ["AUDIO_EXTENSIONS", "AudioBlock", "read_wave"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


#: a clip longer than this many times the settings' length is read only around its centre
#: (twice that length), whatever length its header claims: a decompression bomb costs nothing
LONG_CLIP = 4


def read_wave(path: Path, seconds: float | None = None) -> tuple[int, np.ndarray]:
    """Sample rate and ``(s,)`` float32 mono samples in [-1, 1]. With ``seconds``, a clip longer
    than ``LONG_CLIP`` times that is read only in a window of ``2 * seconds`` around its centre
    (the frames the crop can use), so its memory and time do not follow its claimed length."""
    if not path.exists():
        raise DataError("file not found")
    if not path.is_file():
        raise DataError("not a regular file")
    try:
        import soundfile  # type: ignore[import-not-found]
    except ImportError:
        soundfile = None
    try:
        if soundfile is not None:
            info = soundfile.info(str(path))
            start, frames = _window(int(info.frames), int(info.samplerate), seconds)
            data, sr = soundfile.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
            x = data.mean(axis=1)
        else:
            from scipy.io import wavfile

            try:
                sr, data = wavfile.read(path, mmap=True)  # the header's length; samples read on slicing
            except ValueError:  # a layout mmap cannot map (e.g. 24-bit): read whole
                sr, data = wavfile.read(path)
            start, frames = _window(int(data.shape[0]), int(sr), seconds)
            data = np.array(data[start:start + frames] if frames > 0 else data[start:])
            if data.dtype.kind == "u":
                x = (data.astype(np.float32) - 128.0) / 128.0
            elif data.dtype.kind == "i":
                x = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
            else:
                x = data.astype(np.float32)
            if x.ndim == 2:
                x = x.mean(axis=1)
    except Exception as e:  # noqa: BLE001  (every decoder failure is a bad file)
        raise DataError(f"cannot decode as audio: {type(e).__name__}: {e}") from e
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise DataError(f"cannot decode as audio: empty or non-finite samples, shape {x.shape}")
    return int(sr), x.astype(np.float32)


def _window(total: int, sr: int, seconds: float | None) -> tuple[int, int]:
    """``(start, frames)`` to read of a clip of ``total`` samples (``frames = -1``: to the end)."""
    if seconds is None or sr <= 0:
        return 0, -1
    need = int(np.ceil(seconds * sr))
    if total <= LONG_CLIP * need:
        return 0, -1
    return (total - 2 * need) // 2, 2 * need


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(sr, target)
    return resample_poly(x, target // g, sr // g).astype(np.float32)


class AudioBlock(Block):
    name = "audio"

    @property
    def frames(self) -> int:
        o = self.options
        return 1 + (int(round(o.audio_seconds * o.audio_sample_rate)) - o.n_fft) // o.hop

    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        (col,) = self.columns
        o = self.options
        sr, n_fft, hop, frames = o.audio_sample_rate, o.n_fft, o.hop, self.frames
        length = (frames - 1) * hop + n_fft
        n = len(frame)
        out = np.zeros((n, o.n_mels, frames), dtype=np.float32)
        fmask = np.zeros((n, frames), dtype=bool)
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if pending:
                mel = log_mel(np.stack([w for _, w in pending]), sr=sr, n_fft=n_fft, hop=hop, n_mels=o.n_mels)
                for (r, _), x in zip(pending, mel, strict=True):
                    out[r] = x
                pending.clear()

        values = frame[col].tolist() if col in frame.columns else [None] * n
        for r, v in enumerate(values):
            if is_blank(v):
                continue
            path = ctx.path(col, r, str(v))
            try:
                rate, x = read_wave(path, o.audio_seconds)
            except DataError as e:
                ctx.bad(col, r, path, str(e))
                continue
            x = _resample(x, rate, sr)
            if x.shape[0] >= length:
                start = (x.shape[0] - length) // 2
                x, valid = x[start:start + length], length
            else:
                valid = x.shape[0]
                x = np.pad(x, (0, length - valid))
            fmask[r, :min(frames, -(-valid // hop))] = True
            pending.append((r, x))
            if len(pending) >= 64:
                flush()
        flush()
        return Raw(fmask.any(axis=1), out, token_mask=fmask)

    def fit(self, raw: Raw) -> None:
        valid = raw.data.transpose(0, 2, 1)[raw.token_mask]  # (frames, f)
        mean = float(valid.mean()) if valid.size else 0.0
        std = float(valid.std()) if valid.size else 1.0
        self.mean, self.std = mean, std if std > 1e-8 else 1.0
        self.fitted = True

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        self._need_fitted()
        x = ((raw.data - self.mean) / self.std).astype(np.float32)
        x *= raw.token_mask[:, None, :]
        return Encoded(torch.from_numpy(x), torch.from_numpy(raw.token_mask.copy()))

    def spec(self) -> ModalitySpec:
        o = self.options
        return ModalitySpec("audio", (o.n_mels, self.frames), {
            "sample_rate": o.audio_sample_rate, "n_fft": o.n_fft, "hop": o.hop, "n_mels": o.n_mels,
            "columns": list(self.columns)})

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_fitted()
        o = self.options
        return {"mean": self.mean, "std": self.std, "sample_rate": o.audio_sample_rate, "n_fft": o.n_fft,
                "hop": o.hop, "n_mels": o.n_mels, "frames": self.frames}, {}

    def load_state(self, state: Any, arrays: Any) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])
        self.fitted = True


def _is_audio(values: pd.Series, options: Any) -> bool:
    return paths_ending(values, AUDIO_EXTENSIONS)


register_kind(ColumnKind("audio", AudioBlock, _is_audio, priority=20,
                         summary="paths of audio files: log-mel spectrograms with a frame mask"))
