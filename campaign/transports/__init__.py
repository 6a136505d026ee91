"""The ways a message can leave: `.eml` drafts, SMTP, the terminal, memory (for tests)."""

from campaign.transports.base import (
    Delivery,
    Reply,
    RunStopped,
    TemporaryFailure,
    Transport,
    UnknownOutcome,
)

__all__ = [
    "Delivery",
    "Reply",
    "RunStopped",
    "TemporaryFailure",
    "Transport",
    "UnknownOutcome",
]
