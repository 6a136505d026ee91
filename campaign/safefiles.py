"""Files campaign writes: never through a symlink, private (0600), atomic, durable on request."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from campaign.errors import CampaignError

PRIVATE = 0o600
FOLDER = 0o700
TEMPORARY_PREFIX = ".campaign-tmp-"
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def refuse_symlink(path: Path | str) -> None:
    """Refuse a symlink where campaign would write, lock or read its own records."""
    if os.path.islink(path):
        raise CampaignError(
            "is a symbolic link; campaign never writes through one",
            path=path,
            hint="remove the link, or point --outbox / --log at a real folder",
        )


def ensure_folder(path: Path) -> Path:
    """Create `path` (and its parents) if needed; refuse it if it is a symlink or a file."""
    refuse_symlink(path)
    try:
        path.mkdir(mode=FOLDER, parents=True, exist_ok=True)
    except FileExistsError:
        raise CampaignError("is not a folder", path=path) from None
    except OSError as err:
        raise CampaignError(f"cannot create the folder: {err.strerror}", path=path) from None
    refuse_symlink(path)  # a link made in the meantime
    return path


def write_file(path: Path | str, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one.

    The temporary file is created beside it with O_EXCL | O_NOFOLLOW, mode 0600; the
    rename replaces whatever is at `path` but a symlink, which is refused.
    """
    refuse_symlink(path)
    temporary = os.path.join(
        os.path.dirname(path), f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    try:
        descriptor = os.open(temporary, flags, PRIVATE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def open_private(path: Path, flags: int) -> int:
    """An existing or new private file, opened without following a symlink."""
    try:
        return os.open(path, flags | os.O_CREAT | _NOFOLLOW, PRIVATE)
    except OSError as err:
        if path.is_symlink():
            refuse_symlink(path)
        raise CampaignError(f"cannot open the file: {err.strerror}", path=path) from None


def read_file(path: Path | str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them, never through a symlink."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as err:
        if os.path.islink(path):
            refuse_symlink(path)
        raise CampaignError(f"cannot read the file: {err.strerror}", path=path) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise CampaignError("is not a regular file", path=path)
        if info.st_size > limit:
            raise CampaignError(
                f"is {info.st_size:,} bytes, more than the {limit:,} allowed", path=path
            )
        chunks = []
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def fsync_folder(path: Path) -> None:
    """Make the names in `path` (a rename, a new file) durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporaries(*folders: Path) -> list[str]:
    """Remove what a crashed run left half-written (call only while holding the log's lock)."""
    removed = []
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            if path.name.startswith(TEMPORARY_PREFIX) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path.name)
    return removed


def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2), which Python's os module does not offer; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_SYNCFS = _syncfs()


def write_files_durably(folder: Path, files: Sequence[tuple[Path | str, bytes]]) -> None:
    """Write several files into `folder` so that all of them, names included, are on disk.

    Each is written to a temporary file and renamed; then the whole file system is synced
    once (syncfs), which costs far less than an fsync per file. Where there is no syncfs,
    each file and the folder are fsynced.
    """
    if _SYNCFS is None:
        for path, data in files:
            write_file(path, data, durable=True)
        fsync_folder(folder)
        return
    for path, data in files:
        write_file(path, data)
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        if _SYNCFS(descriptor) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(folder))
    finally:
        os.close(descriptor)
