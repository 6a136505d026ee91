"""`.eml` drafts in a folder, each written atomically (temporary file, then rename), 0600."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from email import policy
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path

from campaign.models import Draft
from campaign.safefiles import ensure_folder, fsync_folder, write_file
from campaign.transports.base import BeforeData, Delivery, Reply


def stamp_of(data: bytes) -> int | None:
    """The modification time (ns) campaign gives a letter's file; None without a Date.

    The second is the letter's Date; the fraction of it is a number taken from the bytes'
    SHA-256. A file whose time is not the stamp of its bytes has changed since: an edit
    changes the bytes, and so the stamp, even one that keeps the time (`touch -r`) or
    falls in the same second.
    """
    head = data.partition(b"\r\n\r\n")[0]
    try:
        value = BytesHeaderParser(policy=policy.compat32).parsebytes(head)["Date"]
        seconds = None if value is None else parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if seconds is None:
        return None
    fraction = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % 1_000_000_000
    return int(seconds) * 1_000_000_000 + fraction


class FileTransport:
    """Writes each message as `<folder>/<draft.filename>`, never through a symlink.

    Each file's modification time is set to `stamp_of` its bytes: a draft whose time is
    not that has been changed since (see drafts.edited_since_written).
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
        stamp = stamp_of(data)
        if stamp is not None:
            os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
        self.written.append(path)
        reply = Reply(250, f"written to {path}")
        return Delivery(dict.fromkeys(addresses, reply))

    async def close(self) -> None:
        if self.durable and self.written:
            fsync_folder(self.folder)
