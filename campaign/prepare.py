"""Preflight: every selected recipient rendered and built before anything may leave."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from campaign.errors import CampaignError, ValidationErrors
from campaign.message import BuiltMessage, MessageBuilder, message_id_for
from campaign.models import Campaign, CampaignFile, Draft, Mailbox, Recipient
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


class DraftTable(Sequence[Draft]):
    """The drafts of `recipients` (one each, same order), kept in columns and in the store.

    A Draft object with its hex digests, file name and Message-ID costs some 600 bytes;
    a campaign of 100,000 recipients would hold 60 MB of them. The table keeps where each
    message's bytes are and their size (18 bytes); the two SHA-256 digests follow the
    bytes in the store, and the rest is derived from the recipient when a Draft is asked for.
    """

    _DIGESTS = 64  # content hash, then the SHA-256 of the bytes

    def __init__(
        self,
        campaign: Campaign,
        recipients: Sequence[Recipient],
        total: int,
        store: MessageStore,
        test_to: Mailbox | None = None,
    ) -> None:
        self._campaign = campaign
        self._recipients = recipients
        self._total = total
        self._store = store
        self._test_to = test_to
        self._offsets = array("Q")
        self._sizes = array("Q")
        self._segments = array("H")

    def add(self, built: BuiltMessage, segment: int) -> None:
        """Put the message's bytes, then its digests, into the store (as `segment`)."""
        if len(self._offsets) >= len(self._recipients):
            raise IndexError("more drafts than recipients")
        offset = self._store.put(built.data)
        self._store.put(bytes.fromhex(built.content_hash) + bytes.fromhex(built.sha256))
        self._offsets.append(offset)
        self._sizes.append(len(built.data))
        self._segments.append(segment)

    def columns(self) -> tuple[bytes, bytes, bytes]:
        """The table's own data, cheap to hand from a worker process to its parent."""
        return self._offsets.tobytes(), self._sizes.tobytes(), self._segments.tobytes()

    def extend_columns(self, columns: tuple[bytes, bytes, bytes]) -> None:
        offsets, sizes, segments = columns
        if len(self._offsets) + len(offsets) // 8 > len(self._recipients):
            raise IndexError("more drafts than recipients")
        self._offsets.frombytes(offsets)
        self._sizes.frombytes(sizes)
        self._segments.frombytes(segments)

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, position: int) -> Draft: ...

    @overload
    def __getitem__(self, position: slice) -> list[Draft]: ...

    def __getitem__(self, position: int | slice) -> Draft | list[Draft]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError("draft index out of range")
        recipient = self._recipients[position]
        test_to = self._test_to
        offset, size, segment = (
            self._offsets[position],
            self._sizes[position],
            self._segments[position],
        )
        digests = self._store.get(offset + size, self._DIGESTS, segment)
        return Draft(
            recipient_id=recipient.id,
            index=recipient.index,
            filename=draft_filename(recipient, self._total),
            sender=self._campaign.sender.address,
            addresses=(test_to.address,) if test_to else recipient.addresses,
            message_id=message_id_for(self._campaign, recipient.id, test=test_to is not None),
            content_hash=digests[:32].hex(),
            sha256=digests[32:].hex(),
            size=size,
            offset=offset,
            segment=segment,
        )


@dataclass(frozen=True)
class Prepared:
    """The drafts of one run, in file order, with their bytes in `store`."""

    source: CampaignFile
    drafts: Sequence[Draft]
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
    drafts = DraftTable(source.campaign, recipients, len(source.recipients), store, test_to)
    if workers <= 1:
        errors = _build_range(source, recipients, drafts, date, test_to)
    else:
        errors = _build_parallel(source, recipients, drafts, store, date, test_to, workers)
    if errors:
        raise ValidationErrors(errors[:MAX_REPORTED_ERRORS])
    return Prepared(source, drafts, store)


def _default_workers(count: int) -> int:
    if count < PARALLEL_THRESHOLD or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 8, count // (PARALLEL_THRESHOLD // 2)))


def _build_range(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    drafts: DraftTable,
    date: datetime,
    test_to: Mailbox | None,
    segment: int = 0,
) -> list[CampaignError]:
    """Build `recipients` into `drafts` (their bytes into its store); return what failed."""
    campaign = source.campaign
    renderer = LetterRenderer(campaign, source.recipients)
    builder = MessageBuilder(campaign, date)
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
        drafts.add(built, segment)
    return errors


# What a forked worker needs; set just before the fork so nothing is pickled but ranges.
_FORK_STATE: tuple[CampaignFile, Sequence[Recipient], datetime, Mailbox | None, str] | None = None


def _fork_worker(
    bounds: tuple[int, int, int],
) -> tuple[str, tuple[bytes, bytes, bytes], list[tuple[Any, ...]]]:
    assert _FORK_STATE is not None
    source, recipients, date, test_to, directory = _FORK_STATE
    start, stop, segment = bounds
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".spool") as spool:
        name = spool.name
    part = MessageStore(path=Path(name))
    mine = recipients[start:stop]
    drafts = DraftTable(source.campaign, mine, len(source.recipients), part, test_to)
    try:
        errors = _build_range(source, mine, drafts, date, test_to, segment)
    finally:
        part.flush_and_close()
    return name, drafts.columns(), [err.to_tuple() for err in errors]


def _build_parallel(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    drafts: DraftTable,
    store: MessageStore,
    date: datetime,
    test_to: Mailbox | None,
    workers: int,
) -> list[CampaignError]:
    global _FORK_STATE
    step = -(-len(recipients) // workers)
    first = store.next_segment
    ranges = [
        (start, min(start + step, len(recipients)), first + number)
        for number, start in enumerate(range(0, len(recipients), step))
    ]
    errors: list[CampaignError] = []
    with tempfile.TemporaryDirectory(prefix="campaign-build-") as directory:
        _FORK_STATE = (source, recipients, date, test_to, directory)
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
                results = list(pool.map(_fork_worker, ranges))
        finally:
            _FORK_STATE = None
        for (name, columns, part_errors), (_, _, expected_segment) in zip(
            results, ranges, strict=True
        ):
            errors.extend(CampaignError.from_tuple(item) for item in part_errors)
            if errors:
                continue
            # Opened before the folder goes: the data lives on until the store is closed.
            segment = store.adopt(Path(name))
            assert segment == expected_segment
            drafts.extend_columns(columns)
    return errors
