"""The sent archive: the exact bytes of every letter that went out, one file per letter.

A file is named by its recipient's draft and the SHA-256 of its bytes
(`sent/03-ministry-of-justice.4f2a9c0e1b7d3a55.eml`), so a resend of a changed letter keeps
the earlier one, and every SHA-256 in the log has its bytes (`sha256sum` verifies them).
A file is written and renamed, and the file system synced, before the log names it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from campaign.errors import CampaignError
from campaign.safefiles import ensure_folder, read_file, write_files_durably

MAX_LETTER_BYTES = 64 * 1024 * 1024  # far above the letter size limit: a file beyond is not ours


def archive_name(draft_filename: str, sha256: str) -> str:
    stem = draft_filename.removesuffix(".eml")
    return f"{stem}.{sha256[:16]}.eml"


class Archive:
    """The `sent/` folder beside the log; names in the log are relative to the log's folder."""

    def __init__(self, folder: Path, log_folder: Path) -> None:
        self.folder = folder
        try:
            shown = PurePosixPath(folder.relative_to(log_folder))
        except ValueError:
            shown = PurePosixPath(folder)
        # Each letter's names are plain strings: a Path per letter costs time, and pathlib
        # interns every name it parses, which grows with the campaign.
        self._folder = str(folder)
        self._shown = "" if shown == PurePosixPath(".") else str(shown)
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flushing: asyncio.Future[None] | None = None

    def open(self) -> None:
        ensure_folder(self.folder)
        # One thread writes whole batches: a thread per letter would hand the interpreter
        # lock to and fro for every file and slow the sending down more than the disk does.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="campaign-archive")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def path(self, draft_filename: str, sha256: str) -> str:
        return os.path.join(self._folder, archive_name(draft_filename, sha256))

    def _name_in_log(self, draft_filename: str, sha256: str) -> str:
        return posixpath.join(self._shown, archive_name(draft_filename, sha256))

    async def keep(self, draft_filename: str, sha256: str, data: bytes) -> str:
        """Make the letter's bytes durable; return its name as the log records it.

        Letters kept while a batch is being written go together in the next one (group
        commit): each file written and fsynced, then the folder fsynced once.
        """
        path = self.path(draft_filename, sha256)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((path, data, done))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())
        await done
        return self._name_in_log(draft_filename, sha256)

    def keep_now(self, draft_filename: str, sha256: str, data: bytes) -> str:
        """`keep` at once, outside the event loop's batches (a run being interrupted)."""
        path = self.path(draft_filename, sha256)
        self._write([(path, data)])
        return self._name_in_log(draft_filename, sha256)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await loop.run_in_executor(self._pool, self._write_batch, batch)
                except Exception as err:
                    # This batch fails; letters queued meanwhile get a batch of their own.
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(err)
                    continue
                except BaseException:
                    batch, self._waiting = batch + self._waiting, []
                    for _, _, done in batch:
                        done.cancel()
                    raise
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushing = None

    def _write_batch(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        self._write([(path, data) for path, data, _ in batch])

    def _write(self, files: list[tuple[str, bytes]]) -> None:
        """The files not kept whole already, written and made durable together."""
        write_files_durably(
            self.folder, [(path, data) for path, data in files if not _holds(path, data)]
        )

    def find(self, draft_filename: str, sha256: str) -> bytes | None:
        """The letter kept under this SHA-256, if it is there and still has those bytes."""
        path = self.path(draft_filename, sha256)
        if not _is_plain_file(path):
            return None
        try:
            data = read_file(path, MAX_LETTER_BYTES)
        except CampaignError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _is_plain_file(path: str) -> bool:
    """A regular file, not a symlink (one lstat: usually there is nothing there yet)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _holds(path: str, data: bytes) -> bool:
    """Whether the same letter is kept at `path` already, whole (a crash can leave it empty)."""
    if not _is_plain_file(path):
        return False
    try:
        return read_file(path, len(data)) == data
    except CampaignError:
        return False
