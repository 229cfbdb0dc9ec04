"""Text columns: one modality of token ids, and the raw strings for a pretrained tokenizer.

Shape legend: ``n`` rows, ``t`` tokens.

Several text columns in one modality are joined with a space. The words
(:func:`mmfuse.data.reviews.tokenize`) get ids from a vocabulary built on the training
rows only (words seen ``min_count`` times, at most ``max_vocab`` ids, pad 0, unknown 1),
padded or cut to ``max_tokens``. An empty text is a missing modality. The joined raw
strings are kept too (:attr:`TextBlock.raw_strings` of the last read), so a pretrained
tokenizer (``--encoder text=hf:...``) reads the text itself, not the vocabulary's ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data._base import ModalitySpec
from mmfuse.data.reviews import PAD_ID, UNK_ID, build_vocab, encode, tokenize
from mmfuse.data.table.kinds._base import (
    Block,
    ColumnKind,
    Encoded,
    Raw,
    ReadContext,
    is_missing,
    register_kind,
)

__all__ = ["TextBlock"]


class TextBlock(Block):
    name = "text"
    multi_column = True

    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        n = len(frame)
        cols = [_strings(frame[c]) if c in frame.columns else [""] * n for c in self.columns]
        if len(cols) == 1:
            joined = [v.strip() for v in cols[0]]
        else:
            joined = [" ".join(v for v in row if v).strip() for row in zip(*cols, strict=True)]
        docs = [tokenize(t) for t in joined]
        present = np.array([len(d) > 0 for d in docs], dtype=bool)
        return Raw(present, {"docs": docs, "strings": [s if p else "" for s, p in zip(joined, present, strict=True)]})

    def fit(self, raw: Raw) -> None:
        vocab = build_vocab(raw.data["docs"], min_count=self.options.min_count, max_size=self.options.max_vocab)
        self.words = sorted(vocab, key=vocab.__getitem__)  # id - 2 -> word
        self.max_tokens = int(self.options.max_tokens)
        self._vocab = vocab
        self.fitted = True

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        self._need_fitted()
        ids = encode(raw.data["docs"], self._vocab, self.max_tokens)
        return Encoded(torch.from_numpy(ids), torch.from_numpy(raw.present.copy()))

    @property
    def vocabulary(self) -> list[str]:
        """id -> word, padding and unknown first."""
        return ["<pad>", "<unk>", *self.words]

    def spec(self) -> ModalitySpec:
        self._need_fitted()
        return ModalitySpec("text", (self.max_tokens,), {
            "vocab_size": len(self.words) + 2, "pad_id": PAD_ID, "unk_id": UNK_ID,
            "max_tokens": self.max_tokens, "columns": list(self.columns)})

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_fitted()
        return {"words": self.words, "max_tokens": self.max_tokens}, {}

    def load_state(self, state: Any, arrays: Any) -> None:
        self.words = [str(w) for w in state["words"]]
        self.max_tokens = int(state["max_tokens"])
        self._vocab = {w: i + 2 for i, w in enumerate(self.words)}
        self.fitted = True


def _strings(s: pd.Series) -> list[str]:
    """Each cell as text, ``""`` where it is missing."""
    out = s.tolist()
    for i, v in enumerate(out):
        if not isinstance(v, str):  # the rare cell: missing, or a number in a text column
            out[i] = "" if is_missing(v) else str(v)
    return out


def _is_text(values: pd.Series, options: Any) -> bool:
    return len(values) > 0 and all(isinstance(v, str) for v in values.tolist())


register_kind(ColumnKind("text", TextBlock, _is_text, priority=90,
                         summary="other strings: words -> ids of a training vocabulary"))
