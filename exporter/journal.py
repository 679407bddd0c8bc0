"""The store's redo journal: every committed batch appended, fsync'd, then replayed after a crash.

Files ``<state_dir>/journal.<first seq, 20 digits>``, each a header then frames::

    header  b"LTXJ\\x01" | marshal version (1 byte) | u32 length | JSON list of record fields
    frame   u32 payload length | u32 CRC-32 of payload | u64 seq | payload (marshal)

One writer appends frames with strictly increasing ``seq``. A frame is whole or it is not a
frame: a read stops at the first frame of a file that is short or fails its CRC (a write
cut by a crash; its batch was never acknowledged) and goes on with the next file. A write
that fails is cut back off the file; if even that fails, the file is abandoned and the next
frame starts a new one, so no frame ever follows a torn one in a file.

The journal is short-lived: the store checkpoints what it holds into SQLite about once a
second and then :meth:`Journal.rotate` starts a new file and deletes the old ones. So
``marshal`` (fast, exact for bytes, str with lone surrogates, ints of any size) is safe
here: its format is versioned in the header, and a journal is read by the same program
that wrote it, or by the next version after a crash.
"""

from __future__ import annotations

import json
import marshal
import os
import pathlib
import struct
import zlib
from collections.abc import Iterator

PREFIX = "journal."
_MAGIC = b"LTXJ\x01"
_HEADER_LEN = struct.Struct("<I")
_FRAME = struct.Struct("<IIQ")
_MAX_FRAME = 1 << 31  # a frame length beyond this is garbage, not a frame


class JournalError(Exception):
    """The journal cannot be read or written; the message names the file."""


class Journal:
    """Append-only frames in rotating files under ``directory`` (see the module docstring)."""

    def __init__(self, directory: pathlib.Path, record_fields: tuple[str, ...], *,
                 sync: bool) -> None:
        self.directory = directory
        self._fields = record_fields
        self._sync = sync
        self._fd: int | None = None  # the file being appended to
        self._path: pathlib.Path | None = None
        self._size = 0  # bytes of whole frames (and header) in the current file
        self.bytes = 0  # bytes of frames in every file not yet deleted

    # -- reading -------------------------------------------------------------------------

    def files(self) -> list[pathlib.Path]:
        """The journal files, oldest first."""
        found = []
        for path in self.directory.glob(PREFIX + "*"):
            suffix = path.name[len(PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return [path for _, path in sorted(found)]

    def read(self) -> Iterator[tuple[int, tuple[str, ...], object]]:
        """Every whole frame of every file: (seq, record fields of its file, payload)."""
        total = 0
        for path in self.files():
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise JournalError(f"{path}: cannot read the journal: {exc}") from exc
            total += len(data)
            fields, offset = self._read_header(path, data)
            if fields is None:
                continue  # created, cut before its header was whole: holds no frame
            while offset + _FRAME.size <= len(data):
                length, crc, seq = _FRAME.unpack_from(data, offset)
                start = offset + _FRAME.size
                payload = data[start:start + length]
                if length > _MAX_FRAME or len(payload) != length or zlib.crc32(payload) != crc:
                    break  # a torn write: nothing after it in this file was acknowledged
                try:
                    value = marshal.loads(payload)
                except (EOFError, ValueError, TypeError) as exc:
                    raise JournalError(f"{path}: frame {seq} does not decode: {exc}") from exc
                yield seq, fields, value
                offset = start + length
        self.bytes = total

    @staticmethod
    def _read_header(path: pathlib.Path, data: bytes) -> tuple[tuple[str, ...] | None, int]:
        head = len(_MAGIC) + 1 + _HEADER_LEN.size
        if len(data) < head:
            return None, 0
        if data[:len(_MAGIC)] != _MAGIC:
            raise JournalError(f"{path}: not a journal of this program")
        (length,) = _HEADER_LEN.unpack_from(data, len(_MAGIC) + 1)
        if len(data) < head + length:
            return None, 0
        try:
            fields = tuple(json.loads(data[head:head + length]))
        except ValueError as exc:
            raise JournalError(f"{path}: unreadable journal header: {exc}") from exc
        return fields, head + length

    # -- writing -------------------------------------------------------------------------

    def start(self, first_seq: int) -> None:
        """Open a new file for frames from ``first_seq`` on; older files stay until
        :meth:`delete_before_current`."""
        self._close_current()
        path = self.directory / f"{PREFIX}{first_seq:020d}"
        fields = json.dumps(list(self._fields)).encode()
        header = _MAGIC + bytes([marshal.version]) + _HEADER_LEN.pack(len(fields)) + fields
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                         0o644)
        except OSError as exc:
            raise JournalError(f"{path}: cannot create the journal: {exc}") from exc
        try:
            _write_all(fd, header)
            if self._sync:
                os.fdatasync(fd)
                _fsync_dir(self.directory)  # the new name survives a power loss
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"{path}: cannot write the journal: {exc}") from exc
        self._fd, self._path, self._size = fd, path, len(header)
        self.bytes += len(header)

    def append(self, seq: int, value: object) -> None:
        """Append one frame, durable on return when the journal syncs (else in the page
        cache: it survives the process, not the machine). Raises :class:`JournalError`
        (or ValueError for a value marshal cannot encode) and leaves no part of the frame."""
        if self._fd is None:
            raise JournalError(f"{self.directory}: no journal file open")
        payload = marshal.dumps(value)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload), seq) + payload
        try:
            _write_all(self._fd, frame)
            if self._sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back()
            raise JournalError(f"{self._path}: cannot append to the journal: {exc}") from exc
        self._size += len(frame)
        self.bytes += len(frame)

    def _cut_back(self) -> None:
        """Remove a partly written frame; abandon the file if that fails too."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            # the next start() opens a new file; nothing is appended after the torn frame
            self._close_current()

    def delete_before_current(self) -> None:
        """Delete every file but the one being appended to (after a checkpoint)."""
        kept = 0
        for path in self.files():
            if path == self._path:
                kept = self._size
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"{path}: cannot delete an old journal: {exc}") from exc
        self.bytes = kept

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _close_current(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        self._close_current()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
