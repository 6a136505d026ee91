"""Preflight: every selected recipient rendered and built before anything may leave."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    drafts: tuple[Draft, ...]
    store: MessageStore

    def data(self, draft: Draft) -> bytes:
        return self.store.get(draft.offset, draft.size, draft.segment)


PARALLEL_THRESHOLD = 1000


def prepare(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    store: MessageStore,
    *,
    clock: Clock = utc_now,
    test_to: Mailbox | None = None,
    workers: int | None = None,
) -> Prepared:
    """Render and build every recipient's message; raise ValidationErrors listing failures.

    Large campaigns are built by one process per core (forked, so they share the loaded
    data); the bytes are the same as a single process would build.
    """
    date = clock()
    if workers is None:
        workers = _default_workers(len(recipients))
    if workers <= 1:
        drafts, errors = _build_range(source, recipients, store, date, test_to)
    else:
        drafts, errors = _build_parallel(source, recipients, store, date, test_to, workers)
    if errors:
        raise ValidationErrors(errors[:MAX_REPORTED_ERRORS])
    return Prepared(source, tuple(drafts), store)


def _default_workers(count: int) -> int:
    if count < PARALLEL_THRESHOLD or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 8, count // (PARALLEL_THRESHOLD // 2)))


def _build_range(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    store: MessageStore,
    date: datetime,
    test_to: Mailbox | None,
    segment: int = 0,
) -> tuple[list[Draft], list[CampaignError]]:
    campaign = source.campaign
    renderer = LetterRenderer(campaign, source.recipients)
    total = len(source.recipients)
    builder = MessageBuilder(campaign, date)
    drafts: list[Draft] = []
    errors: list[CampaignError] = []
    for recipient in recipients:
        try:
            rendered = renderer.render(recipient)
            built = builder.build(recipient, rendered, test_to=test_to)
        except CampaignError as err:
            errors.append(err)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        if errors:
            continue  # keep checking, but stop storing what will never be used
        offset = store.put(built.data)
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
                offset=offset,
                segment=segment,
            )
        )
    return drafts, errors


# What a forked worker needs; set just before the fork so nothing is pickled but ranges.
_FORK_STATE: tuple[CampaignFile, Sequence[Recipient], datetime, Mailbox | None, str] | None = None


def _fork_worker(
    bounds: tuple[int, int, int],
) -> tuple[str, list[Draft], list[tuple[Any, ...]]]:
    assert _FORK_STATE is not None
    source, recipients, date, test_to, directory = _FORK_STATE
    start, stop, segment = bounds
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".spool") as spool:
        name = spool.name
    part = MessageStore(path=Path(name))
    try:
        drafts, errors = _build_range(source, recipients[start:stop], part, date, test_to, segment)
    finally:
        part.flush_and_close()
    return name, drafts, [err.to_tuple() for err in errors]


def _build_parallel(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    store: MessageStore,
    date: datetime,
    test_to: Mailbox | None,
    workers: int,
) -> tuple[list[Draft], list[CampaignError]]:
    global _FORK_STATE
    step = -(-len(recipients) // workers)
    first = store.next_segment
    ranges = [
        (start, min(start + step, len(recipients)), first + number)
        for number, start in enumerate(range(0, len(recipients), step))
    ]
    drafts: list[Draft] = []
    errors: list[CampaignError] = []
    with tempfile.TemporaryDirectory(prefix="campaign-build-") as directory:
        _FORK_STATE = (source, recipients, date, test_to, directory)
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
                results = list(pool.map(_fork_worker, ranges))
        finally:
            _FORK_STATE = None
        for name, part_drafts, part_errors in results:
            errors.extend(CampaignError.from_tuple(item) for item in part_errors)
            if errors:
                continue
            # Opened before the folder goes: the data lives on until the store is closed.
            segment = store.adopt(Path(name))
            assert all(draft.segment == segment for draft in part_drafts[:1])
            drafts.extend(part_drafts)
    return drafts, errors
