"""Rendered letter -> the exact bytes of one RFC 5322 message, checked before it can leave."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from campaign.errors import CampaignError
from campaign.headersafety import HeaderBlockError, check_header_block, unsafe_reason
from campaign.models import Campaign, Mailbox, Recipient, Rendered

# One policy throughout: CRLF line ends, 78-column folding, no raw 8-bit in headers.
POLICY = policy.SMTP


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    data: bytes
    message_id: str
    subject: str
    content_hash: str
    sha256: str


def message_id_for(campaign: Campaign, recipient_id: str, *, test: bool = False) -> str:
    """Deterministic for (campaign id, recipient id), at the sender's domain."""
    prefix = "test." if test else ""
    return f"<{prefix}{campaign.id}.{recipient_id}@{campaign.sender.domain}>"


def content_hash(subject: str, addresses: tuple[str, ...], rendered: Rendered) -> str:
    """What makes one recipient's letter this letter: not the Date, not the Message-ID."""
    payload = json.dumps(
        [subject, list(addresses), rendered.text, rendered.html], ensure_ascii=False
    ).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def _address(mailbox: Mailbox) -> Address:
    username, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=mailbox.display_name, username=username, domain=domain)


def build_message(
    campaign: Campaign,
    recipient: Recipient,
    rendered: Rendered,
    *,
    date: datetime,
    test_to: Mailbox | None = None,
) -> BuiltMessage:
    """Build and serialise the message; refuse it if any header is not exactly as meant.

    With `test_to`, the message goes to that mailbox instead, its subject marked as a test,
    under a Message-ID of its own so the real send is never mistaken for it.
    """
    subject = rendered.subject
    to = recipient.mailboxes
    message_id = message_id_for(campaign, recipient.id)
    if test_to is not None:
        subject = f"[TEST for {recipient.name}] {subject}"
        to = (test_to,)
        message_id = message_id_for(campaign, recipient.id, test=True)
    for field, value in (
        ("subject", subject),
        ("name", recipient.name),
        ("from", campaign.sender.display_name),
    ):
        reason = unsafe_reason(value)
        if reason:
            raise CampaignError(
                f"the {field} {reason}", path=campaign.source, recipient=recipient.id, field=field
            )

    message = EmailMessage(policy=POLICY)
    digest = content_hash(subject, tuple(m.address for m in to), rendered)
    message["From"] = _address(campaign.sender)
    message["To"] = tuple(_address(mailbox) for mailbox in to)
    if campaign.reply_to:
        message["Reply-To"] = tuple(_address(mailbox) for mailbox in campaign.reply_to)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if rendered.html is not None:
        message.add_alternative(
            rendered.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
        message.set_boundary(f"=_campaign_{digest[:32]}")
        # QP never emits "=_", so this boundary cannot occur in a body; deriving it from the
        # content keeps a re-render byte-identical apart from the Date.
        for part in message.iter_parts():
            del part["MIME-Version"]
    expected = list(message.keys())
    data = message.as_bytes(policy=POLICY)
    try:
        check_header_block(data, expected)
    except HeaderBlockError as err:
        raise CampaignError(
            f"the message headers came out wrong: {err}",
            path=campaign.source,
            recipient=recipient.id,
        ) from None
    return BuiltMessage(
        data=data,
        message_id=message_id,
        subject=subject,
        content_hash=digest,
        sha256=hashlib.sha256(data).hexdigest(),
    )
