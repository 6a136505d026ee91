"""The send log: append-only JSON Lines, the single source of truth for what went to whom.

Every line describes itself (`time`, `event`, `campaign`, ...). An `attempt` is made durable
before the message data goes out and its `result` is appended after, so a crash at any
instant leaves attempts without results, which replay reads as `unknown`, never as unsent.
The same replay feeds `campaign send` (what to do next) and `campaign log` (what to show).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from campaign.display import visible
from campaign.errors import CampaignError, RunRefused
from campaign.safefiles import ensure_folder, open_private, refuse_symlink

Record = dict[str, Any]


class Status(StrEnum):
    """A recipient's status, in the order a person reads them."""

    SENT = "sent"
    PARTIAL = "partial"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    PENDING = "pending"
    SENDING = "sending"
    BOUNCED = "bounced"  # accepted by the relay, then returned by the recipient's server


class Outcome(StrEnum):
    """What became of one address of a letter."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    DEFERRED = "deferred"
    PENDING = "pending"
    UNKNOWN = "unknown"
    BOUNCED = "bounced"  # accepted, then a delivery status notification said it failed


class Event(StrEnum):
    """The kinds of record in the send log."""

    RUN_START = "run-start"
    PLANNED = "planned"
    ATTEMPT = "attempt"
    RESULT = "result"
    RUN_END = "run-end"
    RESOLVE = "resolve"
    LOG_REPAIRED = "log-repaired"
    PACE = "pace"  # the run's pace changed, and why
    POSTPONED = "postponed"  # --max-wait passed: this letter was left for a later run
    # What came back to the campaign's mailbox (`campaign inbox`):
    BOUNCE = "bounce"  # a delivery status notification: it failed there
    DELAYED = "delayed"  # a delivery status notification: still trying (a note)
    AUTO_REPLY = "auto-reply"  # an out-of-office or other automatic answer
    REPLY = "reply"  # a person's answer


INBOUND_EVENTS = frozenset({Event.BOUNCE, Event.DELAYED, Event.AUTO_REPLY, Event.REPLY})
# The fields of an inbound event, besides its recipient, archive and source.
INBOUND_FIELDS = (
    "address",
    "message_id",
    "matched_by",
    "inbound",
    "inbound_message_id",
    "inbound_date",
    "from",
    "subject",
    "sha256",
    "size",
    "evidence",
    "action",
    "status",
    "diagnostic",
    "reported_recipient",
    "remote_mta",
    "reporting_mta",
)


def now_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class AddressState:
    address: str
    outcome: Outcome = Outcome.PENDING
    code: int | None = None
    reply: str = ""
    time: str = ""


def status_of(outcomes: Collection[Outcome]) -> Status:
    """A recipient's status from its addresses' outcomes (no attempt left open)."""
    if not outcomes or all(o == Outcome.PENDING for o in outcomes):
        return Status.PENDING
    if Outcome.UNKNOWN in outcomes:
        return Status.UNKNOWN
    if all(o == Outcome.ACCEPTED for o in outcomes):
        return Status.SENT
    if Outcome.DEFERRED in outcomes or Outcome.PENDING in outcomes:
        return Status.DEFERRED
    if Outcome.ACCEPTED in outcomes:
        return Status.PARTIAL
    if all(o == Outcome.BOUNCED for o in outcomes):
        return Status.BOUNCED
    return Status.FAILED


@dataclass(slots=True)
class Answers:
    """What came back for a recipient: answers counted, the latest one's date, and the
    acceptance each bounce replaced."""

    replies: int = 0  # a person's
    auto_replies: int = 0
    latest: str | None = None
    # A bounced address's acceptance (by the address folded to lower case), as it was
    # before the bounce replaced it: the relay's 250 (with its queue id) and when, still
    # the proof that the letter went out.
    acceptances: dict[str, AddressState] = field(default_factory=dict)


@dataclass(slots=True)
class RecipientState:
    """Everything the log says about one recipient, folded in order."""

    recipient: str
    # A tuple, not a dict keyed by address: a recipient has a few addresses at most, and
    # at 100,000 recipients the dicts took 7.6 MB of a send's peak memory.
    addresses: tuple[AddressState, ...] = ()
    attempts: int = 0
    open_attempt: str | None = None  # the run id of an attempt with no result yet
    message_id: str | None = None
    content_hash: str | None = None
    sha256: str | None = None
    archive: str | None = None
    last_code: int | None = None
    last_reply: str = ""
    time: str = ""
    resolved: str | None = None
    attempt_sha256: str | None = None  # the bytes of the last attempt, sent or not
    tests: int = 0  # test sends (--test-to): shown apart, never counted as sent
    answers: Answers | None = None  # None until one came back: most recipients never answer

    @property
    def replies(self) -> int:
        return self.answers.replies if self.answers else 0

    @property
    def auto_replies(self) -> int:
        return self.answers.auto_replies if self.answers else 0

    @property
    def last_answer(self) -> str | None:
        return self.answers.latest if self.answers else None

    def acceptance(self, address: str) -> AddressState | None:
        """How the relay took `address` before it bounced (None if it did not, or no bounce)."""
        return self.answers.acceptances.get(address.casefold()) if self.answers else None

    def forget_acceptance(self, address: str) -> None:
        """A new answer for `address`: an earlier letter's acceptance proves nothing of it."""
        if self.answers:
            self.answers.acceptances.pop(address.casefold(), None)

    def status(
        self, current: Sequence[str] | None = None, live_runs: frozenset[str] = frozenset()
    ) -> Status:
        """The status, counting the addresses the file gives now (`current`), when given.

        A corrected address replaces the retired one: the retired one's outcome stays in
        the history but no longer counts.
        """
        if self.open_attempt is not None:
            return Status.SENDING if self.open_attempt in live_runs else Status.UNKNOWN
        if current is None:
            return status_of([state.outcome for state in self.addresses])
        known = self.by_address()
        return status_of(
            [
                known[folded].outcome if (folded := a.casefold()) in known else Outcome.PENDING
                for a in current
            ]
        )

    def by_address(self) -> dict[str, AddressState]:
        """The states by address folded to lower case, as the loader compares addresses:
        `Aprk@akorda.kz` in the file now is the `aprk@akorda.kz` the letter went to."""
        return {state.address.casefold(): state for state in self.addresses}

    def address_state(self, address: str) -> AddressState | None:
        return self.by_address().get(address.casefold())

    def add_addresses(self, addresses: Iterable[str]) -> list[AddressState]:
        """The states of `addresses`, pending ones added for those the log had not named.

        One pass over the known states per record, not one per address it names: a log
        that names a thousand addresses a record is still read in reasonable time.
        """
        known = self.by_address()
        found = []
        added = []
        for address in addresses:
            state = known.get(folded := address.casefold())
            if state is None:
                state = known[folded] = AddressState(address)
                added.append(state)
            found.append(state)
        if added:
            self.addresses = (*self.addresses, *added)
        return found

    def to_offer(self, current: Sequence[str], *, retry_unknown: bool) -> tuple[str, ...]:
        """Of the addresses the file gives now (`current`), those a new run offers the letter
        to: every one the log has not named, and of the others those not settled (none of
        them while the letter is unknown, unless `retry_unknown`)."""
        unknown = self.open_attempt is not None or any(
            state.outcome == Outcome.UNKNOWN for state in self.addresses
        )
        settled = (Outcome.ACCEPTED, Outcome.REFUSED, Outcome.BOUNCED)
        known = self.by_address()
        return tuple(
            address
            for address in current
            if (state := known.get(address.casefold())) is None
            or (state.outcome not in settled and (retry_unknown or not unknown))
        )

    @property
    def delivered_somewhere(self) -> bool:
        """True when some server may hold this letter: accepted or unknown."""
        return self.open_attempt is not None or any(
            state.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN, Outcome.BOUNCED)
            for state in self.addresses
        )


@dataclass
class Replay:
    """The log folded into per-recipient state, plus what the reader noticed on the way."""

    campaign: str | None = None
    recipients: dict[str, RecipientState] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    events: int = 0
    runs: list[str] = field(default_factory=list)
    last_time: str = ""
    other_campaigns: set[str] = field(default_factory=set)
    first_attempt: str | None = None  # when the campaign's first letter was tried
    inbound: set[str] = field(default_factory=set)  # what `campaign inbox` recorded already

    def reached_under_other_ids(self, planned: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """(address, id now, id it went under) for each address of `planned` (address folded
        to lower case -> the recipient id it is planned under) that this campaign's letter
        reached, or may have reached, under another recipient id: a recipient renamed, or an
        address moved to someone else."""
        reached = (Outcome.ACCEPTED, Outcome.UNKNOWN, Outcome.BOUNCED)
        return [
            (address_state.address, planned[address_state.address.casefold()], state.recipient)
            for state in self.recipients.values()
            for address_state in state.addresses
            if planned.get(address_state.address.casefold(), state.recipient) != state.recipient
            and (
                address_state.outcome in reached
                # An attempt left open may have reached any address it offered: not one
                # refused before it.
                or (state.open_attempt is not None and address_state.outcome != Outcome.REFUSED)
            )
        ]

    def fold(self, record: dict[str, Any]) -> None:
        """Apply a record read from a log: the first one names the log's campaign."""
        found = record.get("campaign")
        if self.campaign is None:
            self.campaign = found
        elif found is not None and found != self.campaign:
            self.other_campaigns.add(str(found))
            return
        self.apply(record)

    def state(self, recipient: str) -> RecipientState:
        found = self.recipients.get(recipient)
        if found is None:
            found = self.recipients[recipient] = RecipientState(recipient)
        return found

    def apply(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        self.events += 1
        time = record.get("time", self.last_time)
        self.last_time = time
        if event == Event.RUN_START:
            self.runs.append(str(record.get("run")))
            return
        recipient = record.get("recipient")
        if not isinstance(recipient, str):
            return
        if record.get("test"):
            if event == Event.ATTEMPT:
                self.state(recipient).tests += 1
            return
        state = self.state(recipient)
        state.time = time
        if event in INBOUND_EVENTS:
            self._apply_inbound(state, record, time)
            return
        if event == Event.ATTEMPT or event == Event.PLANNED:
            if event == Event.ATTEMPT:
                if self.first_attempt is None:
                    self.first_attempt = time
                state.attempts = max(state.attempts, int(record.get("attempt", 0)))
                state.open_attempt = str(record.get("run"))
                state.message_id = record.get("message_id", state.message_id)
                state.attempt_sha256 = record.get("sha256")
            state.content_hash = record.get("content_hash", state.content_hash)
            state.add_addresses(record.get("all_addresses") or record.get("addresses", ()))
        elif event == Event.RESULT:
            self._apply_result(state, record, time)
        elif event == Event.RESOLVE:
            self._apply_resolve(state, record)
        elif event == Event.POSTPONED:
            for address_state in state.add_addresses(record.get("addresses", ())):
                if address_state.outcome == Outcome.PENDING:
                    address_state.outcome = Outcome.DEFERRED
                    address_state.reply = record.get("reason", "")
                    address_state.time = time
            state.last_reply = record.get("reason", "")
            state.last_code = None

    def _apply_inbound(self, state: RecipientState, record: dict[str, Any], time: str) -> None:
        """What came back: a bounce marks its address; replies are counted."""
        self.inbound.add(inbound_key(record))
        event = record.get("event")
        if event == Event.BOUNCE:
            address = record.get("address")
            known = state.address_state(address) if isinstance(address, str) else None
            if known is not None and known.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN):
                if known.outcome == Outcome.ACCEPTED:
                    answers = state.answers = state.answers or Answers()
                    answers.acceptances[known.address.casefold()] = replace(known)
                else:
                    state.forget_acceptance(known.address)
                known.outcome = Outcome.BOUNCED
                known.code = None
                known.reply = bounce_text(record)
                known.time = time
                state.last_reply, state.last_code = known.reply, None
        elif event in (Event.REPLY, Event.AUTO_REPLY):
            dated = record.get("inbound_date") or time
            answers = state.answers = state.answers or Answers()
            if event == Event.REPLY:
                # A person's latest reply; an automatic one only while no person has answered.
                if answers.replies == 0 or _is_later(dated, answers.latest):
                    answers.latest = dated
                answers.replies += 1
            else:
                answers.auto_replies += 1
                if answers.replies == 0 and _is_later(dated, answers.latest):
                    answers.latest = dated

    @staticmethod
    def _apply_resolve(state: RecipientState, record: dict[str, Any]) -> None:
        """Settled by a person: as sent (unknown only), or as pending (to be sent again)."""
        settled_as = record.get("as")
        note = f"{SETTLED_BY_HAND}{settled_as}: {record.get('reason', '')}"
        state.open_attempt = None
        state.resolved = f"{settled_as}: {record.get('reason', '')}"
        if settled_as == Status.SENT:
            unsettled: tuple[Outcome, ...] = (Outcome.UNKNOWN, Outcome.PENDING, Outcome.DEFERRED)
            if record.get("sha256"):
                state.sha256 = record["sha256"]
                state.archive = record.get("archive")
        else:
            unsettled = (Outcome.UNKNOWN, Outcome.DEFERRED, Outcome.REFUSED, Outcome.BOUNCED)
        for address_state in state.addresses:
            if address_state.outcome in unsettled:
                state.forget_acceptance(address_state.address)
                address_state.outcome = (
                    Outcome.ACCEPTED if settled_as == Status.SENT else Outcome.PENDING
                )
                address_state.reply = note
                address_state.code = None
        state.last_reply = note
        state.last_code = None

    @staticmethod
    def _apply_result(state: RecipientState, record: dict[str, Any], time: str) -> None:
        state.open_attempt = None
        shown: AddressState | None = None
        replies: dict[str, dict[str, Any]] = record.get("replies") or {}
        states = state.add_addresses(replies)
        for address_state, reply in zip(states, replies.values(), strict=True):
            state.forget_acceptance(address_state.address)
            address_state.outcome = Outcome(reply.get("outcome", address_state.outcome))
            address_state.code = reply.get("code")
            address_state.reply = reply.get("reply", "")
            address_state.time = time
            # The reply to show is a refusal if there is one: it is what needs reading.
            if shown is None or (
                shown.outcome == Outcome.ACCEPTED and address_state.outcome != Outcome.ACCEPTED
            ):
                shown = address_state
        if shown is not None:
            state.last_code = shown.code
            state.last_reply = shown.reply
        if record.get("archive"):
            state.archive = record["archive"]
            state.sha256 = record.get("sha256")


# Every record read back is checked by shape and type before anything uses it: the log is
# a record, not a command, and a line edited by hand must not decide what is sent.
MAX_TEXT = 16_384
MAX_LINE = 1 << 20
MAX_ADDRESSES = 1_000
_MAX_INT = 1 << 53
_HEX = frozenset("0123456789abcdef")


def _text(value: Any) -> bool:
    return type(value) is str and len(value) <= MAX_TEXT


def _short(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 256


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < _MAX_INT


def _positive(value: Any) -> bool:
    return type(value) is int and 0 < value < _MAX_INT


def _flag(value: Any) -> bool:
    return type(value) is bool


def _digest(value: Any) -> bool:
    return type(value) is str and len(value) == 64 and _HEX.issuperset(value)


def _addresses(value: Any) -> bool:
    return (
        type(value) is list
        and len(value) <= MAX_ADDRESSES
        and all(type(a) is str and 0 < len(a) <= 320 for a in value)
    )


def _replies(value: Any) -> bool:
    if type(value) is not dict or len(value) > MAX_ADDRESSES:
        return False
    for address, reply in value.items():
        if len(address) > 320 or type(reply) is not dict or reply.keys() != _REPLY_KEYS:
            return False
        code = reply["code"]
        if reply["outcome"] not in _OUTCOMES or not _text(reply["reply"]):
            return False
        if code is not None and not (type(code) is int and 100 <= code < 600):
            return False
    return True


def _counts(value: Any) -> bool:
    return type(value) is dict and all(k in _STATUSES and _count(n) for k, n in value.items())


def _optional_text(value: Any) -> bool:
    return value is None or _text(value)


def _settled(value: Any) -> bool:
    return value in (Status.SENT, Status.PENDING)


_OUTCOMES = frozenset(Outcome)
_STATUSES = frozenset(Status)
_REPLY_KEYS = {"outcome", "code", "reply"}
_COMMON = {"time": _short, "event": _short, "campaign": _short}
_SHAPES: dict[str, tuple[dict[str, Callable[[Any], bool]], frozenset[str]]] = {}


def _shape(event: Event, required: dict[str, Callable[[Any], bool]], **optional: Any) -> None:
    _SHAPES[event] = ({**_COMMON, **required, **optional}, frozenset({*_COMMON, *required}))


_shape(
    Event.RUN_START,
    {"run": _short, "pid": _count, "transport": _text, "planned": _count, "test": _flag},
)
_shape(
    Event.PLANNED,
    {"run": _short, "recipient": _short, "addresses": _addresses, "content_hash": _digest},
)
_shape(
    Event.ATTEMPT,
    {
        "run": _short,
        "recipient": _short,
        "addresses": _addresses,
        "all_addresses": _addresses,
        "message_id": _text,
        "attempt": _positive,
        "content_hash": _digest,
        "sha256": _digest,
        "size": _count,
        "transport": _text,
    },
    test=_flag,
)
_shape(
    Event.RESULT,
    {
        "run": _short,
        "recipient": _short,
        "attempt": _positive,
        "message_id": _text,
        "replies": _replies,
        "status": lambda v: v in _STATUSES,
        "transport": _text,
    },
    archive=_text,
    sha256=_digest,
    test=_flag,
)
_shape(Event.RUN_END, {"run": _short, "counts": _counts, "stopped": _optional_text})
_shape(
    Event.RESOLVE,
    {"recipient": _short, "reason": _text, "as": _settled},
    by=_text,
    sha256=_digest,
    archive=_text,
)
_shape(Event.LOG_REPAIRED, {"torn_line": _positive})


def _rate(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and 0 <= value < 1e9)


_shape(
    Event.PACE,
    {
        "run": _short,
        "per_minute": _rate,
        "connections": _positive,
        "before_per_minute": _rate,
        "before_connections": _positive,
        "signal": _short,
        "reply": _text,
        "message": _text,
    },
)
_shape(
    Event.POSTPONED,
    {"run": _short, "recipient": _short, "addresses": _addresses, "reason": _text},
)
for _inbound in INBOUND_EVENTS:
    _shape(
        _inbound,
        {
            "recipient": _short,
            "inbound": _text,
            "sha256": _digest,
            "size": _count,
            "archive": _text,
            "source": _text,
            "message_id": _text,
        },
        **{
            name: _optional_text
            for name in INBOUND_FIELDS
            if name not in ("inbound", "sha256", "size", "message_id")
        },
    )


def record_problem(record: Any) -> str | None:
    """What is wrong with a record read back from a log, or None when it has a known shape."""
    if type(record) is not dict:
        return "it is not a JSON object"
    event = record.get("event")
    shape = _SHAPES.get(event) if type(event) is str else None
    if shape is None:
        return f"it has no known event ({visible(str(event)[:40])})"
    checks, required = shape
    for key, value in record.items():
        check = checks.get(key)
        if check is None:
            return f"it has an unknown field '{visible(key[:40])}'"
        try:
            fits = check(value)
        except TypeError:  # a list or an object where a name was expected: unhashable
            fits = False
        if not fits:
            return f"its field '{key}' is not what a {event} record holds"
    if not required.issubset(record):
        missing = sorted(required.difference(record))
        return f"it lacks the field(s) {', '.join(missing)}"
    return None


class LogFormatError(CampaignError):
    """The log cannot be read as a send log."""


class LogReader:
    """Reads a log as a stream of records, from where it stopped: once, or as it grows.

    Memory stays bounded by the chunk size, whatever the log's length. A line that is not
    a JSON record is tolerated only where a crash leaves one: as the last line, or right
    before the `log-repaired` record the next run writes; anywhere else it is refused.
    """

    CHUNK = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []
        self._offset = 0
        self._partial = b""
        self._line = 0
        self._bad_line: int | None = None

    def records(self, *, final: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) for every complete line appended since the last call.

        With `final`, the log is taken as ended: a last line cut short is noted, not kept.
        """
        if not self.path.exists():
            return
        refuse_symlink(self.path)
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            while chunk := handle.read(self.CHUNK):
                self._offset += len(chunk)
                lines = (self._partial + chunk).split(b"\n")
                self._partial = lines.pop()
                if len(self._partial) > MAX_LINE:
                    raise LogFormatError(
                        f"line {self._line + len(lines) + 1} is longer than any record",
                        path=self.path,
                        line=self._line + len(lines) + 1,
                    )
                for raw in lines:
                    self._line += 1
                    record = self._record(raw)
                    if record is not None:
                        yield self._line, record
        if final:
            torn = self._line + 1 if self._partial.strip() else self._bad_line
            if torn is not None:
                self.notes.append(
                    f"the last line ({torn}) was cut short, probably by a crash; it was ignored"
                )
            self._partial, self._bad_line = b"", None

    def _record(self, raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        record = _parsed(raw)
        if record is not None:
            problem = record_problem(record)
            # A record of a known shape is shallow: this walk cannot go deep.
            escaped = b"\\ud" in raw or b"\\uD" in raw
            if problem is None and escaped and _holds_lone_surrogate(record):
                problem = "it holds text that is not Unicode (a lone surrogate escape)"
            if problem is not None:
                raise LogFormatError(
                    f"line {self._line} is not a record campaign wrote: {problem}",
                    path=self.path,
                    line=self._line,
                    hint="the log may have been edited by hand; restore it from a backup",
                )
        if self._bad_line is not None:
            if record is None or record.get("event") != Event.LOG_REPAIRED:
                raise LogFormatError(
                    f"line {self._bad_line} is not a valid JSON record; the log may have been"
                    " edited by hand",
                    path=self.path,
                    line=self._bad_line,
                    hint="restore it from a backup, or move it aside to start a new log",
                )
            self.notes.append(f"line {self._bad_line} was cut short by a crash and was ignored")
            self._bad_line = None
            return None
        if record is None:
            self._bad_line = self._line
            return None
        return record if record.get("event") != Event.LOG_REPAIRED else None


def _parsed(raw: bytes) -> dict[str, Any] | None:
    """A line read as a record at all (its shape is checked apart), or None."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and "event" in record else None


def _holds_lone_surrogate(record: dict[str, Any]) -> bool:
    """Whether JSON read back holds a string no UTF-8 output could carry (`"\\ud800"`)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every record of a finished log, in order."""
    return LogReader(path).records(final=True)


def replay(path: Path, campaign_id: str | None = None) -> Replay:
    """Fold the log at `path` (missing: empty) into per-recipient state, as one stream."""
    result = Replay(campaign=campaign_id)
    reader = LogReader(path)
    for _, record in reader.records(final=True):
        result.fold(record)
    result.notes.extend(reader.notes)
    return result


# The records, one function each: the send pipeline and bench/genlog.py write these shapes.


def run_start_record(*, run: str, pid: int, transport: str, planned: int, test: bool) -> Record:
    return {
        "event": Event.RUN_START,
        "run": run,
        "pid": pid,
        "transport": transport,
        "planned": planned,
        "test": test,
    }


def planned_record(
    *, run: str, recipient: str, addresses: Sequence[str], content_hash: str
) -> Record:
    """Every recipient's letter as of a run: a later change is then seen for all of them."""
    return {
        "event": Event.PLANNED,
        "run": run,
        "recipient": recipient,
        "addresses": list(addresses),
        "content_hash": content_hash,
    }


def attempt_record(
    *,
    run: str,
    recipient: str,
    addresses: Sequence[str],
    all_addresses: Sequence[str],
    message_id: str,
    attempt: int,
    content_hash: str,
    sha256: str,
    size: int,
    transport: str,
    test: bool = False,
) -> Record:
    """Written and made durable before the message data leaves."""
    record: Record = {
        "event": Event.ATTEMPT,
        "run": run,
        "recipient": recipient,
        "addresses": list(addresses),
        "all_addresses": list(all_addresses),
        "message_id": message_id,
        "attempt": attempt,
        "content_hash": content_hash,
        "sha256": sha256,
        "size": size,
        "transport": transport,
    }
    if test:
        record["test"] = True
    return record


@dataclass(frozen=True, slots=True)
class AddressReply:
    """One address's outcome and the server's answer, as a result record holds it."""

    outcome: Outcome
    code: int | None
    reply: str


def result_record(
    *,
    run: str,
    recipient: str,
    attempt: int,
    message_id: str,
    replies: Mapping[str, AddressReply],
    status: Status,
    transport: str,
    archive: str | None = None,
    sha256: str | None = None,
    test: bool = False,
) -> Record:
    record: Record = {
        "event": Event.RESULT,
        "run": run,
        "recipient": recipient,
        "attempt": attempt,
        "message_id": message_id,
        "replies": {
            address: {"outcome": r.outcome, "code": r.code, "reply": r.reply}
            for address, r in replies.items()
        },
        "status": status,
        "transport": transport,
    }
    if archive is not None:
        record["archive"] = archive
        record["sha256"] = sha256
    if test:
        record["test"] = True
    return record


def run_end_record(*, run: str, counts: Mapping[Status, int], stopped: str | None) -> Record:
    return {"event": Event.RUN_END, "run": run, "counts": dict(counts), "stopped": stopped}


def resolve_record(
    *,
    recipient: str,
    settled_as: Status,
    reason: str,
    by: str,
    sha256: str | None = None,
    archive: str | None = None,
) -> Record:
    """A person's settlement; as sent, it keeps the attempt's SHA-256 and archived copy."""
    record: Record = {
        "event": Event.RESOLVE,
        "recipient": recipient,
        "reason": reason,
        "as": settled_as,
        "by": by,
    }
    if sha256 is not None:
        record["sha256"] = sha256
        if archive is not None:
            record["archive"] = archive
    return record


def pace_record(
    *,
    run: str,
    per_minute: float | None,
    connections: int,
    before_per_minute: float | None,
    before_connections: int,
    signal: str,
    reply: str,
    message: str,
) -> Record:
    """The pacer's change: the pace before and after, and the server reply that caused it."""
    return {
        "event": Event.PACE,
        "run": run,
        "per_minute": per_minute,
        "connections": connections,
        "before_per_minute": before_per_minute,
        "before_connections": before_connections,
        "signal": signal,
        "reply": reply,
        "message": message,
    }


def postponed_record(*, run: str, recipient: str, addresses: Sequence[str], reason: str) -> Record:
    """A letter the run did not try before giving up (--max-wait): deferred, with why."""
    return {
        "event": Event.POSTPONED,
        "run": run,
        "recipient": recipient,
        "addresses": list(addresses),
        "reason": reason,
    }


def inbound_record(
    event: Event, recipient: str, fields: Mapping[str, Any], *, archive: str, source: str
) -> Record:
    """One message from the campaign's mailbox, tied to a letter: a bounce, a reply..."""
    record: Record = {"event": event, "recipient": recipient}
    record.update((name, fields.get(name)) for name in INBOUND_FIELDS)
    record["archive"] = archive
    record["source"] = source
    return record


def inbound_key(record: Mapping[str, Any]) -> str:
    """What makes an inbound event unique: the message, the recipient, the address."""
    return (
        f"{record.get('inbound')} {record.get('recipient')} {record.get('address') or ''}".rstrip()
    )


SETTLED_BY_HAND = "resolved as "  # how an address settled by `campaign resolve` reads


def settled_by_hand(code: int | None, reply: str) -> bool:
    """Whether an address's last word is a person's `resolve`, not a server's (which has a
    code: a server cannot pass its reply off as a person's)."""
    return code is None and reply.startswith(SETTLED_BY_HAND)


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time from the log, in UTC (one without an offset taken as UTC); None when
    it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _is_later(moment: str, than: str | None) -> bool:
    """Whether an ISO 8601 time is later than another (offsets compared, not the text)."""
    if than is None:
        return True
    parsed, other = parse_time(moment), parse_time(than)
    return parsed > other if parsed and other else moment > than


def bounce_text(record: Mapping[str, Any]) -> str:
    """How a bounce reads in the review: `bounced 5.1.1: 550 5.1.1 <a@b>: User unknown`."""
    status = record.get("status") or ""
    diagnostic = record.get("diagnostic") or ""
    return (
        f"bounced {status}: {diagnostic}".strip().rstrip(":") if status or diagnostic else "bounced"
    )


def log_repaired_record(*, torn_line: int) -> Record:
    return {"event": Event.LOG_REPAIRED, "torn_line": torn_line}


def stamped(record: Record, *, time: str, campaign: str) -> Record:
    """The record as the log holds it: time, event and campaign first."""
    return {"time": time, "event": record["event"], "campaign": campaign, **record}


def log_line(record: Record) -> bytes:
    """One compact JSON line (UTF-8, not ASCII-escaped), as the log holds it."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A server reply that was not UTF-8 reaches here as surrogates (aiosmtplib decodes
        # with surrogateescape): each is written out as the text `\udcff`.
        cleaned = _without_surrogates(record)
        return (json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(item) for item in value]
    return value


class SendLog:
    """Appends records, one write per line; `durable()` fsyncs in groups (group commit)."""

    def __init__(
        self, path: Path, campaign_id: str, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.path = path
        self.campaign_id = campaign_id
        self._clock = clock
        ensure_folder(path.parent)
        self._fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._written = 0
        self._synced = 0
        self._sync_task: asyncio.Future[None] | None = None
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """Mark a last line a crash cut short, so that records after it leave it readable.

        Also when an editor has since ended it with a line end: a torn line followed by
        anything but this mark is what a log edited by hand looks like.
        """
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(max(0, size - MAX_LINE - 2))
            tail = handle.read()
            ended = tail.endswith(b"\n")
            body = tail.rstrip()  # blank lines after it, CRLF or spaces included
            last = body.rpartition(b"\n")[2]
            if ended and (not last.strip() or _parsed(last) is not None):
                return
            handle.seek(0)
            lines = sum(1 for _ in handle)
        if ended:  # the number of the torn line itself, before the line ends after it
            lines -= tail[len(body) :].count(b"\n") - 1
        else:
            os.write(self._fd, b"\n")
        self.write(log_repaired_record(torn_line=lines))
        os.fsync(self._fd)

    def write(self, record: Record) -> Record:
        """Write one record (one write call, so `tail -f` never sees half a line); return it."""
        moment = self._clock() if self._clock is not None else None
        full = stamped(record, time=now_iso(moment), campaign=self.campaign_id)
        os.write(self._fd, log_line(full))
        self._written += 1
        return full

    async def durable(self) -> None:
        """Return once every record appended so far is on disk; concurrent callers share fsyncs."""
        target = self._written
        while self._synced < target:
            if self._sync_task is None:
                self._sync_task = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._sync_task)

    async def _sync(self) -> None:
        covered = self._written
        try:
            await asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)
            self._synced = max(self._synced, covered)
        finally:
            self._sync_task = None

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _holder(fd: int) -> str:
    """Who holds a lock, as its file says (read back: shown escaped)."""
    text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    return visible(text) or "another process"


class LogLock:
    """An exclusive lock beside the log, naming the process that holds it.

    Keyed on the log's real folder: two paths to one log take the same lock.
    """

    def __init__(self, log_path: Path) -> None:
        folder = Path(os.path.realpath(log_path.parent))
        self.path = folder / (log_path.name + ".lock")
        self._log_path = log_path
        self._fd = -1

    def acquire(self, description: str) -> None:
        if self._log_path.parent.is_symlink() or self._log_path.is_symlink():
            # Another path to a log in use says so; otherwise the link is refused before
            # anything (the lock file) is made through it.
            holder = self.held_by_other()
            if holder is not None:
                raise RunRefused(f"another run holds the log: {holder}", path=self.path)
            refuse_symlink(self._log_path.parent)
            refuse_symlink(self._log_path)
        ensure_folder(self.path.parent)
        fd = open_private(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunRefused(
                f"another run holds the log: {holder}",
                path=self.path,
                hint="wait for it to finish; a lock left by a process that has ended frees itself",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {description}, since {now_iso()}\n".encode(), 0)
        self._fd = fd

    def held_by_other(self) -> str | None:
        """Who holds the lock now, or None; used by readers to tell a live run from a dead one."""
        if not self.path.exists() or self.path.is_symlink():
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        finally:
            os.close(fd)
        return None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
