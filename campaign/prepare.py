"""Preflight: every selected recipient rendered and built before anything may leave."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from campaign.attachments import AttachmentFiles
from campaign.errors import CampaignError, ValidationErrors
from campaign.message import MessageBuilder
from campaign.models import Campaign, CampaignFile, Draft, Mailbox, Recipient
from campaign.render import LetterRenderer, collapse_template_errors
from campaign.store import MessageStore

Clock = Callable[[], datetime]
MAX_REPORTED_ERRORS = 50


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Prepared:
    """The drafts of one run, in file order, with their bytes in `store`.

    It keeps the campaign's settings but not the recipients' data: nothing after the
    build needs that, and at 100,000 recipients it is 30 MB of a run's 260.
    """

    campaign: Campaign
    drafts: list[Draft]
    store: MessageStore
    file_recipients: int  # how many recipients the campaign file has

    def data(self, draft: Draft) -> bytes:
        return self.store.get(draft.offset, draft.size, draft.segment)


def prepare(
    source: CampaignFile,
    recipients: Sequence[Recipient],
    store: MessageStore,
    *,
    clock: Clock = utc_now,
    test_to: Mailbox | None = None,
    test_run: str = "",
    workers: int | None = None,
) -> Prepared:
    """Render and build every recipient's message; raise ValidationErrors listing failures.

    The messages' bytes go to `store`; a draft is their envelope, identity and place.
    A large campaign is built by one process per core (`workers`), with the same bytes.
    The campaign's attachments are read and encoded once, here, for every process.
    """
    files = AttachmentFiles(source.campaign.max_letter_bytes)
    date = clock()
    job = _Job(source, date, test_to, test_run, files)
    # A problem with a campaign-wide file is one error, said before any letter is built.
    MessageBuilder(source.campaign, date, files=files)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8, len(recipients) // PARALLEL_SLICE)
    if workers > 1:
        built, errors = _build_in_processes(job, recipients, store, workers)
    else:
        built, errors = _build(job, recipients, store)
    if errors:
        # One template mistake is said once, not once per recipient.
        raise ValidationErrors(collapse_template_errors(errors)[:MAX_REPORTED_ERRORS])
    total = len(source.recipients)
    sender = source.campaign.envelope_sender
    drafts = [
        Draft(
            recipient_id=recipient.id,
            index=recipient.index,
            file_recipients=total,
            sender=sender,
            addresses=(test_to.address,) if test_to else recipient.addresses,
            message_id=message_id,
            content_hash=content_hash,
            sha256=sha256,
            size=size,
            offset=offset,
            segment=segment,
        )
        for recipient, (message_id, content_hash, sha256, size, offset, segment) in zip(
            recipients, built, strict=True
        )
    ]
    return Prepared(source.campaign, drafts, store, len(source.recipients))


# What a build gives for one letter: message_id, content_hash, sha256, size, offset, segment.
# Plain tuples, not drafts: from a worker process they cross a pipe, and the rest of a
# draft (names, addresses) is taken from the recipients this process already holds.
_Built = tuple[str, str, str, int, int, int]


@dataclass(frozen=True)
class _Job:
    """What every recipient's build needs, the same for all of them."""

    source: CampaignFile
    date: datetime
    test_to: Mailbox | None
    test_run: str
    files: AttachmentFiles  # the campaign's attachments, read once for the whole run


def _build(
    job: _Job, recipients: Sequence[Recipient], store: MessageStore, segment: int = 0
) -> tuple[list[_Built], list[CampaignError]]:
    """Every recipient's letter into `store`, in order; with any error, only the errors."""
    campaign = job.source.campaign
    limit = campaign.max_letter_bytes
    renderer = LetterRenderer(campaign, job.source.recipients, max_letter_bytes=limit)
    builder = MessageBuilder(campaign, job.date, files=job.files, max_bytes=limit)
    test_to = job.test_to
    drafts: list[_Built] = []
    errors: list[CampaignError] = []
    for recipient in recipients:
        try:
            rendered = renderer.render(recipient)
            built = builder.build(recipient, rendered, test_to=test_to, test_run=job.test_run)
        except CampaignError as err:
            errors.append(err)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        if errors:
            continue  # keep checking, but stop storing what will never be used
        offset = store.put(built.data)
        drafts.append(
            (built.message_id, built.content_hash, built.sha256, len(built.data), offset, segment)
        )
    return ([] if errors else drafts), errors


PARALLEL_SLICE = 2000  # recipients per process at least: below that, starting one costs more
MAX_SLICE = 5000  # recipients built by a worker in one go
_WORKER_JOB: tuple[_Job, Sequence[Recipient], str] | None = None


def _start_worker(job: _Job, recipients: Sequence[Recipient], folder: str) -> None:
    global _WORKER_JOB
    _WORKER_JOB = (job, recipients, folder)


def _build_slice(
    bounds: tuple[int, int, int],
) -> tuple[str, list[_Built], list[CampaignError]]:
    """In a worker process: build one slice into a spool file of its own."""
    assert _WORKER_JOB is not None
    job, recipients, folder = _WORKER_JOB
    start, stop, segment = bounds
    path = Path(folder) / f"part-{segment}.spool"
    with MessageStore(path=path) as part:
        drafts, errors = _build(job, recipients[start:stop], part, segment)
    return str(path), drafts, errors


def _build_in_processes(
    job: _Job, recipients: Sequence[Recipient], store: MessageStore, workers: int
) -> tuple[list[_Built], list[CampaignError]]:
    """Slices built side by side; their spool files become segments of `store`.

    Slices of at most MAX_SLICE recipients, so that what comes back over the pipe at once
    stays small however large the campaign.
    """
    step = min(-(-len(recipients) // workers), MAX_SLICE)
    first = store.adopt_next
    slices = [
        (start, min(start + step, len(recipients)), first + number)
        for number, start in enumerate(range(0, len(recipients), step))
    ]
    drafts: list[_Built] = []
    errors: list[CampaignError] = []
    with (
        tempfile.TemporaryDirectory(prefix="campaign-build-") as folder,
        ProcessPoolExecutor(
            min(workers, len(slices)), initializer=_start_worker, initargs=(job, recipients, folder)
        ) as pool,
    ):
        for path, part_drafts, part_errors in pool.map(_build_slice, slices):
            errors += part_errors
            # Opened before the folder goes: the data lives on until the store is closed.
            store.adopt(Path(path))
            drafts += part_drafts
    return drafts, errors
