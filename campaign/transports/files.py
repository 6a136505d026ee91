"""`.eml` drafts in a folder, each written atomically (temporary file, then rename)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from campaign.models import Draft
from campaign.transports.base import BeforeData, Delivery, Reply


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    # Plain os calls: `send` archives every message it sends, and this is on its hot path.
    final = os.fspath(path)
    folder, name = os.path.split(final)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FileTransport:
    """Writes each message as `<folder>/<draft.filename>`."""

    def __init__(self, folder: Path, *, durable: bool = True) -> None:
        self.folder = folder
        self.name = f"files:{folder}"
        self.durable = durable
        self.replaced: list[str] = []
        self.written: list[Path] = []

    async def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        if before_data is not None:
            await before_data()
        path = self.folder / draft.filename
        if path.exists():
            self.replaced.append(draft.filename)
        write_atomically(path, data, durable=self.durable)
        self.written.append(path)
        reply = Reply(250, f"written to {path}")
        return Delivery({address: reply for address in addresses})

    async def close(self) -> None:
        if self.durable and self.written:
            fsync_directory(self.folder)
