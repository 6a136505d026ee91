"""The ways a message can leave: `.eml` drafts, SMTP, the terminal, memory (for tests)."""

from campaign.transports.base import (
    ConnectFailure,
    ConnectStep,
    Delivery,
    Reply,
    Stage,
    Transport,
)

__all__ = ["ConnectFailure", "ConnectStep", "Delivery", "Reply", "Stage", "Transport"]
