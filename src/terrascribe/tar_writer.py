"""Append-only tar writing for shards: regular files with fixed metadata, in GNU tar format.

A shard holds three small members per sample, so building every header through
:class:`tarfile.TarInfo` costs more than writing the data. :class:`TarWriter` takes the header
that ``tarfile`` makes for an empty member once, then patches in each member's name, size and
checksum: the archive is byte for byte what :meth:`tarfile.TarFile.addfile` writes with the same
metadata (mode 0644, uid/gid 0, mtime 0, no user names). Names over 100 bytes, or not ASCII, take
``tarfile``'s own path (GNU long-name records).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 20 blocks: tarfile pads the archive to whole records
_NAME_FIELD = 100
_SIZE_FIELD = slice(124, 136)
_CHECKSUM_FIELD = slice(148, 156)
_LARGEST_OCTAL_SIZE = 8**11 - 1  # bigger sizes need base-256 digits: left to tarfile


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tarfile_header(name: str, size: int) -> bytes:
    return _member_info(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


_TEMPLATE = _tarfile_header("", 0)
# The checksum is the byte sum of the header with its own field read as eight spaces.
_TEMPLATE_SUM = sum(_TEMPLATE) - sum(_TEMPLATE[_CHECKSUM_FIELD]) + 8 * ord(" ")
_TEMPLATE_SIZE_SUM = sum(_TEMPLATE[_SIZE_FIELD])


def member_header(name: str, size: int) -> bytes:
    """The header block(s) ``tarfile`` writes for a regular file ``name`` of ``size`` bytes."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > _NAME_FIELD or not raw.isascii() or size > _LARGEST_OCTAL_SIZE:
        return _tarfile_header(name, size)
    size_field = b"%011o\0" % size
    checksum = _TEMPLATE_SUM + sum(raw) - _TEMPLATE_SIZE_SUM + sum(size_field)
    return b"".join(
        (
            raw,
            _TEMPLATE[len(raw) : _SIZE_FIELD.start],
            size_field,
            _TEMPLATE[_SIZE_FIELD.stop : _CHECKSUM_FIELD.start],
            b"%06o\0 " % checksum,
            _TEMPLATE[_CHECKSUM_FIELD.stop :],
        )
    )


class TarWriter:
    """Writes a tar archive of regular files to ``path`` (closing ends the archive).

    Args:
        path: File to create (truncated if it exists).
    """

    def __init__(self, path: str | Path) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._offset = 0

    def add(self, name: str, data: bytes) -> None:
        """Append one member holding ``data``."""
        header = member_header(name, len(data))
        padding = -len(data) % _BLOCK
        self._file.write(header)
        self._file.write(data)
        if padding:
            self._file.write(b"\0" * padding)
        self._offset += len(header) + len(data) + padding

    def close(self) -> None:
        """End the archive as ``tarfile`` does (two zero blocks, padded to a whole record)."""
        if self._file.closed:
            return
        end = 2 * _BLOCK
        end += -(self._offset + end) % _RECORD
        self._file.write(b"\0" * end)
        self._file.close()

    def abort(self) -> None:
        """Close the file without ending the archive (the caller discards it)."""
        self._file.close()

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
