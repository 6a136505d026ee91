"""The transport interface: open, send one message to some addresses, close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from campaign.models import Draft


@dataclass(frozen=True, slots=True)
class Reply:
    """A server's answer (or a transport's equivalent: code None for a file written)."""

    code: int | None
    text: str

    @property
    def accepted(self) -> bool:
        return self.code is None or 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code is not None and 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


@dataclass(frozen=True, slots=True)
class Delivery:
    """The answer for each address the message was offered to.

    An address is accepted when its RCPT and the message's DATA both were; otherwise
    its reply is the refusal (a RCPT refusal, or the DATA refusal for every address).
    """

    replies: Mapping[str, Reply]


class TemporaryFailure(Exception):
    """A 4xx reply or a lost connection before the message data went out: try again later.

    `replies` holds the answers already final for some addresses (e.g. a 550 on one RCPT).
    """

    def __init__(self, reply: Reply, replies: Mapping[str, Reply] | None = None) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.replies = dict(replies or {})


class UnknownOutcome(Exception):
    """The data went out but no answer came back: the server may have taken the message."""

    def __init__(
        self,
        reason: str,
        addresses: Sequence[str] = (),
        replies: Mapping[str, Reply] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.addresses = tuple(addresses)
        self.replies = dict(replies or {})


class RunStopped(Exception):
    """A failure that concerns every message alike (sender refused, login, TLS, greeting)."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


BeforeData = Callable[[], Awaitable[None]]


class Transport(Protocol):
    """Where messages go. One instance is one channel: a folder, a terminal, a connection."""

    name: str

    async def open(self) -> None: ...

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        """Offer the message to `addresses`; await `before_data` just before the data leaves."""
        ...

    async def close(self) -> None: ...
