"""The column kinds of a table, one module each, registered by name (see :mod:`._base`)."""

from mmfuse.data.table.kinds import audio, embedding, image, tabular, text  # noqa: F401  (registers)
from mmfuse.data.table.kinds._base import (
    BadFile,
    Block,
    ColumnKind,
    Encoded,
    Raw,
    ReadContext,
    block_class,
    column_kind,
    is_blank,
    is_missing,
    list_kinds,
    register_kind,
)

__all__ = ["BadFile", "Block", "ColumnKind", "Encoded", "Raw", "ReadContext", "block_class", "column_kind",
           "is_blank", "is_missing", "list_kinds", "register_kind"]
