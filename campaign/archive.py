"""The sent archive: the exact bytes of every letter that went out, one file per letter.

A file is named by its recipient's draft and the SHA-256 of its bytes
(`sent/03-ministry-of-justice.4f2a9c0e1b7d3a55.eml`), so a resend of a changed letter keeps
the earlier one, and every SHA-256 in the log has its bytes (`sha256sum` verifies them).
A file is written, fsynced and renamed, and its folder fsynced, before the log names it.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from campaign.errors import CampaignError
from campaign.safefiles import ensure_folder, fsync_folder, read_file, write_file

MAX_LETTER_BYTES = 64 * 1024 * 1024  # far above the letter size limit: a file beyond is not ours


def archive_name(draft_filename: str, sha256: str) -> str:
    stem = draft_filename.removesuffix(".eml")
    return f"{stem}.{sha256[:16]}.eml"


class Archive:
    """The `sent/` folder beside the log; names in the log are relative to the log's folder."""

    def __init__(self, folder: Path, log_folder: Path) -> None:
        self.folder = folder
        try:
            self._shown = PurePosixPath(folder.relative_to(log_folder))
        except ValueError:
            self._shown = PurePosixPath(folder)
        self._pool: ThreadPoolExecutor | None = None
        self._renamed = 0
        self._synced = 0
        self._sync: asyncio.Future[None] | None = None

    def open(self) -> None:
        ensure_folder(self.folder)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="campaign-archive")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def path(self, draft_filename: str, sha256: str) -> Path:
        return self.folder / archive_name(draft_filename, sha256)

    async def keep(self, draft_filename: str, sha256: str, data: bytes) -> str:
        """Make the letter's bytes durable; return its name as the log records it."""
        path = self.path(draft_filename, sha256)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._write, path, data)
        self._renamed += 1
        target = self._renamed
        while self._synced < target:  # one folder fsync covers every rename before it
            if self._sync is None:
                self._sync = asyncio.ensure_future(self._sync_folder(loop))
            await asyncio.shield(self._sync)
        return str(self._shown / path.name)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if not path.is_file() or path.is_symlink():  # the same letter kept before: as it is
            write_file(path, data, durable=True)

    async def _sync_folder(self, loop: asyncio.AbstractEventLoop) -> None:
        covered = self._renamed
        try:
            await loop.run_in_executor(self._pool, fsync_folder, self.folder)
            self._synced = max(self._synced, covered)
        finally:
            self._sync = None

    def find(self, draft_filename: str, sha256: str) -> bytes | None:
        """The letter kept under this SHA-256, if it is there and still has those bytes."""
        path = self.path(draft_filename, sha256)
        if path.is_symlink() or not path.is_file():
            return None
        try:
            data = read_file(path, MAX_LETTER_BYTES)
        except CampaignError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None
