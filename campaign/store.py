"""A spool for prepared messages: their bytes on disk, so memory does not grow with the campaign."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


class MessageStore:
    """Append-only bytes in temporary files (segments), read back by segment, offset and size.

    Segment 0 is the store's own anonymous file; processes that build part of a campaign
    write files of their own, which the store adopts as further segments without copying.
    """

    def __init__(self, directory: str | None = None, *, path: Path | None = None) -> None:
        # Closed by close() / __exit__: the store outlives any one `with` block.
        own: IO[bytes] = (
            open(path, "w+b")  # noqa: SIM115
            if path is not None
            else tempfile.TemporaryFile(prefix="campaign-spool-", dir=directory)  # noqa: SIM115
        )
        self._segments: list[IO[bytes]] = [own]
        self._end = 0
        self._dirty = False

    def put(self, data: bytes) -> int:
        """Store `data` in segment 0; return the offset to read it back with."""
        offset = self._end
        self._segments[0].write(data)
        self._end += len(data)
        self._dirty = True
        return offset

    def get(self, offset: int, size: int, segment: int = 0) -> bytes:
        if self._dirty:
            self._segments[0].flush()
            self._dirty = False
        return os.pread(self._segments[segment].fileno(), size, offset)

    @property
    def adopt_next(self) -> int:
        """The number the next adopted segment will have."""
        return len(self._segments)

    def adopt(self, path: Path) -> int:
        """Take a file another process filled as the next segment; return its number."""
        self._segments.append(open(path, "rb"))  # noqa: SIM115 - closed by close()
        return len(self._segments) - 1

    def close(self) -> None:
        for handle in self._segments:
            handle.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
