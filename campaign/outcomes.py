"""What a server's answer means: for each address, and for the run as a whole."""

from __future__ import annotations

import re
from enum import StrEnum

from campaign.sendlog import AddressReply, Outcome
from campaign.transports.base import ConnectFailure, ConnectStep, Reply, Stage


class RunEffect(StrEnum):
    """What an answer does to the run, beyond the addresses it concerns."""

    CONTINUE = "continue"
    STOP = "stop"  # it concerns every message alike: nothing else is tried


# Words with which servers refuse the sender or the client at RCPT, for every recipient
# alike (Postfix delays such refusals to RCPT by default, smtpd_delay_reject).
_SERVER_WIDE = (
    "sender address rejected",
    "client host rejected",
    "relay access denied",
    "not owned by user",
    "authentication required",
    "sender verify failed",
)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply's text (`5.7.1`), if any."""
    found = _ENHANCED.match(text.strip())
    return found.group(0) if found else None


def refuses_everyone(reply: Reply, sender: str = "") -> bool:
    """A permanent refusal at RCPT that is about the sender or the client, not the address."""
    if reply.stage != Stage.RCPT or reply.code is None or not 500 <= reply.code < 600:
        return False
    status = enhanced_status(reply.text) or ""
    text = reply.text.lower()
    return status.startswith("5.7.") and (
        (bool(sender) and sender.lower() in text) or any(words in text for words in _SERVER_WIDE)
    )


def address_outcome(reply: Reply, sender: str = "") -> Outcome:
    """The address's outcome for one reply (see tests/test_outcomes.py for the table)."""
    if refuses_everyone(reply, sender):
        return Outcome.PENDING  # the server refuses the sender or client: fix that, not this
    if reply.code is None:
        # Lost before the data went out: try again. Lost after: the server may have it.
        return Outcome.UNKNOWN if reply.stage == Stage.DATA else Outcome.DEFERRED
    if 200 <= reply.code < 300:
        return Outcome.ACCEPTED
    if 500 <= reply.code < 600:
        # A refused sender is the run's problem, not the address's: it stays to be sent.
        # A letter over the server's SIZE is refused for every address alike.
        if reply.stage == Stage.MAIL and reply.code != 552:
            return Outcome.PENDING
        return Outcome.REFUSED
    return Outcome.DEFERRED


def address_reply(reply: Reply, sender: str = "") -> AddressReply:
    """The address's outcome with the server's answer, as a result record keeps them."""
    return AddressReply(address_outcome(reply, sender), reply.code, reply.text)


def run_effect(reply: Reply, sender: str = "") -> RunEffect:
    """Whether a reply stops the whole run: a permanent refusal of the sender or client does."""
    if reply.stage == Stage.MAIL and reply.code is not None and 500 <= reply.code < 600:
        return RunEffect.CONTINUE if reply.code == 552 else RunEffect.STOP
    if refuses_everyone(reply, sender):
        return RunEffect.STOP
    return RunEffect.CONTINUE


def connect_effect(failure: ConnectFailure) -> RunEffect:
    """Whether a failed connection stops the run, or is worth trying again later.

    TLS, login and a permanent refusal at the greeting concern every message alike (a
    refused login, even a temporary 454, is never tried again: one failed login per run);
    a refused or timed-out connection, or a 4xx greeting, may pass.
    """
    if failure.step in (ConnectStep.TLS, ConnectStep.LOGIN):
        return RunEffect.STOP
    if failure.code is not None and failure.code >= 500:
        return RunEffect.STOP
    return RunEffect.CONTINUE
