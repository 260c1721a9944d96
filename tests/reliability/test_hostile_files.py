"""Hostile source archives (zip slip): a flights.csv.zip whose member would be written, or read, outside the
staging folder is refused by name before anything is read or written."""

import os
import stat
import zipfile
from pathlib import Path

import pytest

from ml.datasets.flights import SourceFileError, staged_csv

CSV = b"year,month,day\n2013,1,1\n"


def tree(root: Path) -> list[tuple[str, str | bytes]]:
    """Every entry under root (links not followed): its relative path and kind, with a file's content."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
            out.append((str(p.relative_to(root)), kind))
    return sorted(out)


def archive_with(tmp_path: Path, name: str, data: bytes = CSV, symlink: bool = False) -> Path:
    archive = tmp_path / "drop" / "flights.csv.zip"
    archive.parent.mkdir(exist_ok=True)
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: external_attr holds the mode
    info.external_attr = ((stat.S_IFLNK | 0o777) if symlink else (stat.S_IFREG | 0o644)) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, data)
    assert zipfile.ZipFile(archive).infolist()[0].filename == name  # stored as is
    return archive


def refused(archive: Path, name: str, why: str) -> str:
    return f"source file {archive}: member {name!r} {why}; it was refused, nothing was read or written"


@pytest.mark.parametrize(
    "name, why",
    [
        ("../../x.csv", "has a '..' component in its path"),  # staging/x.csv: outside its own folder
        ("../../../x.csv", "has a '..' component in its path"),  # tmp_path/x.csv: outside the staging folder
        ("data/../../../../x.csv", "has a '..' component in its path"),
        ("..\\..\\..\\x.csv", "has a '..' component in its path"),
        ("{tmp}/outside/abs.csv", "has an absolute path"),
        ("/tmp/abs.csv", "has an absolute path"),
        ("C:/abs.csv", "has an absolute path"),
    ],
)
def test_a_member_that_escapes_the_staging_folder_is_refused(tmp_path, name, why):
    name = name.format(tmp=tmp_path)
    archive = archive_with(tmp_path, name)
    staging = tmp_path / "staging"
    before, tmp_abs = tree(tmp_path), os.path.lexists("/tmp/abs.csv")

    with pytest.raises(SourceFileError) as raised:
        staged_csv(archive, str(staging))

    assert str(raised.value) == refused(archive, name, why)
    assert tree(tmp_path) == before  # nothing written, not even the staging folder
    assert not staging.exists()
    assert os.path.lexists("/tmp/abs.csv") == tmp_abs


def test_a_symlink_member_is_refused(tmp_path):
    archive = archive_with(tmp_path, "flights.csv", data=b"/etc/passwd", symlink=True)
    before = tree(tmp_path)
    with pytest.raises(SourceFileError) as raised:
        staged_csv(archive, str(tmp_path / "staging"))
    assert str(raised.value) == refused(archive, "flights.csv", "is a symbolic link")
    assert tree(tmp_path) == before


def test_an_existing_file_outside_is_never_taken_for_the_staged_copy(tmp_path):
    """A same-size file where a '..' member points: the old check (exists, same size) would have returned it."""
    outside = tmp_path / "x.csv"
    outside.write_bytes(b"S" * len(CSV))  # e.g. a secret, of the size the archive announces
    archive = archive_with(tmp_path, "../../../x.csv")
    before = tree(tmp_path)
    with pytest.raises(SourceFileError) as raised:
        staged_csv(archive, str(tmp_path / "staging"))
    assert str(raised.value) == refused(archive, "../../../x.csv", "has a '..' component in its path")
    assert tree(tmp_path) == before and outside.read_bytes() == b"S" * len(CSV)


def test_a_link_planted_in_the_staging_folder_is_not_followed(tmp_path):
    archive = archive_with(tmp_path, "flights.csv")
    info = zipfile.ZipFile(archive).infolist()[0]
    folder = tmp_path / "staging" / "flights" / f"{archive.stat().st_size}-{info.CRC:08x}"
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"S" * len(CSV))
    (folder / "flights.csv").symlink_to(secret)  # where the staged copy would go, to a same-size file outside
    before = tree(tmp_path)
    with pytest.raises(SourceFileError) as raised:
        staged_csv(archive, str(tmp_path / "staging"))
    assert str(raised.value) == refused(archive, "flights.csv", f"would be written outside the staging folder {folder}")
    assert tree(tmp_path) == before and secret.read_bytes() == b"S" * len(CSV)


def test_a_plain_member_is_staged_once_in_its_own_folder(tmp_path):
    archive = archive_with(tmp_path, "flights.csv")
    info = zipfile.ZipFile(archive).infolist()[0]
    staged = staged_csv(archive, str(tmp_path / "staging"))
    assert staged == tmp_path / "staging" / "flights" / f"{archive.stat().st_size}-{info.CRC:08x}" / "flights.csv"
    assert staged.read_bytes() == CSV
    mtime = staged.stat().st_mtime_ns
    assert staged_csv(archive, str(tmp_path / "staging")) == staged and staged.stat().st_mtime_ns == mtime  # cached
    assert [p for p, _ in tree(tmp_path / "staging")] == [
        "flights",
        f"flights/{staged.parent.name}",
        f"flights/{staged.parent.name}/flights.csv",
    ]
