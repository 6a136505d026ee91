"""`.eml` drafts in a folder, each written atomically (temporary file, then rename), 0600."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from campaign.models import Draft
from campaign.safefiles import ensure_folder, fsync_folder, write_file
from campaign.transports.base import BeforeData, Delivery, Reply


class FileTransport:
    """Writes each message as `<folder>/<draft.filename>`, never through a symlink."""

    def __init__(self, folder: Path, *, durable: bool = True) -> None:
        self.folder = folder
        self.name = f"files:{folder}"
        self.durable = durable
        self.replaced: list[str] = []
        self.written: list[Path] = []

    is_open = True

    async def open(self) -> None:
        ensure_folder(self.folder)

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        if before_data is not None:
            await before_data({})
        path = self.folder / draft.filename
        if path.exists():
            self.replaced.append(draft.filename)
        write_file(path, data, durable=self.durable)
        self.written.append(path)
        reply = Reply(250, f"written to {path}")
        return Delivery(dict.fromkeys(addresses, reply))

    async def close(self) -> None:
        if self.durable and self.written:
            fsync_folder(self.folder)
