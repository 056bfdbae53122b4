"""TarWriter: the same bytes as tarfile's GNU format, for every kind of member name."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from terrascribe.tar_writer import TarWriter, member_header

NAMES = [
    "a.txt",
    "osm_w100845_region.jpg",
    "k" * 95 + ".json",  # exactly 100 bytes: the longest name without a long-name record
    "k" * 96 + ".json",  # 101 bytes: tarfile adds a GNU long-name record
    "k" * 200 + ".json",
    "caf\u00e9.txt",  # not ASCII
]
SIZES = [0, 1, 511, 512, 513, 50_000]


def _tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_header_equals_tarfile(name: str, size: int) -> None:
    expected = _tarfile_bytes([(name, b"x" * size)])
    header = member_header(name, size)
    assert expected.startswith(header)


def test_archive_equals_tarfile_and_reads_back(tmp_path: Path) -> None:
    members = [
        (n, bytes([i % 251]) * s) for i, (n, s) in enumerate(zip(NAMES * 2, SIZES * 2, strict=True))
    ]
    with TarWriter(tmp_path / "a.tar") as tar:
        for name, data in members:
            tar.add(name, data)
    written = (tmp_path / "a.tar").read_bytes()
    assert written == _tarfile_bytes(members)
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == members


def test_empty_archive_equals_tarfile(tmp_path: Path) -> None:
    TarWriter(tmp_path / "e.tar").close()
    assert (tmp_path / "e.tar").read_bytes() == _tarfile_bytes([])


def test_error_inside_leaves_the_archive_unended(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), TarWriter(tmp_path / "x.tar") as tar:
        tar.add("a.txt", b"abc")
        raise RuntimeError("stream failed")
    data = (tmp_path / "x.tar").read_bytes()
    assert len(data) == 1024  # one header and one data block, no end-of-archive blocks
