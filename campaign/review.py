"""Reviewing the delivery log: one row per recipient, from the same replay `send` resumes from."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from campaign.display import listed, spreadsheet_cell
from campaign.errors import CampaignError
from campaign.loading import Options, load_campaign
from campaign.models import CampaignFile, Recipient
from campaign.parallel import side_by_side
from campaign.sendlog import (
    LogLock,
    LogReader,
    Outcome,
    RecipientState,
    Replay,
    Status,
    read_records,
    replay,
)

if TYPE_CHECKING:
    from campaign.models import Draft
    from campaign.pipeline import Plan, RunResult

CSV_COLUMNS = (
    "recipient",
    "name",
    "organisation",
    "status",
    "attempts",
    "last_code",
    "last_reply",
    "time",
    "message_id",
    "sha256",
    "archive",
    "replies",
    "auto_replies",
    "last_answer",
    "addresses",
    "address_outcomes",
    "test_sends",
)


@dataclass(frozen=True)
class AddressRow:
    address: str
    outcome: Outcome
    code: int | None
    reply: str


@dataclass(frozen=True)
class RecipientRow:
    recipient: str
    name: str
    organisation: str
    status: Status
    attempts: int
    addresses: tuple[AddressRow, ...]
    last_code: int | None
    last_reply: str
    time: str
    message_id: str | None
    sha256: str | None
    archive: str | None
    replies: int = 0  # a person's answers found by `campaign inbox`
    auto_replies: int = 0
    last_answer: str | None = None
    test_sends: int = 0  # letters sent with --test-to, never counted as sent

    def as_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "name": self.name,
            "organisation": self.organisation,
            "status": self.status,
            "attempts": self.attempts,
            "addresses": [
                {"address": a.address, "outcome": a.outcome, "code": a.code, "reply": a.reply}
                for a in self.addresses
            ],
            "last_code": self.last_code,
            "last_reply": self.last_reply,
            "message_id": self.message_id,
            "time": self.time or None,
            "sha256": self.sha256,
            "archive": self.archive,
            "replies": self.replies,
            "auto_replies": self.auto_replies,
            "last_answer": self.last_answer,
            "test_sends": self.test_sends,
        }

    def as_csv(self) -> dict[str, str]:
        return {
            "recipient": self.recipient,
            "name": self.name,
            "organisation": self.organisation,
            "status": self.status,
            "attempts": str(self.attempts),
            "last_code": "" if self.last_code is None else str(self.last_code),
            "last_reply": self.last_reply,
            "time": self.time,
            "message_id": self.message_id or "",
            "sha256": self.sha256 or "",
            "archive": self.archive or "",
            "replies": str(self.replies),
            "auto_replies": str(self.auto_replies),
            "last_answer": self.last_answer or "",
            "addresses": "; ".join(a.address for a in self.addresses),
            "address_outcomes": "; ".join(
                f"{a.address}: {a.outcome}"
                + (f" {a.code}" if a.code is not None else "")
                + (f" {a.reply}" if a.reply else "")
                for a in self.addresses
            ),
            "test_sends": str(self.test_sends),
        }


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """What the review shows of a recipient from the campaign file."""

    id: str
    name: str
    organisation: str
    addresses: tuple[str, ...]


def roster(source: CampaignFile) -> tuple[RosterEntry, ...]:
    return tuple(
        RosterEntry(r.id, r.name, _organisation(r), r.addresses) for r in source.recipients
    )


def load_roster(options: Options) -> tuple[str, tuple[RosterEntry, ...]]:
    """The campaign id and its recipients, read and checked like every command reads them."""
    source = load_campaign(replace(options, notices=False))
    return source.campaign.id, roster(source)


# A campaign file this large is read in a second process while this one replays the log.
PARALLEL_READ_BYTES = 2 * 1024 * 1024


def load_roster_and_log(
    options: Options, log_path: Path
) -> tuple[str, tuple[RosterEntry, ...], Replay]:
    """The campaign id, its recipients and the log replayed (a large file and log side by side)."""
    if options.path.is_file() and options.path.stat().st_size > PARALLEL_READ_BYTES:
        (campaign_id, entries), history = side_by_side(
            partial(load_roster, options), partial(replay, log_path, None)
        )
    else:
        campaign_id, entries = load_roster(options)
        history = replay(log_path, None)
    return campaign_id, entries, history


@dataclass
class Review:
    """Where every letter stands: the file's recipients, in order, and what the log says."""

    campaign: str
    log_path: Path
    entries: Sequence[RosterEntry]
    history: Replay
    notes: list[str] = field(default_factory=list)
    live: str | None = None
    _live_runs: frozenset[str] = frozenset()

    def rows(self) -> Iterator[RecipientRow]:
        """One row per recipient, built as it is read: a long review never sits in memory."""
        for entry in self.entries:
            yield _row(entry, self.history.recipients.get(entry.id), self._live_runs)

    def status_of(self, entry: RosterEntry) -> Status:
        state = self.history.recipients.get(entry.id)
        if state is None:
            return Status.PENDING
        return state.status(entry.addresses, self._live_runs)

    def counts(self) -> Counter[Status]:
        return Counter(self.status_of(entry) for entry in self.entries)

    def filtered(
        self, statuses: Sequence[str], recipients: Sequence[str], *, replied: bool = False
    ) -> Iterator[RecipientRow]:
        for row in self.rows():
            if (
                (not statuses or row.status in statuses)
                and (not recipients or row.recipient in recipients)
                and (not replied or row.replies > 0)
            ):
                yield row

    def _held_back(self) -> set[str]:
        """Recipients for whom `campaign send` refuses to run: an address it would offer
        them got this campaign's letter under another id (see reached_under_other_ids)."""
        planned = {
            address.casefold(): entry.id
            for entry in self.entries
            for address in self._to_offer(entry)
        }
        return {now for _, now, _ in self.history.reached_under_other_ids(planned)}

    def _to_offer(self, entry: RosterEntry) -> Sequence[str]:
        state = self.history.recipients.get(entry.id)
        if state is None:
            return entry.addresses
        return state.to_offer(entry.addresses, retry_unknown=False)

    def _bounce_reason(self) -> str:
        reason = _most_common_bounce(self)
        return f" ({reason[:120]})" if reason else ""

    def test_sends(self) -> int:
        """Letters sent with --test-to to anyone in the file (not counted as sent)."""
        recipients = self.history.recipients
        return sum(state.tests for entry in self.entries if (state := recipients.get(entry.id)))

    def next_steps(self) -> list[str]:
        statuses = {entry.id: self.status_of(entry) for entry in self.entries}
        counts = Counter(statuses.values())
        held = self._held_back() if self.history.recipients else set()
        steps = []
        # While anyone is held back, `campaign send` refuses to run at all, and
        # --allow-changes would send them a second letter: the others go with --only.
        meanwhile = " (those held back aside, with --only)" if held else ""
        allow_changes = "`campaign send --allow-changes" + (" --only ID`" if held else "`")
        if held:
            steps.append(
                f"{len(held)} held back: an address of theirs was already sent this campaign's"
                f" letter under another recipient id (renamed?): {listed(sorted(held))};"
                " `campaign send` refuses to run until the earlier id is given back or the"
                " address taken out (--allow-changes only if a second letter is meant)"
            )
        if counts[Status.UNKNOWN]:
            steps.append(
                f"{counts[Status.UNKNOWN]} unknown: check with the server's operator, then"
                " `campaign resolve ID --as sent|pending --reason ...`, or resend with"
                f" `campaign send --retry-unknown`{meanwhile}"
            )
        deferred = sum(1 for rid, s in statuses.items() if s == Status.DEFERRED and rid not in held)
        if deferred:
            steps.append(f"{deferred} deferred: run `campaign send` again to retry them{meanwhile}")
        pending = sum(1 for rid, s in statuses.items() if s == Status.PENDING and rid not in held)
        if pending:
            steps.append(f"{pending} pending: `campaign send` will send them{meanwhile}")
        if counts[Status.BOUNCED]:
            steps.append(
                f"{counts[Status.BOUNCED]} bounced{self._bounce_reason()}: correct the address"
                f" in the file and {allow_changes} (the To line changes; only the"
                " new address gets the letter)"
            )
        if counts[Status.FAILED]:
            steps.append(
                f"{counts[Status.FAILED]} failed: the server refused their addresses for good;"
                f" correct them in the file and {allow_changes}, or see"
                " `campaign log --history ID`"
            )
        if counts[Status.PARTIAL]:
            steps.append(
                f"{counts[Status.PARTIAL]} partial: some of their addresses were refused for"
                f" good or bounced; correct those in the file and {allow_changes}"
                " (only the new addresses get the letter), or see `campaign log --history ID`"
            )
        return steps


def _most_common_bounce(review: Review) -> str:
    """The most frequent DSN status among the addresses of recipients counted bounced, with
    the first such reason: `5.1.1: 550 5.1.1 <a@b>: User unknown`."""
    statuses: Counter[str] = Counter()
    first_reason: dict[str, str] = {}
    for entry in review.entries:
        state = review.history.recipients.get(entry.id)
        if state is None or review.status_of(entry) != Status.BOUNCED:
            continue
        for address in entry.addresses:
            address_state = state.address_state(address)
            if address_state is not None and address_state.outcome == Outcome.BOUNCED:
                reason = address_state.reply.removeprefix("bounced").strip().removeprefix(":")
                reason = reason.strip()
                status = reason.split(":", 1)[0].strip() if ":" in reason else reason
                statuses[status] += 1
                first_reason.setdefault(status, reason)
    return first_reason[statuses.most_common(1)[0][0]] if statuses else ""


def _organisation(recipient: Recipient) -> str:
    for key in ("organisation", "organization", "title", "body"):
        value = recipient.data.get(key)
        if isinstance(value, str):
            return value
    return ""


def _row(
    recipient: RosterEntry, state: RecipientState | None, live: frozenset[str]
) -> RecipientRow:
    if state is None:
        state = RecipientState(recipient.id)
    addresses = []
    known = state.by_address()
    current = {a.casefold() for a in recipient.addresses}
    retired = (s.address for s in state.addresses if s.address.casefold() not in current)
    for address in (*recipient.addresses, *retired):
        address_state = known.get(address.casefold())
        if address_state is None:
            addresses.append(AddressRow(address, Outcome.PENDING, None, ""))
        else:
            addresses.append(
                AddressRow(address, address_state.outcome, address_state.code, address_state.reply)
            )
    return RecipientRow(
        recipient=recipient.id,
        name=recipient.name,
        organisation=recipient.organisation,
        status=state.status(recipient.addresses, live),
        attempts=state.attempts,
        addresses=tuple(addresses),
        last_code=state.last_code,
        last_reply=state.last_reply,
        time=state.time,
        message_id=state.message_id,
        sha256=state.sha256,
        archive=state.archive,
        replies=state.replies,
        auto_replies=state.auto_replies,
        last_answer=state.last_answer,
        test_sends=state.tests,
    )


def check_log(path: Path) -> None:
    """Explain in one sentence why there is nothing to review, if so."""
    if not path.exists():
        raise CampaignError(
            "there is no send log here yet: nothing has been sent for this campaign",
            path=path,
            hint="`campaign send` writes it; pass --log PATH if it is elsewhere",
        )
    if path.stat().st_size == 0:
        raise CampaignError(
            "the send log is empty: no run has recorded anything yet",
            path=path,
        )


def build_review(
    campaign_id: str,
    entries: Sequence[RosterEntry],
    path: Path,
    history: Replay | None = None,
) -> Review:
    """One row per recipient of the file, in file order, never-attempted ones as pending."""
    if history is None:
        check_log(path)
        history = replay(path, None)
    if history.campaign is not None and history.campaign != campaign_id:
        raise CampaignError(
            f"this log was written for campaign '{history.campaign}', not '{campaign_id}'",
            path=path,
            hint="pass --log with this campaign's log, or --file with that campaign's file",
        )
    holder = LogLock(path).held_by_other()
    live = frozenset(history.runs[-1:]) if holder else frozenset()
    notes = list(history.notes)
    if not path.exists():
        notes.append(f"there is no send log at {path} yet: nothing has been sent")
    if history.other_campaigns:
        notes.append(
            f"the log also holds records of {', '.join(sorted(history.other_campaigns))};"
            " they were ignored"
        )
    gone = gone_from_the_file(entries, history)
    if gone:
        notes.append(
            f"{len(gone)} recipient(s) the log has sent to are no longer in the campaign file:"
            f" {listed(gone, 10)}; `campaign log --history ID` shows what each was sent"
        )
    return Review(campaign_id, path, entries, history, notes, holder, live)


def gone_from_the_file(entries: Sequence[RosterEntry], history: Replay) -> list[str]:
    """Ids the log has tried to send to that the campaign file no longer holds (renamed or
    taken out): their records stay in the log, and are not to be lost from sight."""
    listed = {entry.id for entry in entries}
    return [
        recipient
        for recipient, state in history.recipients.items()
        if recipient not in listed and (state.attempts or state.delivered_somewhere)
    ]


def history_of(path: Path, recipient: str) -> Iterator[dict[str, Any]]:
    """Every event about one recipient, in log order."""
    for _, record in read_records(path):
        if record.get("recipient") == recipient:
            yield record


def as_json_lines(rows: Iterable[RecipientRow]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row.as_json(), ensure_ascii=False)


def write_csv(stream: IO[str], rows: Iterable[RecipientRow]) -> None:
    """The rows as CSV with a header row, written as they come.

    Each cell reads as text in a spreadsheet: a leading =, +, -, @, TAB or CR is defused
    with a quote (OWASP's rule for CSV injection) and control characters are escaped.
    """
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: spreadsheet_cell(value) for key, value in row.as_csv().items()})


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One recipient of a finished run: status, addresses tried, what the server said."""

    recipient: str
    status: Status
    addresses: tuple[str, ...]
    replies: tuple[str, ...]


SUMMARY_ROWS = 30


def send_summary(
    plan: Plan, history: Replay, result: RunResult, *, test: bool, limit: int = SUMMARY_ROWS
) -> tuple[list[SummaryRow], int]:
    """The rows of a run's summary, and how many rows were left out.

    A large run lists what needs attention first; `campaign log` lists everyone.
    """
    rows: list[SummaryRow] = []
    left_out = 0
    large = len(plan.messages) > limit
    for message in plan.messages:
        rid = message.draft.recipient_id
        status = result.statuses.get(rid, Status.PENDING)
        if large and status == Status.SENT:
            left_out += 1
            continue
        if len(rows) >= limit:
            left_out += 1
            continue
        state = history.recipients.get(rid)
        replies = []
        if state is not None and not test:
            for address in message.addresses:
                address_state = state.address_state(address)
                if address_state is not None:
                    code = f"{address_state.code} " if address_state.code is not None else ""
                    replies.append(f"{address}: {code}{address_state.reply}")
        rows.append(SummaryRow(rid, status, message.addresses, tuple(replies)))
    return rows, left_out


@dataclass(frozen=True, slots=True)
class DryRunRow:
    """One recipient in a dry run: the addresses a send would try, and those it skips."""

    recipient: str
    status: Status
    to_try: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (address, why)


def _why_skipped(state: RecipientState | None, address: str) -> str:
    known = state.address_state(address) if state is not None else None
    if known is None:
        return "not chosen"
    if known.outcome == Outcome.ACCEPTED:
        return "already accepted"
    if known.outcome == Outcome.UNKNOWN or (state is not None and state.open_attempt):
        return "unknown: resolve it first, or pass --retry-unknown"
    code = f"{known.code} " if known.code is not None else ""
    return f"{known.outcome}: {code}{known.reply}".strip()


def dry_run_rows(
    plan: Plan, history: Replay, drafts: Iterable[Draft], only: Collection[str] | None
) -> list[DryRunRow]:
    """Every chosen recipient, in file order, with what a send would do about each address."""
    planned = {m.draft.recipient_id: m for m in plan.messages}
    rows = []
    for draft in drafts:
        rid = draft.recipient_id
        if only and rid not in only:
            continue
        state = history.recipients.get(rid)
        message = planned.get(rid)
        to_try = message.addresses if message is not None else ()
        skipped = tuple(
            (address, _why_skipped(state, address))
            for address in draft.addresses
            if address not in to_try
        )
        status = state.status(draft.addresses) if state is not None else Status.PENDING
        rows.append(DryRunRow(rid, status, to_try, skipped))
    return rows


class LogFollower:
    """Folds a growing log into the same replay `send` uses, a poll at a time."""

    def __init__(self, path: Path) -> None:
        self.reader = LogReader(path)
        self.history = Replay()

    def poll(self) -> bool:
        """Fold in what was appended since the last call; True when anything was."""
        changed = False
        for _, record in self.reader.records(final=False):
            self.history.fold(record)
            changed = True
        self.history.notes[:] = self.reader.notes
        return changed
