"""The transport interface: open, send one message to some addresses, close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from campaign.models import Draft

SERVICE_CLOSING = 421  # RFC 5321 3.8: the server closes the channel after this reply


class Stage(StrEnum):
    """Where in the SMTP exchange an answer (or its absence) came."""

    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass(frozen=True, slots=True)
class Reply:
    """A server's answer to one address, or `code` None when the connection was lost."""

    code: int | None
    text: str
    stage: Stage = Stage.DATA

    @property
    def accepted(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


@dataclass(frozen=True, slots=True)
class Delivery:
    """The answer for every address the message was offered to.

    An address is accepted when its RCPT and the message's DATA both were; otherwise
    its reply is the refusal (MAIL, RCPT or DATA) or the lost connection, with its stage.
    """

    replies: Mapping[str, Reply]


class ConnectStep(StrEnum):
    """The steps of setting up a connection, each with its own ways to fail."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    TLS = "tls"
    LOGIN = "login"


class ConnectFailure(Exception):
    """The connection could not be set up: the step that failed, the reply, what to do."""

    def __init__(
        self,
        step: ConnectStep,
        reason: str,
        *,
        code: int | None = None,
        hint: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.code = code
        self.hint = hint
        self.timed_out = timed_out  # the server was silent for the whole timeout

    def __str__(self) -> str:
        return f"{self.step}: {self.reason}" + (f" ({self.hint})" if self.hint else "")


# Awaited just before the data leaves, with the refusals some addresses already got (RCPT):
# a run stopped while the data is on its way still records what the server said of them.
BeforeData = Callable[[Mapping[str, Reply]], Awaitable[None]]


class Transport(Protocol):
    """Where messages go. One instance is one channel: a folder, a terminal, a connection."""

    name: str

    @property
    def is_open(self) -> bool:
        """Ready to send now (a connection is up, a folder is there)."""
        ...

    async def open(self) -> None:
        """Be ready to send; raise ConnectFailure when a connection cannot be set up."""
        ...

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
