"""Writing the prepared messages as `.eml` drafts into the outbox."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from campaign.errors import CampaignError, ValidationErrors
from campaign.headersafety import HeaderBlockError, check_header_block, unsafe_reason
from campaign.message import POLICY, content_hash, message_id_for
from campaign.models import Campaign, CampaignFile, Draft, Recipient, Rendered
from campaign.prepare import Prepared, draft_filename
from campaign.store import MessageStore
from campaign.transports.base import Transport
from campaign.transports.files import FileTransport

_DRAFT_NAME = re.compile(r"\d{2,}-[a-z0-9][a-z0-9_.-]*\.eml\Z")


@dataclass(frozen=True, slots=True)
class DraftsReport:
    written: tuple[Path, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]


def deliver_all(prepared: Prepared, transport: Transport) -> None:
    """Every draft, in order, through one transport (a folder, the terminal, memory)."""

    async def deliver() -> None:
        await transport.open()
        try:
            for draft in prepared.drafts:
                await transport.send(draft, prepared.data(draft), draft.addresses)
        finally:
            await transport.close()

    asyncio.run(deliver())


def write_drafts(prepared: Prepared, outbox: Path) -> DraftsReport:
    """Write one `.eml` per draft; remove earlier drafts of recipients no longer in the file."""
    transport = FileTransport(outbox)
    deliver_all(prepared, transport)
    current = {draft.filename for draft in prepared.drafts}
    removed: list[str] = []
    if len(prepared.drafts) == len(prepared.source.recipients):
        for path in sorted(outbox.glob("*.eml")):
            if path.name not in current and _DRAFT_NAME.match(path.name):
                path.unlink()
                removed.append(path.name)
    return DraftsReport(tuple(transport.written), tuple(transport.replaced), tuple(removed))


def read_outbox(
    source: CampaignFile, recipients: Sequence[Recipient], outbox: Path, store: MessageStore
) -> Prepared:
    """The reviewed drafts, byte for byte, after checking their headers against the file.

    Each draft must carry the Message-ID, sender and addresses the campaign file gives
    its recipient, and a header block with nothing injected; otherwise nothing is sent.
    """
    campaign = source.campaign
    total = len(source.recipients)
    errors: list[CampaignError] = []
    drafts: list[Draft] = []
    for recipient in recipients:
        path = outbox / draft_filename(recipient, total)
        if not path.is_file():
            errors.append(
                CampaignError(
                    "no draft for this recipient in the outbox",
                    path=path,
                    recipient=recipient.id,
                    hint="run `campaign drafts` first, or send without --from-outbox",
                )
            )
            continue
        data = path.read_bytes()
        if not data.endswith(b"\r\n"):
            data += b"\r\n"  # an editor's save may drop the last line end; SMTP needs it
        try:
            draft = _check_draft(campaign, recipient, path, data)
        except CampaignError as err:
            errors.append(err)
            continue
        drafts.append(replace(draft, offset=store.put(data)))
    if errors:
        raise ValidationErrors(errors)
    return Prepared(source, drafts, store)


def _check_draft(campaign: Campaign, recipient: Recipient, path: Path, data: bytes) -> Draft:
    def refuse(message: str, field: str | None = None) -> CampaignError:
        return CampaignError(
            message,
            path=path,
            recipient=recipient.id,
            field=field,
            hint="run `campaign drafts` again to rebuild it",
        )

    if b"\r\n" not in data or data.replace(b"\r\n", b"").find(b"\n") >= 0:
        raise refuse("the draft does not use CRLF line ends (was it edited?)")
    message = BytesParser(policy=POLICY).parsebytes(data)
    assert isinstance(message, EmailMessage)
    names = list(message.keys())
    try:
        check_header_block(data, names)
    except HeaderBlockError as err:
        raise refuse(f"the header block is not safe: {err}") from None
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        if names.count(name) != 1:
            raise refuse(f"the draft must have exactly one {name} header", name)
    for name in ("Bcc", "Resent-To", "Resent-Bcc", "Cc"):
        if name in message:
            raise refuse(f"the draft has a {name} header, which campaign never writes", name)
    expected_id = message_id_for(campaign, recipient.id)
    if str(message["Message-ID"]).strip() != expected_id:
        raise refuse(f"the Message-ID is not {expected_id}", "Message-ID")
    senders = [a.addr_spec for a in message["From"].addresses]
    if senders != [campaign.sender.address]:
        raise refuse(f"the sender is {', '.join(senders)}, not {campaign.sender.address}", "From")
    to = tuple(a.addr_spec for a in message["To"].addresses)
    if sorted(to) != sorted(recipient.addresses):
        raise refuse(
            f"the To addresses {', '.join(to)} are not this recipient's"
            f" ({', '.join(recipient.addresses)})",
            "To",
        )
    subject = str(message["Subject"])
    reason = unsafe_reason(subject)
    if reason:
        raise refuse(f"the subject {reason}", "Subject")
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    # Decoded with CRLF line ends (the wire form); the rendered letter used LF.
    rendered = Rendered(
        subject=subject,
        text=text_part.get_content().replace("\r\n", "\n") if text_part is not None else "",
        html=html_part.get_content().replace("\r\n", "\n") if html_part is not None else None,
    )
    return Draft(
        recipient_id=recipient.id,
        index=recipient.index,
        filename=path.name,
        sender=campaign.sender.address,
        addresses=recipient.addresses,
        message_id=expected_id,
        content_hash=content_hash(subject, recipient.addresses, rendered),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        offset=0,
    )
