"""Rendered letter -> the exact bytes of one RFC 5322 message, checked before it can leave.

The headers are written here rather than by the `email` package: building each message
with `EmailMessage` costs about 2 ms, this about 0.1 ms. tests/test_message_builder.py
holds the output to the package's reading of it, on generated names, subjects and bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy, quoprimime
from email.header import decode_header, make_header
from email.utils import format_datetime

from campaign import models
from campaign.attachments import AttachmentError, AttachmentFiles, EncodedAttachment
from campaign.errors import CampaignError
from campaign.headersafety import HeaderBlockError, check_header_block, unsafe_reason
from campaign.models import Attachment, Campaign, Mailbox, Recipient, Rendered

# How drafts are read back: CRLF line ends, as they are written.
POLICY = policy.SMTP
LINE = 78  # RFC 5322's recommended line length
MAX_LETTER_BYTES = models.MAX_LETTER_BYTES
_WORD_BYTES = 39  # 52 base64 characters: an encoded word of 64, within RFC 2047's 75
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_QP_CACHE_LIMIT = 20_000
_PART_HEADERS = (
    'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n"
)
_PLAIN_HEADERS = _PART_HEADERS.format(subtype="plain")
_HTML_HEADERS = _PART_HEADERS.format(subtype="html")


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    data: bytes
    message_id: str
    subject: str
    content_hash: str
    sha256: str


def message_id_for(campaign: Campaign, recipient_id: str, *, test_run: str | None = None) -> str:
    """Deterministic for (campaign id, recipient id), at the sender's domain.

    A test send (`test_run` given) is marked `test.`; with a run id unique to each test run
    it gets a Message-ID of its own each time: mail programs drop a message whose
    Message-ID they have seen, so a re-test would seem not to arrive.
    """
    prefix = "" if test_run is None else "test." + (f"{test_run}." if test_run else "")
    return f"<{prefix}{campaign.id}.{recipient_id}@{campaign.sender.domain}>"


def content_hash(
    subject: str,
    addresses: tuple[str, ...],
    rendered: Rendered,
    attachments: Sequence[tuple[str, str]] = (),
) -> str:
    """What makes one recipient's letter this letter: not the Date, not the Message-ID.

    The subject, the addresses, the text and HTML, and each attachment's name and the
    SHA-256 of its bytes, in order. A letter without attachments hashes as it did before
    attachments existed, so a campaign part sent by an earlier version is not "changed".
    """
    fields: list[object] = [subject, list(addresses), rendered.text, rendered.html]
    if attachments:
        fields.append([[name, sha256] for name, sha256 in attachments])
    payload = json.dumps(fields, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 base64 encoded words, each holding whole characters.

    Readers join adjacent encoded words and drop the folding between them, so every
    space of `text` travels inside a word and survives.
    """
    words: list[str] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += encoded
    words.append(chunk.decode("utf-8"))
    return [
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    ]


def phrase_tokens(name: str) -> list[str]:
    """A display name as header tokens: atoms, a quoted string, or atoms and encoded words.

    Words that need encoding are encoded in runs, each run as few encoded words as fit,
    split after a space (kept inside the word): readers drop the whitespace between two
    encoded words (RFC 2047 6.2), so a space must travel inside one of them.
    """
    name = " ".join(name.split())  # readers collapse runs of spaces in names anyway
    words = name.split(" ")
    if name.isascii():
        if all(_ATEXT.match(word) for word in words):
            return words
        # A quoted string may fold at its spaces (RFC 5322 3.2.4): one token per word.
        return ('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"').split(" ")
    tokens: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if word and not _ATEXT.match(word):
            run.append(word)
            continue
        if run:
            tokens += _encoded_run(run)
            run = []
        if word:
            tokens.append(word)
    return tokens


def _encoded_run(words: list[str]) -> list[str]:
    chunks: list[str] = []
    chunk = ""
    for word in words:
        piece = f" {word}" if chunk else word
        if chunk and len((chunk + piece).encode("utf-8")) > _WORD_BYTES:
            chunks.append(chunk + " ")
            piece = word
            chunk = ""
        chunk += piece
    chunks.append(chunk)
    return [word for text in chunks for word in encoded_words(text)]


def fold(name: str, tokens: Sequence[str]) -> str:
    """`Name: token token ...` folded before a token wherever a line would pass 78."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > LINE and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def address_header(name: str, mailboxes: Sequence[Mailbox]) -> str:
    """From / To / Reply-To: one token per word, the comma kept with its mailbox."""
    tokens: list[str] = []
    for position, mailbox in enumerate(mailboxes):
        comma = "," if position < len(mailboxes) - 1 else ""
        if mailbox.display_name:
            tokens += [*phrase_tokens(mailbox.display_name), f"<{mailbox.address}>{comma}"]
        else:
            tokens.append(mailbox.address + comma)
    return fold(name, tokens)


def subject_header(subject: str) -> str:
    """The Subject: ASCII folded at its own spaces; anything else as encoded words."""
    if not subject.isascii():
        return fold("Subject", encoded_words(subject))
    line = f"Subject: {subject}"
    lines: list[str] = []
    while len(line) > LINE:
        cut = line.rfind(" ", 0, LINE + 1)
        if cut <= len("Subject:") or not line[:cut].strip():
            break  # one word longer than a line: it stays long (the limit is 998)
        lines.append(line[:cut])
        line = line[cut:]
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def decoded(header: str) -> str:
    """What a reader shows for a header line written here (unfolded, words decoded)."""
    value = header.partition(":")[2].replace("\r\n", "").strip()
    return str(make_header(decode_header(value)))


class MessageBuilder:
    """Builds each recipient's message; what all messages of a run share is built once."""

    def __init__(
        self,
        campaign: Campaign,
        date: datetime,
        *,
        max_bytes: int = MAX_LETTER_BYTES,
        files: AttachmentFiles | None = None,
    ) -> None:
        """`files`: attachments already read (prepare reads the campaign's once per run)."""
        self._campaign = campaign
        self._max_bytes = max_bytes
        self._from = address_header("From", (campaign.sender,))
        self._reply_to = address_header("Reply-To", campaign.reply_to) if campaign.reply_to else ""
        self._date_line = f"Date: {format_datetime(date)}\r\n"
        self._subjects: dict[str, str] = {}
        self._qp_lines: dict[bytes, bytes] = {}
        self._languages: dict[str, str] = {}
        self._check_shared()
        self._files = files if files is not None else AttachmentFiles(max_bytes)
        self._shared_files = tuple(self._encoded(a, None, keep=True) for a in campaign.attachments)

    def _encoded(
        self, attachment: Attachment, recipient: Recipient | None, *, keep: bool = False
    ) -> EncodedAttachment:
        try:
            return self._files.encoded(attachment, keep=keep)
        except AttachmentError as err:
            raise CampaignError(
                err.message,
                path=self._campaign.source,
                line=attachment.line,
                recipient=recipient.id if recipient else None,
                field=attachment.field,
                hint=err.hint,
            ) from None

    def _check_shared(self) -> None:
        campaign = self._campaign
        named = [("from", campaign.sender), *(("reply_to", m) for m in campaign.reply_to)]
        for field, mailbox in named:
            value = mailbox.display_name
            reason = unsafe_reason(value)
            if reason:
                raise CampaignError(
                    f"the {field} name {reason}", path=campaign.source, field=f"campaign.{field}"
                )

    def _qp(self, text: str) -> bytes:
        """Quoted-printable with CRLF line ends; any lone CR or LF is a line end too."""
        cache = self._qp_lines
        if len(cache) > _QP_CACHE_LIMIT:
            cache.clear()
        parts = []
        for line in text.encode("utf-8").splitlines() or [b""]:
            encoded = cache.get(line)
            if encoded is None:
                encoded = quoprimime.body_encode(
                    line.decode("latin-1") + "\n", LINE, eol="\r\n"
                ).encode("ascii")
                cache[line] = encoded
            parts.append(encoded)
        return b"".join(parts)

    def _subject_line(self, subject: str, recipient: Recipient) -> str:
        line = self._subjects.get(subject)
        if line is None:
            line = subject_header(subject)
            self._readback(line, subject, recipient, "subject")
            if len(self._subjects) < 10_000:
                self._subjects[subject] = line
        return line

    def _language_line(self, language: str) -> str:
        line = self._languages.get(language)
        if line is None:
            line = self._languages[language] = f"Content-Language: {language}\r\n"
        return line

    def _readback(self, line: str, meant: str, recipient: Recipient, field: str) -> None:
        """Every header written from data reads back as the data: checked on every message."""
        if decoded(line) != meant:
            raise CampaignError(
                f"the {field} header would not read back as written: {meant!r}",
                path=self._campaign.source,
                recipient=recipient.id,
                field=field,
            )

    def build(
        self,
        recipient: Recipient,
        rendered: Rendered,
        *,
        test_to: Mailbox | None = None,
        test_run: str = "",
    ) -> BuiltMessage:
        """The message for `recipient`; with `test_to`, a marked test copy for that mailbox."""
        campaign = self._campaign
        subject, to = rendered.subject, recipient.mailboxes
        message_id = message_id_for(campaign, recipient.id)
        if test_to is not None:
            subject = f"[TEST for {recipient.name}] {subject}"
            to = (test_to,)
            message_id = message_id_for(campaign, recipient.id, test_run=test_run)
        for field, value in (("subject", subject), ("name", recipient.name)):
            reason = unsafe_reason(value)
            if reason:
                raise CampaignError(
                    f"the {field} {reason}",
                    path=campaign.source,
                    recipient=recipient.id,
                    field=field,
                )
        addresses = tuple(m.address for m in to)
        files = self._shared_files
        if recipient.attachments:
            files += tuple(self._encoded(a, recipient) for a in recipient.attachments)
        if files:
            digest = content_hash(subject, addresses, rendered, [(f.name, f.sha256) for f in files])
        else:
            digest = content_hash(subject, addresses, rendered)
        to_line = address_header("To", to)
        if not to_line.isascii() or any(len(x) > 998 for x in to_line.split("\r\n")):
            raise CampaignError(
                "the name or address is too long for a header line",
                path=campaign.source,
                recipient=recipient.id,
                field="name",
            )
        if not recipient.name.isascii():
            self._readback(
                "To: " + " ".join(phrase_tokens(recipient.name)),
                " ".join(recipient.name.split()),
                recipient,
                "name",
            )
        head = [
            self._from,
            to_line,
            self._reply_to,
            self._subject_line(subject, recipient),
            self._date_line,
            f"Message-ID: {message_id}\r\n",
            self._language_line(campaign.language_of(recipient)),
        ]
        text = self._qp(rendered.text)
        if files:
            data = self._mixed(head, digest, text, rendered.html, files)
            names: tuple[str, ...] = _MULTIPART_NAMES
        elif rendered.html is None:
            head.append(_PLAIN_HEADERS)
            head.append("MIME-Version: 1.0\r\n\r\n")
            data = "".join(head).encode("ascii") + text
            names = _SINGLE_PART_NAMES
        else:
            boundary = f"=_campaign_{digest[:32]}"
            head.append(
                "MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n"
                f' boundary="{boundary}"\r\n\r\n'
            )
            data = b"".join(
                ("".join(head).encode("ascii"), *self._alternative(boundary, text, rendered.html))
            )
            names = _MULTIPART_NAMES
        if len(data) > self._max_bytes:
            raise self._too_large(len(data), recipient, files)
        if self._reply_to:
            names = (*names, "Reply-To")
        try:
            check_header_block(data, names)
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

    def _alternative(self, boundary: str, text: bytes, html: str) -> tuple[bytes, ...]:
        """The text and HTML parts of a multipart/alternative body, with its boundaries."""
        # QP never writes "=_", so this boundary cannot occur in a body; deriving it from
        # the content keeps a re-render byte-identical apart from the Date.
        return (
            f"--{boundary}\r\n{_PLAIN_HEADERS}\r\n".encode(),
            text,
            f"\r\n--{boundary}\r\n{_HTML_HEADERS}\r\n".encode(),
            self._qp(html),
            f"\r\n--{boundary}--\r\n".encode(),
        )

    def _mixed(
        self,
        head: list[str],
        digest: str,
        text: bytes,
        html: str | None,
        files: Sequence[EncodedAttachment],
    ) -> bytes:
        """multipart/mixed: the letter (text, or text and HTML) first, then each file."""
        # "=_campaign_m_" is no prefix of the alternative's "=_campaign_<hex>" nor the
        # other way round; base64 and QP bodies never hold "=_".
        mixed = f"=_campaign_m_{digest[:32]}"
        head.append(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n"
            f' boundary="{mixed}"\r\n\r\n--{mixed}\r\n'
        )
        pieces: list[bytes] = ["".join(head).encode("ascii")]
        if html is None:
            pieces += (f"{_PLAIN_HEADERS}\r\n".encode(), text)
        else:
            alternative = f"=_campaign_{digest[:32]}"
            opening = f'Content-Type: multipart/alternative;\r\n boundary="{alternative}"\r\n\r\n'
            pieces.append(opening.encode())
            pieces += self._alternative(alternative, text, html)
            pieces[-1] = pieces[-1].removesuffix(b"\r\n")
        separator = f"\r\n--{mixed}\r\n".encode()
        for file in files:
            pieces += (separator, file.part)
        pieces.append(f"\r\n--{mixed}--\r\n".encode())
        return b"".join(pieces)

    def _too_large(
        self, size: int, recipient: Recipient, files: Sequence[EncodedAttachment]
    ) -> CampaignError:
        campaign = self._campaign
        if not files:
            return CampaignError(
                f"the letter is {size:,} bytes, over the limit of {self._max_bytes:,}",
                path=campaign.source,
                recipient=recipient.id,
                hint="shorten it, or raise the limit if the server takes larger letters",
            )
        named = recipient.attachments[0] if recipient.attachments else campaign.attachments[0]
        listed = ", ".join(f"{f.name} ({f.size:,} bytes)" for f in files)
        return CampaignError(
            f"the letter with its attachments is {size:,} bytes as sent (base64),"
            f" over the limit of {self._max_bytes:,}: {listed}",
            path=campaign.source,
            line=named.line,
            recipient=recipient.id,
            field=named.field,
            hint="attach smaller files (a PDF can often be saved smaller), or link to them",
        )


_SINGLE_PART_NAMES = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "Content-Language",
)
_MULTIPART_NAMES = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Language",
)
