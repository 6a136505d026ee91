"""`.eml` drafts in a folder, each written atomically (temporary file, then rename), 0600."""

from __future__ import annotations

import os
from collections.abc import Sequence
from email import policy
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path

from campaign.models import Draft
from campaign.safefiles import ensure_folder, fsync_folder, write_file
from campaign.transports.base import BeforeData, Delivery, Reply


def dated(data: bytes) -> float | None:
    """The time a letter's Date header gives (POSIX seconds); None without a readable one."""
    head = data.partition(b"\r\n\r\n")[0]
    try:
        value = BytesHeaderParser(policy=policy.compat32).parsebytes(head)["Date"]
        return None if value is None else parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class FileTransport:
    """Writes each message as `<folder>/<draft.filename>`, never through a symlink.

    Each file's modification time is set to the letter's Date: a draft whose time no
    longer matches its Date has been changed since (see drafts.edited_since_written).
    """

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
        moment = dated(data)
        if moment is not None:
            stamp = int(moment) * 1_000_000_000
            os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
        self.written.append(path)
        reply = Reply(250, f"written to {path}")
        return Delivery(dict.fromkeys(addresses, reply))

    async def close(self) -> None:
        if self.durable and self.written:
            fsync_folder(self.folder)
