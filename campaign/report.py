"""What `campaign report` shows, as frozen values: read from the campaign file and the send log.

`scan_log` reads the log once: the same `Replay` that `campaign log` folds (so the counts are
the same), plus what only the report needs (test sends, answers per minute, the log's SHA-256).
`report_data` turns a review into `ReportData`; `build_report` does it all for the command.
`campaign.report_page` draws the page from `ReportData`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from campaign.display import listed as listed_ids
from campaign.loading import Options, load_campaign
from campaign.models import Campaign
from campaign.parallel import side_by_side
from campaign.review import (
    RecipientRow,
    Review,
    RosterEntry,
    build_review,
    check_log,
    gone_from_the_file,
    roster,
)
from campaign.sendlog import (
    LogReader,
    Outcome,
    RecipientState,
    Replay,
    Status,
    now_iso,
    parse_time,
    settled_by_hand,
)

# At most this many recipients are shown one by one; past it, only those needing attention are,
# and the rest are counted per status with the `campaign log` command that lists them.
LIST_LIMIT = 1000
# At most this many test sends are listed (all are counted).
TEST_SEND_LIMIT = 200
# The chart aims at no more bars than this.
CHART_BUCKETS = 60
# Minute counts kept while reading; past this many the scan coarsens to hours, then days.
MAX_TIME_KEYS = 20_000

_STATUS_ORDER = tuple(Status)
# The chart's series, bottom of each stacked bar first.
CHART_SERIES = ("sent", "deferred", "failed", "unknown", "bounced", "replied")
_SERIES_OF_OUTCOME: dict[str, int] = {
    Outcome.ACCEPTED: 0,
    Outcome.DEFERRED: 1,
    Outcome.REFUSED: 2,
    Outcome.UNKNOWN: 3,
}
_SERIES_OF_EVENT = {"bounce": 4, "reply": 5, "auto-reply": 5}


# ---------------------------------------------------------------------------- the input model


class ArchiveCheck(StrEnum):
    """What the archive file says about the SHA-256 the log recorded."""

    MATCHES = "matches"
    DIFFERS = "differs"
    MISSING = "missing"
    NOT_CHECKED = "not checked"
    NONE = "none"  # nothing was accepted, so nothing was archived


@dataclass(frozen=True, slots=True)
class AddressOutcome:
    """One address of a recipient and the last thing its server said."""

    address: str
    outcome: str
    code: int | None
    reply: str
    time: str  # when that answer was logged ("" when never tried)
    queue_id: str | None


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """One recipient as the report shows it: the proof of what was sent, and the answers."""

    id: str
    name: str
    organisation: str
    status: str
    attempts: int
    addresses: tuple[AddressOutcome, ...]
    last_code: int | None
    last_reply: str
    queue_id: str | None
    last_event: str
    accepted_at: str | None  # the latest acceptance among its addresses
    message_id: str | None
    sha256: str | None
    archive: str | None  # as the log names it (relative to the log's folder)
    archive_check: ArchiveCheck = ArchiveCheck.NOT_CHECKED
    archive_sha256: str | None = None  # the file's own digest, when it differs
    sent_sha256: str | None = None  # bytes of an attempt whose answer was lost (no archive)
    resolved: str | None = None
    replies: int = 0  # a person's answers (`campaign inbox`)
    auto_replies: int = 0
    last_answer: str | None = None


@dataclass(frozen=True, slots=True)
class TestSend:
    """One answer to a `send --test-to` message: shown apart, never counted as sent."""

    __test__ = False  # not a pytest test class, whatever its name

    time: str
    recipient: str
    address: str
    outcome: str
    code: int | None
    reply: str
    message_id: str | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class Timeline:
    """Server answers per time bucket: `buckets[i][j]` counts series j in bucket i."""

    start: datetime | None
    width: timedelta
    buckets: tuple[tuple[int, ...], ...]
    series: tuple[str, ...] = CHART_SERIES
    undated: int = 0  # answers whose record had no readable time

    def totals(self) -> tuple[int, ...]:
        return tuple(sum(bucket[j] for bucket in self.buckets) for j in range(len(self.series)))

    def marks(self) -> int:
        """How many bars the chart draws: one per non-empty (bucket, series)."""
        return sum(1 for bucket in self.buckets for count in bucket if count)


@dataclass(frozen=True, slots=True)
class CampaignHeader:
    """What the page's header shows of the campaign file."""

    id: str
    subject: str
    sender: str

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignHeader:
        sender = campaign.sender
        shown = f"{sender.display_name} <{sender.address}>" if sender.display_name else ""
        return cls(campaign.id, campaign.subject, shown or sender.address)


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, as plain values."""

    campaign: str
    subject: str
    sender: str
    period: tuple[str, str] | None
    counts: tuple[tuple[str, int], ...]  # every status, in reading order
    total: int
    next_steps: tuple[str, ...]
    unproven: tuple[str, ...]  # recipients whose archived letter differs or is missing
    notes: tuple[str, ...]
    recipients: tuple[RecipientRecord, ...]  # those shown one by one, in file order
    collapsed: tuple[tuple[str, int], ...]  # status -> recipients not shown one by one
    test_sends: tuple[TestSend, ...]
    test_send_total: int
    test_counts: tuple[tuple[str, int], ...]
    timeline: Timeline
    log_path: str
    log_sha256: str
    log_size: int
    log_events: int
    made_at: str
    live: str | None = None
    gone: tuple[RecipientRecord, ...] = ()  # ids the log sent to, no longer in the file
    gone_total: int = 0


# ---------------------------------------------------------------------------- pure helpers


# Where common servers put the queue id in their 250 reply to DATA.
_QUEUE_ID_PATTERNS = (
    re.compile(r"\bqueued as ([A-Za-z0-9][A-Za-z0-9._-]*)", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=([A-Za-z0-9][A-Za-z0-9-]*)"),  # Exim
    re.compile(r"\[InternalId=(\d+)"),  # Microsoft 365 / Exchange
    re.compile(r"\bOK\s+\d+\s+(\S+)\s+-\s+gsmtp\b"),  # Gmail
    re.compile(r"^(?:\d\.\d\.\d+\s+)?([A-Za-z0-9]{8,}) Message accepted for delivery"),  # Sendmail
    re.compile(r"^(?:\d\.\d\.\d+\s+)?Ok ([0-9a-f]{8,}(?:-[0-9a-f]+)+)", re.IGNORECASE),  # SES
)


def queue_id(reply: str) -> str | None:
    """The queue id a server gave in its reply, when it follows a known pattern."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply)
        if match is not None:
            return match.group(1)
    return None


_WIDTHS = tuple(
    timedelta(minutes=m)
    for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 43200)
)


def bucket_width(span: timedelta, buckets: int = CHART_BUCKETS) -> timedelta:
    """The smallest round width that draws `span` in at most `buckets` bars."""
    for width in _WIDTHS:
        if span < width * buckets:
            return width
    return _WIDTHS[-1] * (span // (_WIDTHS[-1] * buckets) + 1)


# ---------------------------------------------------------------------------- reading the log


@dataclass
class _Minutes:
    """Counts per series per time key, the key a prefix of the ISO time (minute, hour, day)."""

    key_length: int = 16  # "2024-01-02T03:04"
    counts: dict[str, list[int]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # a full time string per key
    undated: int = 0

    def add(self, time: object, series: int, count: int = 1) -> None:
        if not isinstance(time, str) or len(time) < self.key_length:
            self.undated += count
            return
        key = time[: self.key_length]
        row = self.counts.get(key)
        if row is None:
            if len(self.counts) >= MAX_TIME_KEYS:
                self._coarsen()
                self.add(time, series, count)
                return
            row = self.counts[key] = [0] * len(CHART_SERIES)
            self.samples[key] = time
        row[series] += count

    def _coarsen(self) -> None:
        self.key_length = {16: 13, 13: 10, 10: 7}.get(self.key_length, 4)
        counts: dict[str, list[int]] = {}
        samples: dict[str, str] = {}
        for key, row in self.counts.items():
            short = key[: self.key_length]
            merged = counts.setdefault(short, [0] * len(CHART_SERIES))
            for j, n in enumerate(row):
                merged[j] += n
            samples.setdefault(short, self.samples[key])
        self.counts.clear()  # in place: a reader may hold the dict
        self.counts.update(counts)
        self.samples = samples

    def _floor(self, moment: datetime) -> datetime:
        """The start of the minute, hour or day `moment` was counted in (in UTC)."""
        moment = moment.replace(second=0, microsecond=0)
        if self.key_length <= 13:
            moment = moment.replace(minute=0)
        if self.key_length <= 10:
            moment = moment.replace(hour=0)
        return moment

    def timeline(self) -> Timeline:
        dated: list[tuple[datetime, list[int]]] = []
        undated = self.undated
        for key, row in self.counts.items():
            moment = parse_time(self.samples[key])
            if moment is None:
                undated += sum(row)
                continue
            dated.append((self._floor(moment), row))
        if not dated:
            return Timeline(None, timedelta(minutes=1), (), undated=undated)
        start = min(moment for moment, _ in dated)
        end = max(moment for moment, _ in dated)
        width = bucket_width(end - start)
        if self.key_length < 16:  # hours or days were kept: never draw finer than that
            width = max(width, timedelta(hours=1) if self.key_length == 13 else timedelta(days=1))
        buckets = [[0] * len(CHART_SERIES) for _ in range((end - start) // width + 1)]
        for moment, row in dated:
            bucket = buckets[(moment - start) // width]
            for j, n in enumerate(row):
                bucket[j] += n
        return Timeline(start, width, tuple(tuple(b) for b in buckets), undated=undated)


@dataclass
class LogScan:
    """One pass over the log: the replay `campaign log` shows, and what only the report needs."""

    history: Replay
    sha256: str
    size: int
    events: int = 0
    first_time: str | None = None
    last_time: str | None = None
    test_sends: list[TestSend] = field(default_factory=list)
    test_send_total: int = 0
    test_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    minutes: _Minutes = field(default_factory=_Minutes)
    # recipient -> SHA-256 of the bytes of its last attempt whose answer was lost (unknown, or
    # settled by `resolve`): what the server may hold, though nothing was archived
    unanswered: dict[str, str] = field(default_factory=dict)

    def timeline(self) -> Timeline:
        return self.minutes.timeline()


def file_sha256(path: Path, limit: int | None = None) -> tuple[str, int]:
    """The SHA-256 and size of a file (of its first `limit` bytes), read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20 if limit is None else min(1 << 20, limit - size)):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def scan_log(
    path: Path, campaign_id: str | None = None, *, size: int | None = None, hashed: bool = True
) -> LogScan:
    """Read the log once into the replay `campaign log` uses and the report's own figures.

    `scan.history` is exactly what `sendlog.replay(path, campaign_id)` returns, so a review
    built on it counts what `campaign log --json` counts. The SHA-256 is of the log's first
    `size` bytes (default: all it holds now), taken in a thread meanwhile (hashlib lets go of
    the GIL); with `hashed=False` the caller takes it (`scan.sha256` is left empty).
    """
    size = path.stat().st_size if size is None else size
    scan = LogScan(Replay(campaign=campaign_id), "", size)
    if hashed:
        with ThreadPoolExecutor(max_workers=1) as pool:
            hashing = pool.submit(file_sha256, path, size)
            _scan_records(scan, path)
            scan.sha256 = hashing.result()[0]
    else:
        _scan_records(scan, path)
    with contextlib.suppress(OSError):
        now = path.stat().st_size
        if now != size:
            scan.notes.append(
                f"the log grew from {size} to {now} bytes while the report was made (a run is"
                " in progress): its SHA-256 is that of the first size, the counts may include"
                " later events"
            )
    return scan


_QUIET_EVENTS = frozenset(("planned", "run-start", "run-end"))


def _scan_records(scan: LogScan, path: Path) -> None:
    history = scan.history
    fold = history.fold
    minutes = scan.minutes
    add = minutes.add
    counts = minutes.counts  # updated in place, also when coarsened
    unanswered = scan.unanswered
    # recipient -> (time, addresses, SHA-256) of an attempt whose answer is not logged yet
    open_attempts: dict[str, tuple[object, int, object]] = {}
    test_attempts: dict[str, dict[str, Any]] = {}
    unknown = _SERIES_OF_OUTCOME[Outcome.UNKNOWN]
    first: object = None
    reader = LogReader(path)
    for _, record in reader.records(final=True):
        fold(record)
        if history.other_campaigns and record.get("campaign") not in (None, history.campaign):
            continue  # another campaign's record: fold() ignored it, so does the report
        if first is None:
            first = record.get("time")
        event = record.get("event")
        if event in _QUIET_EVENTS:
            continue
        recipient = record.get("recipient")
        if not isinstance(recipient, str):
            continue
        time = record.get("time")
        if record.get("test"):
            _test_record(scan, test_attempts, event, recipient, record)
        elif event == "result":
            attempt = open_attempts.pop(recipient, None)
            replies = record.get("replies")
            lost = False
            if isinstance(replies, dict):
                for reply in replies.values():
                    outcome = reply.get("outcome") if isinstance(reply, dict) else None
                    series = _SERIES_OF_OUTCOME.get(str(outcome))
                    if series is None:
                        continue
                    # The common case inline: a time whose minute is already counted.
                    row = counts.get(time[: minutes.key_length]) if type(time) is str else None
                    if row is None:
                        add(time, series)
                    else:
                        row[series] += 1
                    lost = lost or series == unknown
            if lost and attempt is not None and attempt[2] is not None:
                unanswered[recipient] = str(attempt[2])
        elif event == "attempt":
            addresses = record.get("addresses")
            count = len(addresses) if isinstance(addresses, list) else 1
            earlier = open_attempts.get(recipient)
            if earlier is not None:  # an attempt left without an answer, then tried again
                add(earlier[0], unknown, earlier[1])
            unanswered.pop(recipient, None)
            open_attempts[recipient] = (time, count, record.get("sha256"))
        elif event == "resolve":
            settled = open_attempts.pop(recipient, None)
            if settled is not None and settled[2] is not None:
                unanswered[recipient] = str(settled[2])
        elif event in _SERIES_OF_EVENT:
            add(time, _SERIES_OF_EVENT[str(event)])
    history.notes.extend(reader.notes)
    scan.events = history.events
    scan.first_time = first if isinstance(first, str) else None
    scan.last_time = history.last_time or None
    for recipient, (time, count, sha256) in open_attempts.items():  # no answer: unknown
        add(time, unknown, count)
        if sha256 is not None:
            unanswered[recipient] = str(sha256)
    for recipient, test in test_attempts.items():
        for address in test.get("addresses") or ():
            _add_test_send(scan, test, recipient, str(address), {"outcome": Outcome.UNKNOWN})


def _test_record(
    scan: LogScan,
    test_attempts: dict[str, dict[str, Any]],
    event: object,
    recipient: str,
    record: dict[str, Any],
) -> None:
    if event == "attempt":
        test_attempts[recipient] = record
    elif event == "result":
        attempt = test_attempts.pop(recipient, {})
        replies = record.get("replies")
        if isinstance(replies, dict):
            for address, reply in replies.items():
                merged = {**attempt, **record}  # the attempt's SHA-256, the result's time
                _add_test_send(
                    scan, merged, recipient, str(address), reply if isinstance(reply, dict) else {}
                )


def _add_test_send(
    scan: LogScan, record: dict[str, Any], recipient: str, address: str, reply: dict[str, Any]
) -> None:
    outcome = str(reply.get("outcome", Outcome.UNKNOWN))
    scan.test_send_total += 1
    scan.test_counts[outcome] = scan.test_counts.get(outcome, 0) + 1
    if len(scan.test_sends) < TEST_SEND_LIMIT:
        code = reply.get("code")
        scan.test_sends.append(
            TestSend(
                time=str(record.get("time", "")),
                recipient=recipient,
                address=address,
                outcome=outcome,
                code=code if isinstance(code, int) else None,
                reply=str(reply.get("reply", "")),
                message_id=_optional_str(record.get("message_id")),
                sha256=_optional_str(record.get("sha256")),
            )
        )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------- building the data


def report_data(
    review: Review,
    log_path: Path,
    campaign: Campaign | CampaignHeader,
    clock: Callable[[], datetime],
    *,
    scan: LogScan | None = None,
    list_limit: int = LIST_LIMIT,
    verify_archive: bool = True,
) -> ReportData:
    """What the page shows for `review`: pass the `scan` its history came from to read once.

    Without `scan` the log is read again (a second pass). Recipients are listed one by one,
    in file order, up to `list_limit`. Past it only those needing attention are: unknown
    first, then failed, partial, deferred, pending and those resolved by hand, up to the
    limit; the others are counted per status with the command that lists them.
    """
    if scan is None:
        scan = scan_log(log_path, campaign.id)
    # The status of every recipient once, by the review's own rule (the one behind the rows
    # `campaign log --json` prints); whole rows are built only for those listed.
    counts: dict[str, int] = {}
    entries = review.entries
    total = len(entries)
    states = review.history.recipients
    waiting: dict[int, list[int]] = {}  # listing priority -> positions in the file
    for position, entry in enumerate(entries):
        status = str(review.status_of(entry))
        counts[status] = counts.get(status, 0) + 1
        if status == Status.SENT and _resolved(states.get(entry.id)) is not None:
            status = "resolved"
        priority = _PRIORITY.get(status, _PRIORITY["pending"])
        if total <= list_limit or priority < _PRIORITY[Status.SENT]:
            waiting.setdefault(priority, []).append(position)
    picked: list[int] = []
    for priority in sorted(waiting):
        picked += waiting[priority][: list_limit - len(picked)]
    picked.sort()
    chosen = [entries[position] for position in picked]
    collapsed = dict(counts)  # less each recipient listed, below
    folder = log_path.parent

    def records(entries: Sequence[RosterEntry]) -> list[RecipientRecord]:
        rows = dataclasses.replace(review, entries=entries).rows()
        return [
            _record(row, states.get(row.recipient), folder, scan, verify_archive) for row in rows
        ]

    listed = records(chosen)
    for record in listed:
        collapsed[record.status] -= 1
    # Ids the log sent to that the file no longer holds: the page must not lose them.
    gone = gone_from_the_file(entries, review.history)
    gone_entries = [
        RosterEntry(rid, "", "", tuple(s.address for s in states[rid].addresses))
        for rid in gone[:list_limit]
    ]
    order = [*_STATUS_ORDER, *sorted(set(counts) - set(_STATUS_ORDER))]
    period = (
        (scan.first_time, scan.last_time)
        if scan.first_time is not None and scan.last_time is not None
        else None
    )
    test_order = sorted(scan.test_counts, key=lambda s: (s not in _STATUS_ORDER, s))
    header = campaign if isinstance(campaign, CampaignHeader) else CampaignHeader.of(campaign)
    kept_gone = records(gone_entries)
    unproven = [
        record.id
        for record in (*listed, *kept_gone)
        if record.archive_check in (ArchiveCheck.DIFFERS, ArchiveCheck.MISSING)
    ]
    next_steps = review.next_steps()
    if unproven:
        next_steps.insert(0, unproven_step(folder / "sent", unproven))
    return ReportData(
        campaign=header.id,
        subject=header.subject,
        sender=header.sender,
        period=period,
        counts=tuple((status, counts.get(status, 0)) for status in order),
        total=total,
        next_steps=tuple(next_steps),
        unproven=tuple(unproven),
        notes=tuple([*review.notes, *scan.notes]),
        recipients=tuple(listed),
        gone=tuple(kept_gone),
        gone_total=len(gone),
        collapsed=tuple((s, collapsed[s]) for s in order if collapsed.get(s)),
        test_sends=tuple(scan.test_sends),
        test_send_total=scan.test_send_total,
        test_counts=tuple((s, scan.test_counts[s]) for s in test_order),
        timeline=scan.timeline(),
        log_path=str(log_path),
        log_sha256=scan.sha256,
        log_size=scan.size,
        log_events=scan.events,
        made_at=now_iso(clock()),
        live=review.live,
    )


def unproven_step(archive: Path, recipients: Sequence[str]) -> str:
    """What to do about archived letters that no longer prove what was sent."""
    return (
        f"{len(recipients)} letter(s) in {archive} do not match what the log recorded"
        f" (changed or missing): {listed_ids(recipients)}; the page cannot show what went to"
        " them: put the files back from a backup"
    )


def _record(
    row: RecipientRow,
    state: RecipientState | None,
    folder: Path,
    scan: LogScan,
    verify_archive: bool,
) -> RecipientRecord:
    """One recipient as the page shows it, with its archived letter checked."""
    resolved = _resolved(state)
    status = str(row.status)
    known = state.by_address() if state is not None else {}
    addresses = []
    accepted = []  # when the relay took each address, a bounced one's acceptance included
    for a in row.addresses:
        held = known.get(a.address.casefold())
        taken = held if a.outcome == Outcome.ACCEPTED else None
        if a.outcome == Outcome.BOUNCED and state is not None:
            taken = state.acceptance(a.address)
        # Only a server's reply proves acceptance: a person's reason may quote a queue id.
        if taken is not None and settled_by_hand(taken.code, taken.reply):
            taken = None
        if taken is not None and taken.time:
            accepted.append(taken.time)
        addresses.append(
            AddressOutcome(
                a.address,
                str(a.outcome),
                a.code,
                a.reply,
                held.time if held is not None else "",
                queue_id(taken.reply) if taken is not None else None,
            )
        )
    # From a relay's acceptance only: the last reply may be a refusal, a person's reason or
    # a bounce, whose text anyone who can mail the campaign's mailbox writes.
    last_queue_id = next((a.queue_id for a in addresses if a.queue_id), None)
    check, actual = _check_archive(folder, row.archive, row.sha256, verify_archive)
    return RecipientRecord(
        id=row.recipient,
        name=row.name,
        organisation=row.organisation,
        status=status,
        attempts=row.attempts,
        addresses=tuple(addresses),
        last_code=row.last_code,
        last_reply=row.last_reply,
        queue_id=last_queue_id,
        last_event=row.time,
        accepted_at=max(accepted) if accepted else None,
        message_id=row.message_id,
        sha256=row.sha256,
        archive=row.archive,
        archive_check=check,
        archive_sha256=actual,
        resolved=resolved,
        sent_sha256=None if row.sha256 else scan.unanswered.get(row.recipient),
        replies=row.replies,
        auto_replies=row.auto_replies,
        last_answer=row.last_answer,
    )


# Who is listed first when not everyone can be: what needs a person's attention soonest.
_PRIORITY = {
    status: rank
    for rank, status in enumerate(
        ("unknown", "failed", "partial", "bounced", "sending", "deferred", "pending", "resolved")
    )
}
_PRIORITY[Status.SENT] = len(_PRIORITY)


def _resolved(state: RecipientState | None) -> str | None:
    return state.resolved if state is not None else None


def build_report(options: Options, log_path: Path, *, clock: Callable[[], datetime]) -> ReportData:
    """What `campaign report` shows: the campaign file and the log read (the log once).

    A long campaign file is read in another process while this one reads the log, as
    `campaign log` does: on two cores the two take the time of the longer.
    """
    check_log(log_path)
    size = log_path.stat().st_size
    if options.path.is_file() and options.path.stat().st_size > PARALLEL_READ_BYTES:
        # The other process also hashes the log: it has less to do than the replay here.
        (header, entries, digest), scan = side_by_side(
            partial(_read_and_hash, options, log_path, size),
            partial(scan_log, log_path, None, size=size, hashed=False),
        )
        scan.sha256 = digest
    else:
        header, entries = read_header_and_roster(options)
        scan = scan_log(log_path, None)
    review = build_review(header.id, entries, log_path, scan.history)
    return report_data(review, log_path, header, clock, scan=scan)


PARALLEL_READ_BYTES = 2 * 1024 * 1024


def _read_and_hash(
    options: Options, log_path: Path, size: int
) -> tuple[CampaignHeader, tuple[RosterEntry, ...], str]:
    header, entries = read_header_and_roster(options)
    return header, entries, file_sha256(log_path, size)[0]


def read_header_and_roster(options: Options) -> tuple[CampaignHeader, tuple[RosterEntry, ...]]:
    """What the report needs of the campaign file, in plain values (they cross processes)."""
    source = load_campaign(dataclasses.replace(options, notices=False))
    return CampaignHeader.of(source.campaign), roster(source)


def _check_archive(
    folder: Path, archive: str | None, sha256: str | None, verify: bool
) -> tuple[ArchiveCheck, str | None]:
    if archive is None:
        return ArchiveCheck.NONE, None
    if not verify:
        return ArchiveCheck.NOT_CHECKED, None
    path = Path(archive) if os.path.isabs(archive) else folder / archive
    try:
        actual, _ = file_sha256(path)
    except OSError:
        return ArchiveCheck.MISSING, None
    if actual == sha256:
        return ArchiveCheck.MATCHES, None
    return ArchiveCheck.DIFFERS, actual
