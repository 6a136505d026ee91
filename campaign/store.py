"""A spool for prepared messages: their bytes on disk, so memory does not grow with the campaign."""

from __future__ import annotations

import os
import tempfile
from typing import IO


class MessageStore:
    """Append-only bytes in an anonymous temporary file, read back by offset and size."""

    def __init__(self, directory: str | None = None) -> None:
        # Closed by close() / __exit__: the store outlives any one `with` block.
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="campaign-spool-", dir=directory)  # noqa: SIM115
        self._end = 0
        self._dirty = False

    def put(self, data: bytes) -> int:
        """Store `data`; return the offset to read it back with."""
        offset = self._end
        self._file.write(data)
        self._end += len(data)
        self._dirty = True
        return offset

    def get(self, offset: int, size: int) -> bytes:
        if self._dirty:
            self._file.flush()
            self._dirty = False
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
