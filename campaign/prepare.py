"""Preflight: every selected recipient rendered and built before anything may leave."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
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
    """The drafts of `recipients` (one each, same order), kept in columns of bytes.

    A Draft object with its hex digests, file name and Message-ID costs some 600 bytes;
    a campaign of 100,000 recipients would hold 60 MB of them. The table keeps what
    cannot be derived from the recipient (where the bytes are, their size and two
    SHA-256 digests: 78 bytes) and builds each Draft when it is asked for.
    """

    _DIGESTS = 64  # content hash, then the SHA-256 of the bytes

    def __init__(
        self,
        campaign: Campaign,
        recipients: Sequence[Recipient],
        total: int,
        test_to: Mailbox | None = None,
    ) -> None:
        self._campaign = campaign
        self._recipients = recipients
        self._total = total
        self._test_to = test_to
        self._offsets = array("Q")
        self._sizes = array("Q")
        self._segments = array("H")
        self._digests = bytearray()

    def append(self, built: BuiltMessage, offset: int, segment: int) -> None:
        if len(self._offsets) >= len(self._recipients):
            raise IndexError("more drafts than recipients")
        self._offsets.append(offset)
        self._sizes.append(len(built.data))
        self._segments.append(segment)
        self._digests += bytes.fromhex(built.content_hash) + bytes.fromhex(built.sha256)

    def columns(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The table's own data, cheap to hand from a worker process to its parent."""
        return (
            self._offsets.tobytes(),
            self._sizes.tobytes(),
            self._segments.tobytes(),
            bytes(self._digests),
        )

    def extend_columns(self, columns: tuple[bytes, bytes, bytes, bytes]) -> None:
        offsets, sizes, segments, digests = columns
        if len(self._offsets) + len(offsets) // 8 > len(self._recipients):
            raise IndexError("more drafts than recipients")
        self._offsets.frombytes(offsets)
        self._sizes.frombytes(sizes)
        self._segments.frombytes(segments)
        self._digests += digests

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
        start = position * self._DIGESTS
        return Draft(
            recipient_id=recipient.id,
            index=recipient.index,
            filename=draft_filename(recipient, self._total),
            sender=self._campaign.sender.address,
            addresses=(test_to.address,) if test_to else recipient.addresses,
            message_id=message_id_for(self._campaign, recipient.id, test=test_to is not None),
            content_hash=self._digests[start : start + 32].hex(),
            sha256=self._digests[start + 32 : start + 64].hex(),
            size=self._sizes[position],
            offset=self._offsets[position],
            segment=self._segments[position],
        )

    def __iter__(self) -> Iterator[Draft]:
        for position in range(len(self)):
            yield self[position]

    def recipient_id(self, position: int) -> str:
        """The recipient of a draft, without building the Draft."""
        return self._recipients[position].id


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
    drafts = DraftTable(source.campaign, recipients, len(source.recipients), test_to)
    if workers <= 1:
        errors = _build_range(source, recipients, drafts, store, date, test_to)
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
    store: MessageStore,
    date: datetime,
    test_to: Mailbox | None,
    segment: int = 0,
) -> list[CampaignError]:
    """Build `recipients` into `drafts` (their bytes into `store`); return what failed."""
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
        drafts.append(built, store.put(built.data), segment)
    return errors


# What a forked worker needs; set just before the fork so nothing is pickled but ranges.
_FORK_STATE: tuple[CampaignFile, Sequence[Recipient], datetime, Mailbox | None, str] | None = None


def _fork_worker(
    bounds: tuple[int, int, int],
) -> tuple[str, tuple[bytes, bytes, bytes, bytes], list[tuple[Any, ...]]]:
    assert _FORK_STATE is not None
    source, recipients, date, test_to, directory = _FORK_STATE
    start, stop, segment = bounds
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".spool") as spool:
        name = spool.name
    part = MessageStore(path=Path(name))
    mine = recipients[start:stop]
    drafts = DraftTable(source.campaign, mine, len(source.recipients), test_to)
    try:
        errors = _build_range(source, mine, drafts, part, date, test_to, segment)
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
