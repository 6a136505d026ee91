"""The transport interface: open, send one message to some addresses, close."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """A 4xx reply or a lost connection before the message data went out: try again later."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class UnknownOutcome(Exception):
    """The data went out but no answer came back: the server may have taken the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunStopped(Exception):
    """A failure that concerns every message alike (sender refused, login, TLS, greeting)."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Transport(Protocol):
    """Where messages go. One instance is one channel: a folder, a terminal, a connection."""

    name: str

    async def open(self) -> None: ...

    async def send(self, draft: Draft, data: bytes, addresses: Sequence[str]) -> Delivery: ...

    async def close(self) -> None: ...
