"""Writing the prepared messages as `.eml` drafts into the outbox."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from campaign.prepare import Prepared
from campaign.transports.files import FileTransport

_DRAFT_NAME = re.compile(r"\d{2,}-[a-z0-9][a-z0-9_.-]*\.eml\Z")


@dataclass(frozen=True, slots=True)
class DraftsReport:
    written: tuple[Path, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]


async def _write(prepared: Prepared, transport: FileTransport) -> None:
    await transport.open()
    try:
        for draft in prepared.drafts:
            await transport.send(draft, prepared.data(draft), draft.addresses)
    finally:
        await transport.close()


def write_drafts(prepared: Prepared, outbox: Path) -> DraftsReport:
    """Write one `.eml` per draft; remove earlier drafts of recipients no longer in the file."""
    transport = FileTransport(outbox)
    asyncio.run(_write(prepared, transport))
    current = {draft.filename for draft in prepared.drafts}
    removed: list[str] = []
    if len(prepared.drafts) == len(prepared.source.recipients):
        for path in sorted(outbox.glob("*.eml")):
            if path.name not in current and _DRAFT_NAME.match(path.name):
                path.unlink()
                removed.append(path.name)
    return DraftsReport(tuple(transport.written), tuple(transport.replaced), tuple(removed))
