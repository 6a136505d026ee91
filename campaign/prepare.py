"""Preflight: every selected recipient rendered and built before anything may leave."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from campaign.errors import CampaignError, ValidationErrors
from campaign.message import MessageBuilder
from campaign.models import CampaignFile, Draft, Mailbox, Recipient
from campaign.render import LetterRenderer
from campaign.store import MessageStore

Clock = Callable[[], datetime]
MAX_REPORTED_ERRORS = 50


def utc_now() -> datetime:
    return datetime.now(UTC)


def draft_filename(recipient: Recipient, total: int) -> str:
    """`03-ministry-of-justice.eml`: the file order first, so a listing reads like the file."""
    width = max(2, len(str(total)))
    return f"{recipient.index:0{width}d}-{recipient.id}.eml"


@dataclass(frozen=True)
class Prepared:
    """The drafts of one run, in file order, with their bytes in `store`."""

    source: CampaignFile
    drafts: list[Draft]
    store: MessageStore

    def data(self, draft: Draft) -> bytes:
        return self.store.get(draft.offset, draft.size)


def prepare(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    store: MessageStore,
    *,
    clock: Clock = utc_now,
    test_to: Mailbox | None = None,
    test_run: str = "",
) -> Prepared:
    """Render and build every recipient's message; raise ValidationErrors listing failures.

    The messages' bytes go to `store`; a draft is their envelope, identity and place.
    """
    campaign = source.campaign
    renderer = LetterRenderer(campaign, source.recipients)
    builder = MessageBuilder(campaign, clock())
    total = len(source.recipients)
    drafts: list[Draft] = []
    errors: list[CampaignError] = []
    for recipient in recipients:
        try:
            rendered = renderer.render(recipient)
            built = builder.build(recipient, rendered, test_to=test_to, test_run=test_run)
        except CampaignError as err:
            errors.append(err)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        if errors:
            continue  # keep checking, but stop storing what will never be used
        drafts.append(
            Draft(
                recipient_id=recipient.id,
                index=recipient.index,
                filename=draft_filename(recipient, total),
                sender=campaign.sender.address,
                addresses=(test_to.address,) if test_to else recipient.addresses,
                message_id=built.message_id,
                content_hash=built.content_hash,
                sha256=built.sha256,
                size=len(built.data),
                offset=store.put(built.data),
            )
        )
    if errors:
        raise ValidationErrors(errors)
    return Prepared(source, drafts, store)
