"""Image-path columns: decoded, resized and standardised images.

Shape legend: ``n`` rows, ``c``/``h``/``w`` channels/height/width.

A path (relative ones resolve against the table's folder, or ``base_dir``) is decoded
with Pillow, converted to ``image_mode`` (``RGB`` or ``L``), resized to ``image_size``
(bilinear), scaled to [0, 1] and standardised per channel with the mean and std of the
training rows' images. A missing, absent, non-regular or undecodable file makes the
modality missing for that row (recorded as a bad file; ``on_bad_file="error"`` raises).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

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

__all__ = ["IMAGE_EXTENSIONS", "ImageBlock", "decode_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: an image of more pixels than this is a bad file, refused before it is decoded (its header
#: says its size): a 121-Mpx PNG would otherwise cost about 0.9 GB to shrink to 32 x 32
MAX_PIXELS = 40_000_000


def decode_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """``(c, h, w)`` uint8; :class:`DataError` with the reason when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DataError("file not found")
    if not path.is_file():
        raise DataError("not a regular file")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise DataError(f"image of {w} x {h} = {w * h:,} pixels, above the limit of {MAX_PIXELS:,} "
                                "(mmfuse.data.table.kinds.image.MAX_PIXELS)")
            im.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when it can
            im.load()
            im = im.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError("file not found") from e
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode as an image: {type(e).__name__}: {e}") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class ImageBlock(Block):
    name = "image"

    @property
    def channels(self) -> int:
        return 1 if self.options.image_mode == "L" else 3

    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        (col,) = self.columns
        h, w = self.options.image_size
        n = len(frame)
        out = np.zeros((n, self.channels, h, w), dtype=np.uint8)
        present = np.zeros(n, dtype=bool)
        values = frame[col].tolist() if col in frame.columns else [None] * n
        for r, v in enumerate(values):
            if is_blank(v):
                continue
            path = ctx.path(col, r, str(v))
            try:
                out[r] = decode_image(path, (h, w), self.options.image_mode)
            except DataError as e:
                ctx.bad(col, r, path, str(e))
                continue
            present[r] = True
        return Raw(present, out)

    def fit(self, raw: Raw) -> None:
        x = raw.data[raw.present]
        c = self.channels
        if len(x):
            total = np.zeros(c)
            sq = np.zeros(c)
            count = 0
            for start in range(0, len(x), 1024):  # bounded temporaries
                chunk = x[start:start + 1024].astype(np.float64) / 255.0
                total += chunk.sum(axis=(0, 2, 3))
                sq += (chunk ** 2).sum(axis=(0, 2, 3))
                count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
            mean = total / count
            std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
            std[std < 1e-8] = 1.0
        else:
            mean, std = np.zeros(c), np.ones(c)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.fitted = True

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        self._need_fitted()
        x = raw.data
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        out = torch.empty(x.shape, dtype=torch.float32)
        for start in range(0, x.shape[0], 1024):  # bounded temporaries
            chunk = (x[start:start + 1024].astype(np.float32) / 255.0 - mean) / std
            chunk[~raw.present[start:start + 1024]] = 0.0
            out[start:start + 1024] = torch.from_numpy(chunk)
        return Encoded(out, torch.from_numpy(raw.present.copy()))

    def spec(self) -> ModalitySpec:
        h, w = self.options.image_size
        return ModalitySpec("image", (self.channels, h, w), {"mode": self.options.image_mode,
                                                              "columns": list(self.columns)})

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_fitted()
        h, w = self.options.image_size
        return {"mean": self.mean, "std": self.std, "size": [h, w], "mode": self.options.image_mode}, {}

    def load_state(self, state: Any, arrays: Any) -> None:
        self.mean = [float(v) for v in state["mean"]]
        self.std = [float(v) for v in state["std"]]
        self.fitted = True


def _is_image(values: pd.Series, options: Any) -> bool:
    return paths_ending(values, IMAGE_EXTENSIONS)


register_kind(ColumnKind("image", ImageBlock, _is_image, priority=10,
                         summary="paths of image files: decoded, resized, standardised per channel"))
