"""Frozen dataclasses shared by every layer: the campaign, its recipients, prepared messages."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign.errors import UsageError


def data_line(data: Mapping[str, Any], key: str) -> int | None:
    """The line of `key` in `data`, when the data came from a file (which keeps its lines)."""
    line_of = getattr(data, "line_of", None)
    return int(line_of(key)) if line_of is not None else None


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A display name and an address in email-validator's normalised ASCII form."""

    display_name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning about the input that does not stop the run (e.g. a likely typo)."""

    message: str
    recipient: str | None = None
    field: str | None = None
    line: int | None = None


# The default largest letter, attachments included, as it goes on the wire (base64 and all);
# a campaign may set its own with `campaign.max_letter_size` (in MiB).
MAX_LETTER_BYTES = 10 * 1024 * 1024

# The security modes, each listed once: the loader, the settings and the CLI use these.
SMTP_SECURITY_MODES = ("starttls", "tls", "none")
IMAP_SECURITY_MODES = ("tls", "starttls", "none")


@dataclass(frozen=True, slots=True)
class ImapFileSettings:
    """The non-secret IMAP settings a campaign file may carry in its `imap:` section."""

    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    ca_file: str | None = None
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class SmtpFileSettings:
    """The non-secret SMTP settings a campaign file may carry in its `smtp:` section."""

    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with the letter, as the campaign file names it and as it was found.

    `path` is resolved and inside the campaign file's folder; `size` is what it held when
    the campaign file was checked. `line` and `field` say where it is named, for errors.
    """

    written: str  # as the campaign file writes it, relative to its folder
    path: Path
    name: str  # the file name the recipient sees
    size: int
    line: int | None = None
    field: str = "attachments"


DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee: every address receives the same letter, under the recipient's name."""

    id: str
    name: str
    addresses: tuple[str, ...]
    index: int
    line: int
    data: Mapping[str, Any] = field(repr=False)
    language: str | None = None  # None: the campaign's language
    attachments: tuple[Attachment, ...] = ()  # their own, sent after the campaign's

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        return tuple(Mailbox(self.name, address) for address in self.addresses)


@dataclass(frozen=True, slots=True)
class Campaign:
    """The campaign section of the file, validated, plus where its parts live."""

    id: str
    subject: str
    sender: Mailbox
    reply_to: tuple[Mailbox, ...]
    template: str
    data: Mapping[str, Any] = field(repr=False)
    source: Path
    templates_dir: Path
    smtp: SmtpFileSettings = SmtpFileSettings()
    imap: ImapFileSettings = ImapFileSettings()
    return_path: str | None = None  # the envelope sender (MAIL FROM); None: the From address
    max_letter_bytes: int = MAX_LETTER_BYTES
    language: str = DEFAULT_LANGUAGE  # the language of the unsuffixed templates
    # campaign.subject given per language; empty when one subject serves every language
    # (then `subject` is it; otherwise `subject` is the campaign language's, or the first).
    subjects: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()  # sent with every letter

    @property
    def envelope_sender(self) -> str:
        return self.return_path or self.sender.address

    def language_of(self, recipient: Recipient) -> str:
        """The language `recipient` gets the letter in."""
        return recipient.language or self.language

    def data_line(self, key: str) -> int | None:
        """The line of `key` in the campaign section, when the data came from a file."""
        return data_line(self.data, key)


@dataclass(frozen=True, slots=True)
class CampaignFile:
    """Everything read from recipients.yaml, validated."""

    campaign: Campaign
    recipients: tuple[Recipient, ...]
    notices: tuple[Notice, ...] = ()

    def select(self, ids: Sequence[str] | None) -> tuple[Recipient, ...]:
        """The recipients with these ids, in file order; all of them when `ids` is empty."""
        if not ids:
            return self.recipients
        require_known(ids, {recipient.id for recipient in self.recipients}, self.campaign.source)
        wanted = set(ids)
        return tuple(r for r in self.recipients if r.id in wanted)


def require_known(ids: Iterable[str], known: Collection[str], source: Path) -> None:
    """Refuse recipient ids that are not in the campaign file (the one place this is said)."""
    unknown = [rid for rid in ids if rid not in known]
    if unknown:
        raise UsageError(
            f"no recipient with id {', '.join(repr(rid) for rid in unknown)}",
            path=source,
            hint="`campaign check` lists the ids",
        )


@dataclass(frozen=True, slots=True)
class Rendered:
    """The text a template produced for one recipient."""

    subject: str
    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class Draft:
    """One finished message: envelope, identity and where its bytes are kept.

    The bytes themselves live in a `MessageStore` so that a campaign of many
    recipients does not hold every message in memory at once.
    """

    recipient_id: str
    index: int
    file_recipients: int  # how many the campaign file has: the width of `index` in the name
    sender: str
    addresses: tuple[str, ...]
    message_id: str
    content_hash: str
    sha256: str
    size: int
    offset: int
    segment: int = 0

    @property
    def filename(self) -> str:
        # Made when asked, not kept: one string less per recipient of a large campaign.
        return draft_filename(self.index, self.recipient_id, self.file_recipients)


def draft_filename(index: int, recipient_id: str, file_recipients: int) -> str:
    """`03-ministry-of-justice.eml`: the file order first, so a listing reads like the file."""
    width = max(2, len(str(file_recipients)))
    return f"{index:0{width}d}-{recipient_id}.eml"
