"""What one message in the campaign's mailbox is (bounce, delay, auto-reply, reply) and whose.

Pure functions over bytes, no I/O. `classify` reads one message; `match` ties it to the letters
the campaign sent. Only structure counts as evidence: a DSN's returned headers, In-Reply-To and
References. A Message-ID quoted in a body never does.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.errors import MessageError
from email.header import Header, decode_header
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from enum import StrEnum
from typing import Any

from flufl.bounce import all_failures

MAX_MESSAGE_BYTES = 25 * 1024 * 1024

# flufl.bounce logs a detector's crash at ERROR level; with no handler configured, Python's
# last-resort handler would print it (and text from the hostile message) to stderr.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False


class Kind(StrEnum):
    """What a mailbox message is, for the campaign."""

    BOUNCE = "bounce"
    DELAYED = "delayed"
    AUTO_REPLY = "auto-reply"
    REPLY = "reply"
    OTHER = "other"


class Action(StrEnum):
    """A DSN's per-recipient Action (RFC 3464 2.3.3); UNKNOWN when a report gives none we know."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"
    UNKNOWN = "unknown"


class MatchedBy(StrEnum):
    """How a message was tied to a letter."""

    MESSAGE_ID = "message-id"  # the letter's Message-ID, from headers or returned headers
    ADDRESS = "address"  # a bounce naming no Message-ID: an address this campaign had accepted


class MessageTooLarge(ValueError):
    """The message is over the size cap; it was not parsed (skip it and count it)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the message is {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient of a delivery report: what the reporting server says happened there."""

    final_recipient: str | None
    original_recipient: str | None
    action: Action
    status: str | None = None  # e.g. "5.1.1"
    diagnostic_code: str | None = None  # without its type: "550 5.1.1 <a@b>: User unknown"
    remote_mta: str | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses it names, the original (as sent) first."""
        return tuple(a for a in (self.original_recipient, self.final_recipient) if a)


@dataclass(frozen=True, slots=True)
class Finding:
    """What `classify` read from one message. Every text field is cleaned for display."""

    kind: Kind
    key: str  # the message's Message-ID, or "sha256:<hex>" when it has none
    message_id: str | None
    date: datetime | None  # its Date header, timezone-aware
    sender: str  # its From header, decoded
    subject: str
    sha256: str  # of the bytes as given
    size: int
    references: tuple[str, ...] = ()  # In-Reply-To, References, then the returned original's
    original_message_id: str | None = None  # a report's returned (or receipted) letter
    reporting_mta: str | None = None
    recipients: tuple[DsnRecipient, ...] = ()
    evidence: str = ""  # why it is this kind, e.g. "RFC 3464 delivery report"
    problem: str | None = None  # why an unreadable message is `other`

    @property
    def sender_address(self) -> str | None:
        """The address in From, when there is one."""
        return _sender_address(self.sender)

    @property
    def header_references(self) -> tuple[str, ...]:
        """The Message-IDs named in In-Reply-To and References only."""
        return tuple(r for r in self.references if r != self.original_message_id)


@dataclass(frozen=True, slots=True)
class SentLetter:
    """A letter the campaign sent, from its log: whose, its Message-ID, where it was accepted."""

    recipient: str
    message_id: str  # with angle brackets
    accepted: tuple[str, ...]  # the addresses the relay accepted


@dataclass(frozen=True, slots=True)
class Match:
    """One finding tied to one letter (and, when known, one of its addresses)."""

    kind: Kind  # bounce or delayed per DSN entry; auto-reply or reply
    recipient: str
    letter_message_id: str
    address: str | None  # as the letter has it, when the message names it
    matched_by: MatchedBy
    finding: Finding
    entry: DsnRecipient | None = None

    @property
    def event_key(self) -> str:
        """What makes this event unique: the inbound message, the recipient, the address."""
        return f"{self.finding.key} {self.recipient} {self.address or ''}".rstrip()

    def record(self) -> dict[str, Any]:
        """JSON-ready fields for a send-log event (the caller adds time, event, campaign)."""
        finding, entry = self.finding, self.entry
        return {
            "recipient": self.recipient,
            "address": self.address,
            "message_id": self.letter_message_id,
            "matched_by": self.matched_by,
            "inbound": finding.key,
            "inbound_message_id": finding.message_id,
            "inbound_date": finding.date.isoformat() if finding.date else None,
            "from": finding.sender,
            "subject": finding.subject,
            "sha256": finding.sha256,
            "size": finding.size,
            "evidence": finding.evidence,
            "action": entry.action if entry else None,
            "status": entry.status if entry else None,
            "diagnostic": entry.diagnostic_code if entry else None,
            "reported_recipient": entry.final_recipient if entry else None,
            "remote_mta": entry.remote_mta if entry else None,
            "reporting_mta": finding.reporting_mta,
        }


# --- text hygiene -------------------------------------------------------------------------

# C0 and C1 controls, DEL, line/paragraph separators, and the bidirectional and zero-width
# format characters that can make a terminal show something other than what is there.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_SPACES = re.compile(r"\s+")


def clean_text(value: str, limit: int = 300) -> str:
    """One line of printable text: controls become spaces, runs of space one, cut at `limit`."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _decode_bytes(payload: bytes, charset: str | None) -> str:
    name = (charset or "ascii").strip().lower()
    if name in ("unknown-8bit", "x-unknown", "8bit", ""):
        name = "utf-8"
    try:
        return payload.decode(name, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        return payload.decode("utf-8", errors="replace")


def _header_text(value: object) -> str:
    """A header value decoded from RFC 2047 words and raw 8-bit, as leniently as mail programs."""
    if value is None:
        return ""
    try:
        chunks = decode_header(value if isinstance(value, Header) else str(value))
    except (MessageError, ValueError, LookupError, UnicodeError, TypeError):
        return str(value)
    parts: list[str] = []
    for payload, charset in chunks:
        parts.append(payload if isinstance(payload, str) else _decode_bytes(payload, charset))
    # decode_header drops the space between an encoded word and plain text; plain chunks
    # keep theirs. Joining with "" loses little and never invents text.
    return "".join(parts)


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except (MessageError, ValueError, TypeError, LookupError):
        return None
    return None if value is None else _header_text(value)


def _headers(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
    except (MessageError, ValueError, TypeError, LookupError):
        return []
    return [_header_text(value) for value in values]


# --- Message-IDs --------------------------------------------------------------------------

_BRACKETED_ID = re.compile(r"<([!-;=?-~]{1,250})>")  # printable ASCII, no < > or space
_BARE_ID = re.compile(r"[!-;=?-~]{1,250}@[!-;=?-~]{1,250}")
_MAX_REFERENCES = 200


def normalise_message_id(value: str) -> str:
    """`<left@Right>` -> `<left@right>`: the domain compared without case, the left part as is."""
    inner = value.strip().strip("<>")
    left, at, right = inner.rpartition("@")
    return f"<{left}@{right.lower()}>" if at else f"<{inner}>"


def _own_message_id(msg: Message) -> str | None:
    value = _header(msg, "Message-ID")
    if not value:
        return None
    found = _BRACKETED_ID.search(value)
    if found:
        return normalise_message_id(found.group(0))
    bare = _BARE_ID.fullmatch(value.strip())
    return normalise_message_id(bare.group(0)) if bare else None


def _referenced_ids(msg: Message) -> list[str]:
    ids: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in _headers(msg, name):
            ids.extend(normalise_message_id(m.group(0)) for m in _BRACKETED_ID.finditer(value))
    unique = list(dict.fromkeys(ids))
    if len(unique) > _MAX_REFERENCES:  # keep the thread's root and its latest messages
        half = _MAX_REFERENCES // 2
        unique = unique[:half] + unique[-half:]
    return unique


# --- the parts of a message ---------------------------------------------------------------


def _parts(msg: Message) -> list[Message]:
    payload = msg.get_payload()
    if isinstance(payload, list):
        return [part for part in payload if isinstance(part, Message)]
    return []


def _content_type(msg: Message) -> str:
    try:
        return msg.get_content_type()
    except (MessageError, ValueError, TypeError, AttributeError):
        return "text/plain"


def _param(msg: Message, name: str) -> str:
    try:
        value = msg.get_param(name)
    except (MessageError, ValueError, TypeError, LookupError):
        return ""
    if value is None or isinstance(value, bool):
        return ""
    return str(collapse_rfc2231_value(value)).strip().lower()


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (MessageError, ValueError, TypeError, LookupError, UnicodeError):
        return b""
    return data if isinstance(data, bytes) else b""


def _payload_text(part: Message) -> str:
    return _decode_bytes(_payload_bytes(part), _param(part, "charset") or "utf-8")


_RETURNED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


def _returned_message_id(part: Message) -> str | None:
    """The Message-ID in a returned message or its headers (a report's third part)."""
    inner = _parts(part)
    if inner:
        return _own_message_id(inner[0])
    text = _payload_text(part)
    if not text:
        return None
    try:
        headers = message_from_string(text, policy=compat32)
    except (MessageError, ValueError, TypeError, LookupError, RecursionError):
        return None
    return _own_message_id(headers)


# --- RFC 3464 delivery reports -------------------------------------------------------------

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_TYPED_VALUE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9.+-]{0,30})\s*;\s*(.*)", re.S)
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_BY_STATUS_CLASS = {"5": Action.FAILED, "4": Action.DELAYED, "2": Action.DELIVERED}


_MAX_BLOCKS = 1000


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The blocks of a delivery-status part, each a {lower-case name: value} mapping."""
    inner = _parts(part)
    if inner:  # the `email` package splits message/delivery-status into blocks itself
        return [
            {str(name).lower(): _header_text(value) for name, value in block.items()}
            for block in inner[:_MAX_BLOCKS]
        ]
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in _payload_text(part).splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                if len(blocks) >= _MAX_BLOCKS:
                    return blocks
            current, last = {}, None
        elif line[:1] in (" ", "\t") and last:
            current[last] += " " + line.strip()
        else:
            name, colon, value = line.partition(":")
            if colon and name.strip():
                last = name.strip().lower()
                current.setdefault(last, value.strip())
    if current:
        blocks.append(current)
    return blocks


def _typed_value(value: str | None) -> tuple[str, str] | None:
    """`rfc822; a@b` -> ("rfc822", "a@b"); a value without a type counts as rfc822."""
    if not value or not value.strip():
        return None
    found = _TYPED_VALUE.fullmatch(value)
    if found:
        return found.group(1).lower(), found.group(2).strip()
    return "rfc822", value.strip()


def _dsn_address(value: str | None) -> str | None:
    typed = _typed_value(value)
    if typed is None:
        return None
    kind, address = typed
    if kind == "utf-8":  # RFC 6533: non-ASCII as \x{HEX}
        address = _UTF8_ESCAPE.sub(lambda m: _code_point(m.group(1)), address)
    address = address.strip().strip("<>").strip()
    if kind not in ("rfc822", "utf-8") or not address:
        return clean_text(f"{kind}; {address}", 320) if address else None
    return clean_text(address, 320)


def _code_point(hex_digits: str) -> str:
    number = int(hex_digits, 16)
    return chr(number) if number <= 0x10FFFF else "\ufffd"


def _mta(value: str | None) -> str | None:
    typed = _typed_value(value)
    return clean_text(typed[1], 255) if typed and typed[1] else None


def _recipient_entry(block: dict[str, str]) -> DsnRecipient | None:
    final = _dsn_address(block.get("final-recipient"))
    original = _dsn_address(block.get("original-recipient"))
    if not final and not original:
        return None
    status_found = _STATUS.search(block.get("status", ""))
    status = status_found.group(1) if status_found else None
    word = clean_text(block.get("action", ""), 40).lower().split(" ")[0]
    try:
        action = Action(word)
    except ValueError:
        action = Action.UNKNOWN
    if action is Action.UNKNOWN:
        # A report cut short or written carelessly: the status class says what happened.
        action = _BY_STATUS_CLASS.get((status or " ")[0], Action.UNKNOWN)
    diagnostic = _typed_value(block.get("diagnostic-code"))
    return DsnRecipient(
        final_recipient=final,
        original_recipient=original,
        action=action,
        status=status,
        diagnostic_code=clean_text(diagnostic[1], 500) if diagnostic and diagnostic[1] else None,
        remote_mta=_mta(block.get("remote-mta")),
    )


@dataclass(slots=True)
class _Report:
    recipients: list[DsnRecipient] = field(default_factory=list)
    reporting_mta: str | None = None
    original_message_id: str | None = None


def _delivery_report(msg: Message) -> _Report | None:
    """The RFC 3464 report in a top-level multipart/report, or None when it is not one."""
    if _content_type(msg) != "multipart/report":
        return None
    parts = _parts(msg)
    report_type = _param(msg, "report-type")
    status_parts = [p for p in parts if _content_type(p) in _STATUS_TYPES]
    if report_type != "delivery-status" and not (not report_type and status_parts):
        return None
    report = _Report()
    named: str | None = None
    for part in status_parts[:1]:
        for block in _field_blocks(part):
            if report.reporting_mta is None and "reporting-mta" in block:
                report.reporting_mta = _mta(block["reporting-mta"])
            # Gmail names the letter in its per-message block; used when no headers came back.
            found = _BRACKETED_ID.search(block.get("x-original-message-id", ""))
            if named is None and found:
                named = normalise_message_id(found.group(0))
            entry = _recipient_entry(block)
            if entry is not None:
                report.recipients.append(entry)
    for part in parts:
        if _content_type(part) in _RETURNED_TYPES:
            report.original_message_id = _returned_message_id(part)
            break
    report.original_message_id = report.original_message_id or named
    return report


def _disposition_original(msg: Message) -> str | None:
    """The Original-Message-ID of an RFC 8098 read receipt, if this is one."""
    if _content_type(msg) != "multipart/report":
        return None
    if _param(msg, "report-type") != "disposition-notification":
        return None
    for part in _parts(msg):
        if _content_type(part) in ("message/disposition-notification",):
            for block in _field_blocks(part):
                found = _BRACKETED_ID.search(block.get("original-message-id", ""))
                if found:
                    return normalise_message_id(found.group(0))
        if _content_type(part) in _RETURNED_TYPES:
            returned = _returned_message_id(part)
            if returned:
                return returned
    return ""  # a receipt, naming no letter


# --- bounces that are not RFC 3464 (qmail, old Exchange, Exim's text, ...) -------------------

_FLUFL_BYTES = 256 * 1024
_MAIL_SYSTEM_SENDERS = re.compile(
    r"(^|[<\s\"])(mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon)@", re.I
)
_MAIL_SYSTEM_NAMES = re.compile(r"mail delivery (system|subsystem)", re.I)
_BOUNCE_SUBJECTS = re.compile(
    r"undeliver|undelivered mail|returned mail|failure notice|delivery (status notification"
    r"|failure|has failed|failed)|mail delivery failed|non[- ]?delivery|could not be delivered"
    r"|nondeliverable|delivery problem",
    re.I,
)


def _from_mail_system(msg: Message) -> bool:
    sender = _header(msg, "From") or ""
    return bool(
        _MAIL_SYSTEM_SENDERS.search(sender)
        or _MAIL_SYSTEM_NAMES.search(sender)
        or msg.get("X-Failed-Recipients") is not None
    )


def _flufl_failures(msg: Message, data: bytes) -> tuple[list[str], list[str]]:
    """flufl.bounce's reading of the message's head: (permanent, temporary) failed addresses.

    Its detectors run about a hundred patterns over every line, so a long message is given
    to them cut short: a bounce says what failed before any copy of the letter it returns.
    """
    try:
        if len(data) > _FLUFL_BYTES:
            msg = message_from_bytes(data[:_FLUFL_BYTES], policy=compat32)
        temporary, permanent = all_failures(msg)
    except Exception:  # heuristic third-party detectors over hostile input: not detected
        return [], []

    def texts(found: Iterable[bytes]) -> list[str]:
        out = []
        for raw in found:
            text = clean_text(raw.decode("ascii", errors="replace"), 320).strip("<>")
            if "@" in text and " " not in text:
                out.append(text)
        return sorted(set(out))

    return texts(permanent), texts(temporary)


def _plain_text_lines(msg: Message, limit: int = 262_144) -> list[str]:
    """The lines of the message's own text parts (never of a returned message inside it)."""
    texts: list[str] = []
    stack = [msg]
    while stack and sum(map(len, texts)) < limit:
        part = stack.pop(0)
        kind = _content_type(part)
        if kind.startswith("multipart/"):
            stack.extend(_parts(part))
        elif kind == "text/plain":
            texts.append(_payload_text(part)[:limit])
    return "\n".join(texts)[:limit].splitlines()


_SMTP_REPLY = re.compile(r"\b[45]\d\d\b")


def _text_reason(lines: list[str], address: str) -> tuple[str | None, str | None]:
    """(status, diagnostic) from the paragraph of a bounce's text that names `address`.

    The first paragraph that names it and holds a status or an SMTP reply code wins (a
    "To: address" line of a summary has neither); else the first that names it.
    """
    wanted = address.lower()
    candidates: list[list[str]] = []
    for index, line in enumerate(lines):
        if wanted in line.lower() and len(candidates) < 20:
            paragraph = [line]
            for following in lines[index + 1 : index + 6]:
                if not following.strip() or following.lstrip().startswith("-"):
                    break
                paragraph.append(following)
            candidates.append(paragraph)
    if not candidates:
        return None, None
    for paragraph in candidates:
        text = " ".join(paragraph)
        if _STATUS.search(text) or _SMTP_REPLY.search(text):
            break
    else:
        paragraph = candidates[0]
    found = _STATUS.search(" ".join(paragraph))
    rest = clean_text(" ".join(paragraph[1:]), 500)
    return (found.group(1) if found else None), (rest or None)


def _embedded_original(msg: Message) -> str | None:
    """A returned letter's Message-ID from a message/rfc822 or headers part, one level down."""
    for part in _parts(msg):
        kind = _content_type(part)
        if kind in _RETURNED_TYPES:
            return _returned_message_id(part)
        if kind.startswith("multipart/"):
            for inner in _parts(part):
                if _content_type(inner) in _RETURNED_TYPES:
                    return _returned_message_id(inner)
    return None


# --- auto-replies ----------------------------------------------------------------------------

_AUTO_SUBJECTS = re.compile(
    r"\s*(automatic reply|auto(matic)?[- ]?(reply|response|antwort)|autoreply|auto:|"
    r"out of (the )?office|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica|"
    r"risposta automatica|автоматический ответ|автоответ|автоматты жауап)",
    re.I,
)


def _auto_reply_marker(msg: Message, subject: str) -> str | None:
    """The header or subject that makes this an automatic reply, or None."""
    auto_submitted = (_header(msg, "Auto-Submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {clean_text(auto_submitted, 40)}"
    for name in (
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-MS-Exchange-Inbox-Rules-Loop",
    ):
        if msg.get(name) is not None:
            return name
    precedence = (_header(msg, "Precedence") or _header(msg, "X-Precedence") or "").strip().lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return f"Precedence: {precedence}"
    if (_header(msg, "X-Autogenerated") or "").strip().lower() == "reply":
        return "X-Autogenerated: reply"
    if _AUTO_SUBJECTS.match(subject):
        return "subject " + repr(clean_text(subject, 40))
    return None


# --- classify ----------------------------------------------------------------------------------


def _date(msg: Message) -> datetime | None:
    value = _header(msg, "Date")
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sender_address(sender: str) -> str | None:
    try:
        pairs = getaddresses([sender])
    except (ValueError, TypeError, IndexError):
        return None
    for _name, address in pairs:
        if "@" in address:
            return clean_text(address, 320)
    return None


def crlf_key(data: bytes) -> str:
    """`sha256:<hex>` over the message with CRLF line ends: one key whatever the source."""
    normalised = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return "sha256:" + hashlib.sha256(normalised).hexdigest()


def classify(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Finding:
    """What one mailbox message is. Raises only `MessageTooLarge`; unreadable means `other`."""
    if len(data) > max_bytes:
        raise MessageTooLarge(len(data), max_bytes)
    unread = Finding(
        Kind.OTHER, crlf_key(data), None, None, "", "", hashlib.sha256(data).hexdigest(), len(data)
    )
    head_end = _HEAD_END.search(data, 0, _MAX_HEAD_BYTES + 4)
    head = data[: head_end.start() if head_end else _MAX_HEAD_BYTES + 1]
    if len(head) > _MAX_HEAD_BYTES or head.count(b"\n") > _MAX_HEAD_LINES:
        # Every header lookup walks the whole list: a flood of headers would cost minutes.
        return replace(unread, problem="a header block of absurd size: not read")
    try:
        msg = message_from_bytes(data, policy=compat32)
        if not msg.keys():
            return replace(unread, problem="no header block: not a mail message")
        return _classify(msg, data, unread)
    except _PARSE_ERRORS as err:
        # The `email` package's lenient parser still trips on some hostile inputs.
        return replace(unread, problem=f"could not be parsed ({type(err).__name__})")


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_MAX_HEAD_BYTES = 1024 * 1024
_MAX_HEAD_LINES = 5000
_PARSE_ERRORS = (
    MessageError,
    ValueError,
    TypeError,
    LookupError,
    UnicodeError,
    RecursionError,
    AttributeError,
)


def _classify(msg: Message, data: bytes, unread: Finding) -> Finding:
    message_id = _own_message_id(msg)
    read = replace(
        unread,
        key=message_id or unread.key,
        message_id=message_id,
        date=_date(msg),
        sender=clean_text(_header(msg, "From") or "", 320),
        subject=clean_text(_header(msg, "Subject") or "", 500),
    )
    references = _referenced_ids(msg)

    report = _delivery_report(msg)
    if report is not None and report.recipients:
        actions = {entry.action for entry in report.recipients}
        kind = Kind.OTHER  # delivered, relayed, expanded: good news, nothing to record
        if Action.FAILED in actions:
            kind = Kind.BOUNCE
        elif Action.DELAYED in actions:
            kind = Kind.DELAYED
        evidence = "RFC 3464 delivery report"
        if kind is Kind.OTHER:
            evidence += f" ({', '.join(sorted(actions))})"
        return replace(
            read,
            kind=kind,
            references=_with(references, report.original_message_id),
            original_message_id=report.original_message_id,
            reporting_mta=report.reporting_mta,
            recipients=tuple(report.recipients),
            evidence=evidence,
        )

    receipt_of = _disposition_original(msg)
    if receipt_of is not None:
        return replace(
            read,
            kind=Kind.AUTO_REPLY,
            references=_with(references, receipt_of or None),
            original_message_id=receipt_of or None,
            evidence="read receipt (RFC 8098 disposition notification)",
        )

    from_mail_system = _from_mail_system(msg) or report is not None
    if from_mail_system or _BOUNCE_SUBJECTS.search(read.subject):
        permanent, temporary = _flufl_failures(msg, data)
        if permanent or temporary:
            lines = _plain_text_lines(msg)
            entries = []
            for action, addresses in ((Action.FAILED, permanent), (Action.DELAYED, temporary)):
                for address in addresses:
                    status, diagnostic = _text_reason(lines, address)
                    entries.append(DsnRecipient(address, None, action, status, diagnostic))
            original = _embedded_original(msg)
            return replace(
                read,
                kind=Kind.BOUNCE if permanent else Kind.DELAYED,
                references=_with(references, original),
                original_message_id=original,
                recipients=tuple(entries),
                evidence="bounce text recognised by flufl.bounce",
            )
        if from_mail_system:
            problem = "a message from a mail system that names no failed recipient"
            if report is not None:
                problem = "a delivery report with no readable recipient (truncated?)"
            return replace(read, references=tuple(references), problem=problem)

    marker = _auto_reply_marker(msg, read.subject)
    if marker:
        return replace(read, kind=Kind.AUTO_REPLY, references=tuple(references), evidence=marker)
    if references:
        return replace(
            read, kind=Kind.REPLY, references=tuple(references), evidence="In-Reply-To/References"
        )
    return read


def _with(references: list[str], extra: str | None) -> tuple[str, ...]:
    if extra and extra not in references:
        return (*references, extra)
    return tuple(references)


# --- match ---------------------------------------------------------------------------------------


def address_key(address: str) -> str:
    """An address compared with its domain's case folded (the local part's case is the owner's)."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}" if at else address.strip().lower()


class SentLetters:
    """The campaign's letters, indexed by Message-ID and by accepted address.

    Build it once and pass it to `match` for every message of a run.
    """

    def __init__(self, letters: Iterable[SentLetter]) -> None:
        self._by_id: dict[str, list[SentLetter]] = {}
        self._by_address: dict[str, list[tuple[SentLetter, str]]] = {}
        self._by_folded: dict[str, list[tuple[SentLetter, str]]] = {}
        for letter in letters:
            self._by_id.setdefault(normalise_message_id(letter.message_id), []).append(letter)
            for address in letter.accepted:
                pair = (letter, address)
                self._by_address.setdefault(address_key(address), []).append(pair)
                self._by_folded.setdefault(address.lower(), []).append(pair)

    def with_message_id(self, message_id: str) -> list[SentLetter]:
        return self._by_id.get(normalise_message_id(message_id), [])

    def accepted_at(self, address: str) -> list[tuple[SentLetter, str]]:
        """The letters accepted at `address`: exact local part first, else ignoring its case."""
        return self._by_address.get(address_key(address)) or self._by_folded.get(
            address.strip().strip("<>").lower(), []
        )


def _address_in(letter: SentLetter, named: Sequence[str]) -> str | None:
    """The letter's own spelling of the first of `named` it was accepted at."""
    for wanted in named:
        for address in letter.accepted:
            if address_key(address) == address_key(wanted):
                return address
    for wanted in named:
        for address in letter.accepted:
            if address.lower() == wanted.strip().strip("<>").lower():
                return address
    return None


def match(finding: Finding, letters: SentLetters | Iterable[SentLetter]) -> list[Match]:
    """The campaign's letters this message is about; [] for anything not the campaign's."""
    index = letters if isinstance(letters, SentLetters) else SentLetters(letters)
    if finding.kind is Kind.OTHER:
        return []
    if finding.message_id and index.with_message_id(finding.message_id):
        return []  # a copy of the campaign's own letter, not an answer to it
    if finding.kind in (Kind.BOUNCE, Kind.DELAYED):
        return list(_dedupe(_bounce_matches(finding, index)))
    return list(_dedupe(_reply_matches(finding, index)))


def _bounce_matches(finding: Finding, index: SentLetters) -> Iterator[Match]:
    entries = [e for e in finding.recipients if e.action in (Action.FAILED, Action.DELAYED)]
    if finding.original_message_id:
        named = [finding.original_message_id]
    else:
        named = list(finding.header_references)
    if named:
        letters = [letter for mid in named for letter in index.with_message_id(mid)]
        for letter in dict.fromkeys(letters):  # a report naming another campaign's letter: none
            for entry in entries:
                yield Match(
                    Kind.BOUNCE if entry.action is Action.FAILED else Kind.DELAYED,
                    letter.recipient,
                    letter.message_id,
                    _address_in(letter, entry.addresses),
                    MatchedBy.MESSAGE_ID,
                    finding,
                    entry,
                )
        return
    for entry in entries:  # no Message-ID at all: only addresses this campaign had accepted
        pairs = [pair for address in entry.addresses for pair in index.accepted_at(address)]
        for letter, address in dict.fromkeys(pairs):
            yield Match(
                Kind.BOUNCE if entry.action is Action.FAILED else Kind.DELAYED,
                letter.recipient,
                letter.message_id,
                address,
                MatchedBy.ADDRESS,
                finding,
                entry,
            )


def _reply_matches(finding: Finding, index: SentLetters) -> Iterator[Match]:
    sender = finding.sender_address
    for mid in finding.references:
        for letter in index.with_message_id(mid):
            address = _address_in(letter, [sender]) if sender else None
            yield Match(
                finding.kind,
                letter.recipient,
                letter.message_id,
                address,
                MatchedBy.MESSAGE_ID,
                finding,
            )


def _dedupe(matches: Iterable[Match]) -> Iterator[Match]:
    """One match per (recipient, address); a failure wins over a delay for the same address."""
    chosen: dict[tuple[str, str | None], Match] = {}
    for found in matches:
        key = (found.recipient, found.address)
        if key not in chosen or (chosen[key].kind is Kind.DELAYED and found.kind is Kind.BOUNCE):
            chosen[key] = found
    # A reply names a recipient once, whatever it quotes.
    seen: set[str] = set()
    for found in chosen.values():
        if found.kind in (Kind.REPLY, Kind.AUTO_REPLY):
            if found.recipient in seen:
                continue
            seen.add(found.recipient)
        yield found
