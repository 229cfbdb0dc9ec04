"""The one convention of every JSON record mmfuse writes: its version key, and how it is checked.

Shape legend: none (no tensors here).

The rule:

- A record that is read back (a file, a line of a log, a JSON document inside a
  safetensors header) carries its kind and version under one key, ``"format"``:
  ``"format": "mmfuse.<record>/<n>"`` (``mmfuse.bundle/1``, ``mmfuse.run_record/3``). The
  value says what the document is, so reading the wrong file says what it is instead of
  failing on a missing field. :func:`stamp` writes it; :func:`check_format` reads it.
- A record nested in another one carries no version of its own: the enclosing
  document's version covers it (a :class:`~mmfuse.experiment.ExperimentSpec` inside a
  run record, a :class:`~mmfuse.data.TableSource` inside a preprocessor document).
- Every record type has ``to_json(self) -> dict[str, Any]`` (JSON-able: ``json.dumps``
  takes it as it is; a caller that needs text calls ``json.dumps``) and
  ``from_json(cls, data)``; a method that returns anything else (a document and its
  arrays) has a name that says so.
- Versions written by an earlier mmfuse under the keys used before this rule
  (``"schema": n``, ``"schema_version": n``, ``"version": n``) are read as the same
  version (``legacy=`` in :func:`check_format`), and a document that carried no version
  at all as its first one (``unversioned=``), so files a user keeps still load.
- A version this mmfuse cannot read raises :class:`RecordVersionError` naming the
  record, the expected and the found version; a newer one says to upgrade mmfuse.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mmfuse.errors import ConfigError, MmfuseError

__all__ = ["FORMAT_KEY", "LEGACY_KEYS", "RecordVersionError", "check_format", "format_tag", "parse_format", "stamp"]

#: the one key of a record's kind and version
FORMAT_KEY = "format"
#: the keys versions were written under before :data:`FORMAT_KEY`, read as the same version
LEGACY_KEYS = ("schema", "schema_version", "version")


class RecordVersionError(ConfigError):
    """A record of another kind, or of a version this mmfuse does not read.

    Attributes:
        record: the record's name (``run_record``).
        expected: the versions this mmfuse reads.
        found: the version found (``None``: none, or another kind of document).
    """

    def __init__(self, message: str, *, record: str, expected: Collection[int], found: int | None) -> None:
        super().__init__(message)
        self.record, self.expected, self.found = record, tuple(expected), found


def format_tag(record: str, version: int) -> str:
    """``"mmfuse.<record>/<version>"``."""
    return f"mmfuse.{record}/{version}"


def stamp(record: str, version: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with ``"format": "mmfuse.<record>/<version>"`` first (a key of that name in
    ``body`` is replaced)."""
    return {FORMAT_KEY: format_tag(record, version), **{k: v for k, v in body.items() if k != FORMAT_KEY}}


def parse_format(tag: Any) -> tuple[str, int] | None:
    """``"mmfuse.<record>/<n>"`` as ``(record, n)``; ``None`` for anything else."""
    if not isinstance(tag, str) or not tag.startswith("mmfuse."):
        return None
    name, sep, version = tag[7:].rpartition("/")
    return (name, int(version)) if sep and name and version.isdigit() else None


def check_format(
    data: Any,
    record: str,
    versions: int | Collection[int],
    *,
    legacy: str | None = None,
    unversioned: int | None = None,
    where: str | None = None,
    error: type[MmfuseError] | None = None,
) -> int:
    """The version of record ``data``, checked to be one of ``versions``; raises otherwise.

    Args:
        data: the decoded JSON document.
        record: its name, as :func:`format_tag` writes it.
        versions: the version(s) this mmfuse reads.
        legacy: the key an earlier mmfuse wrote the version under (one of
            :data:`LEGACY_KEYS`), read where ``"format"`` is absent.
        unversioned: the version of a document with neither key (one an earlier mmfuse
            wrote before the record had a version); ``None``: such a document raises.
        where: what to name in the message (a file path; default: the record's name).
        error: the error class (default :class:`RecordVersionError`); a class other
            than that is raised with the same message.

    Raises:
        RecordVersionError: another kind of document, no version, or a version not in
            ``versions`` (newer: says to upgrade mmfuse; older: says it was written by an
            earlier mmfuse).
    """
    wanted = (versions,) if isinstance(versions, int) else tuple(sorted(versions))
    what = where or record
    expected = " or ".join(format_tag(record, v) for v in wanted)

    def fail(found: int | None, why: str) -> MmfuseError:
        message = f"{what}: expected a record of format {expected}, {why}"
        if error is None or issubclass(RecordVersionError, error):
            return RecordVersionError(message, record=record, expected=wanted, found=found)
        return error(message)

    if not isinstance(data, Mapping):
        raise fail(None, f"got {type(data).__name__}")
    found: int | None = None
    if FORMAT_KEY in data:
        parsed = parse_format(data[FORMAT_KEY])
        if parsed is None or parsed[0] != record:
            raise fail(None, f"got format {data[FORMAT_KEY]!r} (another kind of file)")
        found = parsed[1]
    elif legacy is not None and legacy in data:
        value = data[legacy]
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(None, f"got {legacy} {value!r}")
        found = value
    elif unversioned is not None:
        found = unversioned
    else:
        raise fail(None, f"got no {FORMAT_KEY!r} key" + (f" (nor {legacy!r})" if legacy else ""))
    if found in wanted:
        return found
    if found > max(wanted):
        raise fail(found, f"got version {found}, written by a newer mmfuse: upgrade mmfuse to read it")
    raise fail(found, f"got version {found}, written by an earlier mmfuse that this one does not read")
