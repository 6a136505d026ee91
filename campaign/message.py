"""Rendered letter -> the exact bytes of one RFC 5322 message, checked before it can leave."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import _encoded_words as _ew  # type: ignore[attr-defined]
from email import policy, quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from campaign.errors import CampaignError
from campaign.headersafety import HeaderBlockError, check_header_block, unsafe_reason
from campaign.models import Campaign, Mailbox, Recipient, Rendered

# One policy throughout: CRLF line ends, 78-column folding, no raw 8-bit in headers.
POLICY = policy.SMTP
_READER = policy.default
_WORD_BYTES = 39  # a base64 word of 39 bytes is 64 characters: within RFC 2047's 75


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    data: bytes
    message_id: str
    subject: str
    content_hash: str
    sha256: str


def message_id_for(campaign: Campaign, recipient_id: str, *, test: bool = False) -> str:
    """Deterministic for (campaign id, recipient id), at the sender's domain."""
    prefix = "test." if test else ""
    return f"<{prefix}{campaign.id}.{recipient_id}@{campaign.sender.domain}>"


def content_hash(subject: str, addresses: tuple[str, ...], rendered: Rendered) -> str:
    """What makes one recipient's letter this letter: not the Date, not the Message-ID."""
    payload = json.dumps(
        [subject, list(addresses), rendered.text, rendered.html], ensure_ascii=False
    ).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def _fold(name: str, value: object) -> str:
    header = POLICY.header_factory(name, value)
    return str(header.fold(policy=POLICY))


_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_SIMPLE_MESSAGE_ID = re.compile(r"<[A-Za-z0-9._-]+@[A-Za-z0-9.-]+>\Z")


def _one_line_phrase(text: str, *, structured: bool) -> str | None:
    """`text` exactly as the email package writes it when it fits on one line, else None.

    The package leaves plain ASCII words as they are and encodes the run from the first
    to the last word that needs it as one encoded word (the shorter of q and b). In an
    address (`structured`) a word needs it when it is not ASCII or has specials, and an
    all-ASCII name with specials is quoted instead. tests/test_message_builder.py checks
    this against the package on generated names and subjects.
    """
    if structured:
        text = " ".join(text.split())  # readers collapse runs of spaces in names anyway
    words = text.split(" ")
    if "" in words:
        return None
    if structured and text.isascii():
        if all(_ATEXT.match(word) for word in words):
            return text
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    foreign = [not word.isascii() or (structured and not _ATEXT.match(word)) for word in words]
    if not any(foreign):
        return text
    first = foreign.index(True)
    last = len(foreign) - 1 - foreign[::-1].index(True)
    encoded = _ew.encode(" ".join(words[first : last + 1]), charset="utf-8")
    return " ".join([*words[:first], encoded, *words[last + 1 :]])


def _fits(line: str) -> bool:
    return len(line) <= (POLICY.max_line_length or 78)


class HeaderFoldError(ValueError):
    """Python's folder wrote an address header that does not read back as written."""


def to_header(mailboxes: tuple[Mailbox, ...], name: str = "To") -> str:
    """The address header, folded by campaign rather than by the email package.

    On one line it is exactly what the package writes. When it must fold, Python 3.11.7's
    folder can move a comma to the next line as an encoded word (`=?utf-8?q?=2C?=`) or
    write empty encoded words, which readers take as part of a name, so an address is
    lost from the header. Here lines are filled with whole mailboxes, the comma stays
    with its mailbox, and a mailbox longer than a line breaks before its `<address>`.
    A name that cannot be written on one line is refused.
    """
    parts: list[tuple[str, str]] = []
    for mailbox in mailboxes:
        if not mailbox.display_name:
            parts.append(("", mailbox.address))
            continue
        phrase = _one_line_phrase(mailbox.display_name, structured=True)
        if phrase is None:
            raise HeaderFoldError(
                f"the name {mailbox.display_name!r} cannot be written in a header"
            )
        parts.append((phrase, f"<{mailbox.address}>"))
    head = f"{name}:"
    whole = " " + ", ".join(f"{phrase} {address}".lstrip() for phrase, address in parts)
    if _fits(head + whole):
        return head + whole + "\r\n"
    lines: list[str] = []
    line = head
    for position, (phrase, address) in enumerate(parts):
        comma = "," if position < len(parts) - 1 else ""
        piece = f" {phrase} {address}{comma}" if phrase else f" {address}{comma}"
        whole_fits = _fits(line + piece) or (_fits(piece) and line != head) or not phrase
        for text in [piece] if whole_fits else [f" {phrase}", f" {address}{comma}"]:
            if _fits(line + text):
                line += text
            elif _fits(text):
                lines.append(line)
                line = text
            else:
                raise HeaderFoldError(f"a name or address is too long for one {name} line")
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def message_id_header(message_id: str) -> str:
    line = f"Message-ID: {message_id}"
    if _SIMPLE_MESSAGE_ID.match(message_id) and _fits(line):
        return line + "\r\n"
    return _fold("Message-ID", message_id)


def _decoded(header_line: str) -> str:
    name, _, value = header_line.partition(":")
    parsed = _READER.header_factory(name, value.replace("\r\n", "").strip())
    return str(parsed)


def subject_header(subject: str) -> str:
    """The folded Subject line, decoding back to exactly `subject`.

    Python 3.11's folder can drop the space between two encoded words of a long
    non-ASCII subject (CPython gh-144156). When its fold does not round-trip, the
    subject is written as a run of base64 encoded words that each hold whole characters;
    readers join adjacent encoded words, so every space survives.
    """
    phrase = _one_line_phrase(subject, structured=False)
    if phrase is not None and _fits(f"Subject: {phrase}"):
        return f"Subject: {phrase}\r\n"
    folded = _fold("Subject", subject)
    if _decoded(folded) == subject:
        return folded
    words: list[str] = []
    chunk = b""
    for char in subject:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += encoded
    words.append(chunk.decode("utf-8"))
    encoded_words = [
        "=?utf-8?b?" + base64.b64encode(word.encode("utf-8")).decode("ascii") + "?="
        for word in words
    ]
    return "Subject: " + "\r\n ".join(encoded_words) + "\r\n"


def _address(mailbox: Mailbox) -> Address:
    username, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=mailbox.display_name, username=username, domain=domain)


def _addressing(
    campaign: Campaign, recipient: Recipient, rendered: Rendered, test_to: Mailbox | None
) -> tuple[str, tuple[Mailbox, ...], str]:
    """Subject, To and Message-ID: the recipient's, or a test send's (`test_to`)."""
    subject, to = rendered.subject, recipient.mailboxes
    message_id = message_id_for(campaign, recipient.id)
    if test_to is not None:
        subject = f"[TEST for {recipient.name}] {subject}"
        to = (test_to,)
        message_id = message_id_for(campaign, recipient.id, test=True)
    for field, value in (
        ("subject", subject),
        ("name", recipient.name),
        ("from", campaign.sender.display_name),
    ):
        reason = unsafe_reason(value)
        if reason:
            raise CampaignError(
                f"the {field} {reason}", path=campaign.source, recipient=recipient.id, field=field
            )
    return subject, to, message_id


def _checked(
    campaign: Campaign,
    recipient: Recipient,
    data: bytes,
    header_names: Sequence[str],
    message_id: str,
    subject: str,
    digest: str,
) -> BuiltMessage:
    """The message, once its serialised header block is exactly the one meant."""
    try:
        check_header_block(data, header_names)
    except HeaderBlockError as err:
        raise CampaignError(
            f"the message headers came out wrong: {err}",
            path=campaign.source,
            recipient=recipient.id,
        ) from None
    return BuiltMessage(
        data=data,
        message_id=message_id,
        subject=subject,
        content_hash=digest,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _mend_headers(data: bytes, campaign: Campaign, to: tuple[Mailbox, ...], subject: str) -> bytes:
    """Put the checked folds (`to_header`, `subject_header`) where the package's differ."""
    head_end = data.index(b"\r\n\r\n") + 2
    head, body = data[:head_end], data[head_end:]
    replacements = [
        (_fold("From", _address(campaign.sender)), to_header((campaign.sender,), "From")),
        (_fold("To", tuple(_address(m) for m in to)), to_header(to)),
        (_fold("Subject", subject), subject_header(subject)),
    ]
    if campaign.reply_to:
        reply_to = campaign.reply_to
        replacements.append(
            (
                _fold("Reply-To", tuple(_address(m) for m in reply_to)),
                to_header(reply_to, "Reply-To"),
            )
        )
    for folded, fixed in replacements:
        if folded != fixed:
            head = head.replace(folded.encode("ascii"), fixed.encode("ascii"), 1)
    return head + body


def build_message(
    campaign: Campaign,
    recipient: Recipient,
    rendered: Rendered,
    *,
    date: datetime,
    test_to: Mailbox | None = None,
) -> BuiltMessage:
    """Build and serialise the message; refuse it if any header is not exactly as meant.

    With `test_to`, the message goes to that mailbox instead, its subject marked as a test,
    under a Message-ID of its own so the real send is never mistaken for it.
    """
    subject, to, message_id = _addressing(campaign, recipient, rendered, test_to)

    message = EmailMessage(policy=POLICY)
    digest = content_hash(subject, tuple(m.address for m in to), rendered)
    message["From"] = _address(campaign.sender)
    message["To"] = tuple(_address(mailbox) for mailbox in to)
    if campaign.reply_to:
        message["Reply-To"] = tuple(_address(mailbox) for mailbox in campaign.reply_to)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if rendered.html is not None:
        message.add_alternative(
            rendered.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
        message.set_boundary(f"=_campaign_{digest[:32]}")
        # QP never emits "=_", so this boundary cannot occur in a body; deriving it from the
        # content keeps a re-render byte-identical apart from the Date.
        for part in message.iter_parts():
            del part["MIME-Version"]
    expected = list(message.keys())
    data = message.as_bytes(policy=POLICY)
    try:
        data = _mend_headers(data, campaign, to, subject)
    except HeaderFoldError as err:
        raise CampaignError(
            f"the message headers came out wrong: {err}",
            path=campaign.source,
            recipient=recipient.id,
        ) from None
    return _checked(campaign, recipient, data, expected, message_id, subject, digest)


_PART_HEADERS = (
    'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n"
)
_QP_CACHE_LIMIT = 20_000


class MessageBuilder:
    """Builds exactly the bytes `build_message` builds, at a fraction of the cost.

    The `email` package re-parses every header and re-encodes every body line for every
    message (about 2 ms each). What all messages of a run share (From, Reply-To, Date,
    the part headers, most body lines) is built once here; the first message of each
    builder is checked byte for byte against `build_message`, and any difference makes
    the builder fall back to it for the whole run.
    """

    def __init__(self, campaign: Campaign, date: datetime) -> None:
        self._campaign = campaign
        self._date = date
        try:
            self._from = to_header((campaign.sender,), "From")
            self._reply_to = to_header(campaign.reply_to, "Reply-To") if campaign.reply_to else ""
        except HeaderFoldError as err:
            raise CampaignError(str(err), path=campaign.source, field="campaign.from") from None
        self._date_line = _fold("Date", format_datetime(date))
        self._subjects: dict[str, str] = {}
        self._qp_lines: dict[bytes, bytes] = {}
        self._checked = False
        self._fallback = False

    def _qp(self, text: str) -> bytes:
        cache = self._qp_lines
        if len(cache) > _QP_CACHE_LIMIT:
            cache.clear()
        parts = []
        for line in text.encode("utf-8").splitlines():
            encoded = cache.get(line)
            if encoded is None:
                encoded = quoprimime.body_encode(
                    line.decode("latin-1") + "\n", POLICY.max_line_length or 78, eol="\r\n"
                ).encode("ascii")
                cache[line] = encoded
            parts.append(encoded)
        return b"".join(parts)

    def build(
        self, recipient: Recipient, rendered: Rendered, *, test_to: Mailbox | None = None
    ) -> BuiltMessage:
        if self._fallback:
            return build_message(
                self._campaign, recipient, rendered, date=self._date, test_to=test_to
            )
        built = self._build(recipient, rendered, test_to)
        if not self._checked:
            reference = build_message(
                self._campaign, recipient, rendered, date=self._date, test_to=test_to
            )
            self._checked = True
            if reference.data != built.data:
                self._fallback = True
                return reference
        return built

    def _build(
        self, recipient: Recipient, rendered: Rendered, test_to: Mailbox | None
    ) -> BuiltMessage:
        campaign = self._campaign
        subject, to, message_id = _addressing(campaign, recipient, rendered, test_to)
        addresses = tuple(m.address for m in to)
        digest = content_hash(subject, addresses, rendered)
        subject_line = self._subjects.get(subject)
        if subject_line is None:
            subject_line = subject_header(subject)
            if len(self._subjects) < 10_000:
                self._subjects[subject] = subject_line
        try:
            to_line = to_header(to)
        except HeaderFoldError as err:
            raise CampaignError(
                f"{err}; shorten the name",
                path=campaign.source,
                recipient=recipient.id,
                field="name",
            ) from None
        head = [
            self._from,
            to_line,
            self._reply_to,
            subject_line,
            self._date_line,
            message_id_header(message_id),
        ]
        text = self._qp(rendered.text)
        if rendered.html is None:
            head.append(_PART_HEADERS.format(subtype="plain"))
            head.append("MIME-Version: 1.0\r\n\r\n")
            data = "".join(head).encode("ascii") + text
            expected: tuple[str, ...] = _SINGLE_PART_NAMES
        else:
            boundary = f"=_campaign_{digest[:32]}"
            head.append(
                "MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n"
                f' boundary="{boundary}"\r\n\r\n--{boundary}\r\n'
            )
            head.append(_PART_HEADERS.format(subtype="plain") + "\r\n")
            data = b"".join(
                (
                    "".join(head).encode("ascii"),
                    text,
                    f"\r\n--{boundary}\r\n{_PART_HEADERS.format(subtype='html')}\r\n".encode(),
                    self._qp(rendered.html),
                    f"\r\n--{boundary}--\r\n".encode(),
                )
            )
            expected = _MULTIPART_NAMES
        names = [*expected[:2], *(("Reply-To",) if self._reply_to else ()), *expected[2:]]
        return _checked(campaign, recipient, data, names, message_id, subject, digest)


_SINGLE_PART_NAMES = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
)
_MULTIPART_NAMES = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type")
