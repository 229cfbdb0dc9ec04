"""The one error base of mmfuse, and its kinds.

Every error that bad *input* causes (a tensor of the wrong shape, a missing file, a
setting out of range, a damaged checkpoint) is an :class:`MmfuseError`, raised where
the input enters, naming the thing (modality, file, setting), the expected and the
actual value. Anything else that escapes mmfuse is a bug and keeps its traceback: the
command line prints ``error: <message>`` (exit code 2) for an ``MmfuseError`` only.

``MmfuseError`` is a ``ValueError``, so code written against plain ``ValueError``
keeps working.
"""

from __future__ import annotations

import errno

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "FusionError",
    "MmfuseError",
    "TrainingError",
    "check_fraction",
]


class MmfuseError(ValueError):
    """Base of every error mmfuse raises for bad input."""


class FusionError(MmfuseError):
    """Bad input to a fusion or its options: raised where inputs enter, with expected and actual values."""


class DataError(MmfuseError):
    """A dataset cannot be loaded: missing or corrupt file, bad column, bad option. Names the file."""


class ConfigError(MmfuseError):
    """A setting out of range, of the wrong type, or unknown. Names the setting."""


class CheckpointError(MmfuseError):
    """A checkpoint cannot be written or read: names the file and what is wrong."""


class TrainingError(MmfuseError):
    """A fit that cannot give a valid model (e.g. its loss became NaN or infinite):
    names the epoch and the value; nothing is saved as a finished run."""


class DiskFullError(MmfuseError, OSError):
    """The device of ``folder`` ran out of space (or quota) while mmfuse wrote there.

    Raised by every writer that can leave something behind (:func:`mmfuse.io.atomic_write`,
    the bench's run log, a saved model), after removing what it had half written, so a
    rerun of the same command continues from the files that are complete. It is an
    ``OSError`` too (``errno`` ``ENOSPC``), so code that tolerates an unwritable folder
    (a cache) keeps tolerating a full one.
    """

    def __init__(self, folder: object, then: str = "run the same command again") -> None:
        self.folder, self.then = str(folder), then
        super().__init__(f"no space left on the device of {self.folder!r}: nothing half-written was kept; "
                         f"free some space there and {then}")
        self.errno = errno.ENOSPC

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str, str]]:  # the bench's workers pickle it
        return type(self), (self.folder, self.then)


def check_fraction(
    name: str,
    value: object,
    *,
    error: type[MmfuseError] = ConfigError,
    low_open: bool = False,
) -> float:
    """A real number in ``[0, 1)`` (``(0, 1)`` with ``low_open``), else ``error`` naming ``name``.

    The one check of rates and fractions (dropout, modality dropout, split fractions).
    """
    interval = "(0, 1)" if low_open else "[0, 1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (0.0 < v if low_open else 0.0 <= v) and v < 1.0
    if not ok:
        raise error(f"{name}: expected a float in {interval}, got {value!r}")
    return float(value)  # type: ignore[arg-type]
