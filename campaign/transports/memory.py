"""Messages kept in a list: for tests and for previews that need the bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from campaign.models import Draft
from campaign.transports.base import BeforeData, Delivery, Reply


@dataclass
class MemoryTransport:
    """Keeps (draft, bytes, addresses) for every message; `show` is called for each if given."""

    name: str = "memory"
    show: Callable[[Draft, bytes], None] | None = None
    outbox: list[tuple[Draft, bytes, tuple[str, ...]]] = field(default_factory=list)

    is_open: bool = True

    async def open(self) -> None:
        return None

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        if before_data is not None:
            await before_data({})
        self.outbox.append((draft, data, tuple(addresses)))
        if self.show is not None:
            self.show(draft, data)
        reply = Reply(250, f"kept in {self.name}")
        return Delivery({address: reply for address in addresses})

    async def close(self) -> None:
        return None
