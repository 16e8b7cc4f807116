"""A private, writable view of a live database that copies only what it changes.

A rehearsal must change a snapshot of the live database; copying the whole file
first costs a gigabyte of fresh page cache for a rollback that rewrites a few
hundred pages. Here the snapshot is a sparse scratch file: a page the rehearsal
wrote is read from it, every other page from the live file, through SQLite's
own descriptor of a reader that holds the file still (rawcopy.still_file). The
live file is only ever read.

The view exists only while that reader's read transaction does: a page read
after it ends could be newer than the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import Iterator

import apsw

from . import rawcopy

_names = itertools.count()
_HEADER_MODES = slice(18, 20)  # file format write/read versions: 2 = WAL, 1 = rollback journal


@contextlib.contextmanager
def view(reader: apsw.Connection, scratch: Path) -> Iterator[str]:
    """A VFS name under which opening `scratch` gives the view of reader's database.

    The view is a rollback-journal database whatever the live file's mode:
    Python VFS files have no shared memory for a WAL, and the rehearsal's
    changes belong in its own journal, next to the scratch file.
    """
    extent, page_size = rawcopy.extent(reader)
    vfs = _Overlay(f"orchestra-overlay-{next(_names)}", reader, str(scratch), extent, page_size)
    try:
        yield vfs.vfs_name
    finally:
        vfs.unregister()


class _Overlay(apsw.VFS):
    def __init__(self, name: str, reader: apsw.Connection, scratch: str, extent: int,
                 page_size: int):
        self.vfs_name = name
        self._file_args = (reader, extent, page_size)
        self._scratch = os.path.realpath(scratch)
        super().__init__(name, "")

    def xOpen(self, name, flags):
        # Only the scratch database itself is a view; its journal, temp files and
        # any database a migration attaches are plain files.
        if (isinstance(name, apsw.URIFilename)
                and os.path.realpath(name.filename()) == self._scratch):
            return _ViewFile(name, flags, *self._file_args)
        return apsw.VFSFile("", name, flags)


class _ViewFile(apsw.VFSFile):
    """Pages below `extent` that were never written here are the live file's."""

    def __init__(self, name, flags, reader: apsw.Connection, extent: int, page_size: int):
        super().__init__("", name, flags)  # the sparse scratch file, through the default VFS
        self._reader, self._extent, self._page = reader, extent, page_size
        self._own: set[int] = set()  # pages written here

    def _live(self, page: int) -> bool:
        return page not in self._own and (page + 1) * self._page <= self._extent

    def xRead(self, amount: int, offset: int) -> bytes:
        first, last = offset // self._page, (offset + amount - 1) // self._page
        if first == last and self._live(first):  # the common case: one page nobody changed
            return self._read_live(offset, amount)
        parts = []
        for page in range(first, last + 1):
            start = max(offset, page * self._page)
            size = min(offset + amount, (page + 1) * self._page) - start
            if self._live(page):
                parts.append(self._read_live(start, size))
            else:
                parts.append(super().xRead(size, start).ljust(size, b"\0"))
        data = b"".join(parts)
        return data[:max(0, self.xFileSize() - offset)]  # short past the end, as SQLite expects

    def _read_live(self, offset: int, amount: int) -> bytes:
        whole, data = self._reader.read("main", 0, offset, amount)
        if not whole:
            raise apsw.IOError(f"live file shorter than its {self._extent} bytes at {offset}")
        if offset < _HEADER_MODES.stop and offset + amount > _HEADER_MODES.start:
            header = bytearray(data)
            for at in range(_HEADER_MODES.start, _HEADER_MODES.stop):
                if offset <= at < offset + amount:
                    header[at - offset] = 1
            data = bytes(header)
        return data

    def xWrite(self, data: bytes, offset: int) -> None:
        first, last = offset // self._page, (offset + len(data) - 1) // self._page
        for page in (first, last):
            if offset > page * self._page or offset + len(data) < (page + 1) * self._page:
                self._copy_up(page)
        super().xWrite(data, offset)
        self._own.update(range(first, last + 1))

    def xTruncate(self, size: int) -> None:
        if size % self._page:
            self._copy_up(size // self._page)
        super().xTruncate(size)
        self._extent = min(self._extent, size // self._page * self._page)

    def _copy_up(self, page: int) -> None:
        """A page changed in part keeps the rest of its bytes."""
        if self._live(page):
            super().xWrite(self._read_live(page * self._page, self._page), page * self._page)
            self._own.add(page)

    def xDeviceCharacteristics(self) -> int:
        # F2FS's batch-atomic writes would let SQLite roll a commit back inside the
        # file system, behind _own's back: keep SQLite on its journal.
        return super().xDeviceCharacteristics() & ~apsw.SQLITE_IOCAP_BATCH_ATOMIC

    def xFileSize(self) -> int:
        return max(self._extent, super().xFileSize())
