"""A spool for prepared messages: their bytes on disk, so memory does not grow with the campaign."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO


class MessageStore:
    """Append-only bytes in an anonymous temporary file, read back by offset."""

    def __init__(self, directory: str | None = None, *, path: Path | None = None) -> None:
        # Closed by close() / __exit__: the store outlives any one `with` block.
        self._file: IO[bytes] = (
            open(path, "w+b")  # noqa: SIM115
            if path is not None
            else tempfile.TemporaryFile(prefix="campaign-spool-", dir=directory)  # noqa: SIM115
        )
        self._end = 0
        self._dirty = False

    def append_file(self, path: Path) -> int:
        """Append another store's file (built by a worker process); return its base offset."""
        base = self._end
        with open(path, "rb") as source:
            shutil.copyfileobj(source, self._file, 1 << 20)
            self._end += source.tell()
        self._dirty = True
        return base

    def flush_and_close(self) -> None:
        self._file.flush()
        self._file.close()

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
