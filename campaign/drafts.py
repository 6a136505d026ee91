"""`.eml` drafts in the outbox: written from the prepared messages, checked when read back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path

from campaign.attachments import FoundAttachment, attachments_in
from campaign.display import visible
from campaign.errors import CampaignError, ValidationErrors
from campaign.headersafety import HeaderBlockError, check_header_block, unsafe_reason
from campaign.message import content_hash, message_id_for
from campaign.models import Campaign, CampaignFile, Draft, Recipient, Rendered, draft_filename
from campaign.prepare import Clock, Prepared, prepare, utc_now
from campaign.safefiles import ensure_folder, fsync_folder, read_file, write_file
from campaign.store import MessageStore
from campaign.transports.base import Transport
from campaign.transports.files import FileTransport, stamp_of

_DRAFT_NAME = re.compile(r"(?P<index>\d{2,})-(?P<id>[a-z0-9][a-z0-9_.-]*)\.eml\Z")
_ADDRESS_HEADERS = ("From", "To", "Reply-To")
_EXACT_HEADERS = ("Subject", "Message-ID", "MIME-Version", "Content-Language")
EDITED_FOLDER = "edited-drafts"  # in the outbox: drafts changed by hand, kept before a rewrite


@dataclass(frozen=True, slots=True)
class DraftsReport:
    written: tuple[Path, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]
    left_alone: tuple[str, ...] = ()
    kept_edited: tuple[str, ...] = ()  # edited drafts kept, as names under EDITED_FOLDER


def deliver_all(prepared: Prepared, transport: Transport) -> None:
    """Every draft, in order, through one transport (a folder, the terminal, memory)."""

    async def deliver() -> None:
        await transport.open()
        try:
            for draft in prepared.drafts:
                await transport.send(draft, prepared.data(draft), draft.addresses)
        finally:
            await transport.close()

    asyncio.run(deliver())


def write_drafts(prepared: Prepared, outbox: Path) -> DraftsReport:
    """Write one `.eml` per draft; remove earlier drafts of this campaign's no longer wanted.

    Only files campaign wrote go: named like a draft, with this campaign's Message-ID for
    the recipient the name says. Anything else in the folder is left alone. A draft changed
    by hand since campaign wrote it is first kept, as it was, in `EDITED_FOLDER`.
    """
    limit = prepared.campaign.max_letter_bytes
    current = {draft.filename for draft in prepared.drafts}
    campaign = prepared.campaign
    whole_campaign = len(prepared.drafts) == prepared.file_recipients
    ensure_folder(outbox)
    unwanted: list[Path] = []
    left_alone: list[str] = []
    for path in sorted(outbox.glob("*.eml")):
        if path.name in current or not _is_plain_file(path):
            continue
        if whole_campaign and _written_by(campaign, path):
            unwanted.append(path)
        else:
            left_alone.append(path.name)
    # Every edited draft is kept before any file is written or removed.
    replaced = [p for d in prepared.drafts if _is_plain_file(p := outbox / d.filename)]
    edited = [path for path in (*replaced, *unwanted) if edited_since_written(path, limit)]
    kept = _keep_edited(outbox / EDITED_FOLDER, edited, limit) if edited else []
    transport = FileTransport(outbox)
    with _file_errors_said():
        if kept:
            fsync_folder(outbox / EDITED_FOLDER)
        deliver_all(prepared, transport)
        for path in unwanted:
            path.unlink()
    return DraftsReport(
        tuple(transport.written),
        tuple(transport.replaced),
        tuple(path.name for path in unwanted),
        tuple(left_alone),
        tuple(kept),
    )


@contextmanager
def _file_errors_said() -> Iterator[None]:
    """A file system's refusal said as the user's problem, naming the file, not a traceback."""
    try:
        yield
    except OSError as err:
        raise CampaignError(f"cannot write here: {err.strerror}", path=err.filename) from None


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def edited_since_written(path: Path, limit: int) -> bool:
    """A draft changed since campaign wrote it: its time is not the stamp of its bytes.

    Also a draft an older version wrote, or one that cannot be read: nothing shows that
    it is as campaign wrote it, so it is kept rather than lost.
    """
    try:
        modified = os.stat(path, follow_symlinks=False).st_mtime_ns
        stamp = stamp_of(read_file(path, limit))
    except (OSError, CampaignError):
        return True
    return stamp is None or modified != stamp


def _keep_edited(folder: Path, paths: list[Path], limit: int) -> list[str]:
    """Keep each edited draft in `folder`, named for when it was edited; return the names.

    A hard link: it needs no read, whatever the size, and keeps the time; writing the
    draft again then gives the name a new file and leaves this one as it was. Where the
    file system has no hard links, a copy.
    """
    ensure_folder(folder)
    kept: list[str] = []
    named = folder  # what an error names: the folder, then each draft in turn
    try:
        # Listed once: a draft a stopped run already kept is not kept again.
        earlier = {_identity(entry): entry.name for entry in os.scandir(folder)}
        taken = set(earlier.values())
        for path in paths:
            named = path
            info = os.stat(path, follow_symlinks=False)
            if (known := earlier.get((info.st_dev, info.st_ino))) is not None:
                kept.append(known)
                continue
            edited = datetime.fromtimestamp(info.st_mtime, UTC)
            stem = f"{path.stem}.edited-{edited:%Y%m%dT%H%M%SZ}"
            name, number = f"{stem}.eml", 1
            while name in taken:
                number += 1
                name = f"{stem}-{number}.eml"
            try:
                os.link(path, folder / name, follow_symlinks=False)
            except OSError:
                data = read_file(path, max(limit, info.st_size))
                write_file(folder / name, data, durable=True)
            taken.add(name)
            kept.append(name)
    except OSError as err:
        raise CampaignError(
            f"cannot keep this edited draft before it is replaced: {err.strerror}",
            path=named,
            hint=f"move it out of the outbox, or make {folder} writable; nothing was written",
        ) from None
    return kept


def _identity(entry: os.DirEntry[str]) -> tuple[int, int]:
    info = entry.stat(follow_symlinks=False)
    return info.st_dev, info.st_ino


def _written_by(campaign: Campaign, path: Path) -> bool:
    """A draft of this campaign: its name and its Message-ID say the same recipient."""
    name = _DRAFT_NAME.match(path.name)
    if name is None:
        return False
    return message_id_of(path, campaign.max_letter_bytes) == message_id_for(campaign, name["id"])


def message_id_of(path: Path, limit: int) -> str | None:
    """The Message-ID a letter file gives; None when it gives none, or cannot be read."""
    try:
        head = read_file(path, limit).partition(b"\r\n\r\n")[0]
        message_id = BytesHeaderParser(policy=policy.compat32).parsebytes(head)["Message-ID"]
    except (CampaignError, ValueError):
        return None
    return None if message_id is None else str(message_id).strip()


MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1: a line of a message, CRLF not counted


def crlf_letter(data: bytes) -> bytes:
    """The letter with CRLF line ends, ending in CRLF; raise ValueError naming a bad line.

    A file whose lines all end in LF (an editor's save) is converted; a bare CR anywhere,
    or LF and CRLF mixed, is refused: some servers take a bare CR as a line end, which
    lets a body smuggle SMTP commands (the class of CVE-2023-51764). So are a NUL byte and
    a line longer than RFC 5322 allows, which servers refuse or cut (after other letters
    had gone, were they found only then).
    """
    if b"\r" not in data:
        data = data.replace(b"\n", b"\r\n")
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        last = number == len(lines)
        text = line[:-1] if line.endswith(b"\r") and not last else line
        if b"\r" in text:
            raise ValueError(f"line {number} holds a bare CR (a carriage return without LF)")
        if b"\0" in text:
            raise ValueError(f"line {number} holds a NUL byte")
        if len(text) > MAX_LINE_OCTETS:
            raise ValueError(
                f"line {number} is {len(text):,} bytes long, more than the {MAX_LINE_OCTETS}"
                " a mail line may have (RFC 5322); wrap it"
            )
        if not last and not line.endswith(b"\r"):
            raise ValueError(f"line {number} ends in LF while others end in CRLF")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _mailboxes(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    header = message[name]
    if header is None:
        return []
    return [
        (" ".join(a.display_name.split()).casefold(), f"{a.username}@{a.domain.lower()}")
        for a in header.addresses
    ]


def _shown(value: object) -> str:
    return "(absent)" if value is None else repr(visible(str(value))[:200])


def _header_problem(data: bytes, expected: list[str]) -> str | None:
    """Headers the draft has that the letter has not, has twice (in any case), or lacks."""
    head = data.partition(b"\r\n\r\n")[0]
    names = [
        visible(line.partition(b":")[0].decode("ascii", "replace"))
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]
    wanted = {name.lower() for name in expected}
    extra = sorted({n for n in names if n.lower() not in wanted})
    if extra:
        return f"the draft has header(s) campaign does not write here: {', '.join(extra)}"
    for name in expected:
        spellings = [n for n in names if n.lower() == name.lower()]
        if len(spellings) > 1:
            return f"the draft has {name} more than once ({', '.join(spellings)})"
        if not spellings:
            return f"the draft has no {name} header"
    return None


def letter_problem(data: bytes, reference: bytes) -> str | None:
    """Why `data` is not the campaign's letter for the recipient of `reference`, or None.

    Exactly the headers the campaign writes, once each (names in any case); From, To and
    Reply-To with the same addresses and names (names compared case-insensitively);
    Subject, Message-ID, MIME-Version and Content-Language as built; a Date that reads as
    a date; the same content type (text, alternative, mixed); and the same attachments, in
    order: names, types and bytes. (The text may have been edited in review; an attachment
    cannot be, so a different one is a draft made from files that have changed since, or a
    draft tampered with.)
    """
    end = reference.find(b"\r\n\r\n")
    expected = [
        line.partition(b":")[0].decode("ascii")
        for line in reference[:end].split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]
    problem = _header_problem(data, expected)
    if problem is not None:
        return problem
    try:
        check_header_block(data, expected)
    except HeaderBlockError as err:
        return f"the header block is not the one campaign writes: {err}"
    parser = BytesParser(policy=policy.default)
    try:
        ours, theirs = parser.parsebytes(reference), parser.parsebytes(data)
        assert isinstance(ours, EmailMessage) and isinstance(theirs, EmailMessage)
        for name in _ADDRESS_HEADERS:
            if _mailboxes(theirs, name) != _mailboxes(ours, name):
                return f"the {name} header is {_shown(theirs[name])}, not {_shown(ours[name])}"
        for name in _EXACT_HEADERS:
            if str(theirs[name]).strip() != str(ours[name]).strip():
                return f"the {name} header is {_shown(theirs[name])}, not {_shown(ours[name])}"
        if theirs["Date"] is None or theirs["Date"].datetime is None:
            return "the Date header is not a date"
        if theirs.get_content_type() != ours.get_content_type():
            return (
                f"the letter is {_shown(theirs.get_content_type())},"
                f" not {_shown(ours.get_content_type())} as campaign builds it"
            )
    except Exception as err:  # a header the email package cannot even read
        return f"a header cannot be read: {type(err).__name__}"
    try:
        return _text_problem(theirs) or _attachment_problem(
            attachments_in(theirs), attachments_in(ours)
        )
    except Exception as err:  # a part the email package cannot even read
        return f"a part cannot be read: {type(err).__name__}"


def _text_problem(message: EmailMessage) -> str | None:
    """A text part edited so that it no longer says what the reviewer saw: 8-bit bytes in a
    part that declares quoted-printable (or 7bit), or bytes that are not its charset."""
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_filename():
            continue  # an attachment: compared as bytes
        encoding = part.get("Content-Transfer-Encoding", "7bit").strip().lower()
        payload = part.get_payload()
        assert isinstance(payload, str)
        if encoding in ("7bit", "quoted-printable") and not payload.isascii():
            return (
                f"its {part.get_content_type()} part holds characters typed into a"
                f" {encoding} part, which a mail reader does not show as typed; write them"
                " in the template and run `campaign drafts` again"
            )
        charset = part.get_content_charset() or "us-ascii"
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        try:
            data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return (
                f"its {part.get_content_type()} part does not decode as {charset} (an edit"
                " of its quoted-printable codes?)"
            )
    return None


def _attachment_problem(theirs: list[FoundAttachment], ours: list[FoundAttachment]) -> str | None:
    def names(found: list[FoundAttachment]) -> str:
        return ", ".join(_shown(a.name) for a in found) or "none"

    if [a.name for a in theirs] != [a.name for a in ours]:
        return f"the draft's attachments are {names(theirs)}, not {names(ours)}"
    for draft, built in zip(theirs, ours, strict=True):
        if draft.content_type != built.content_type:
            return (
                f"the attachment {_shown(draft.name)} is sent as {_shown(draft.content_type)},"
                f" not {_shown(built.content_type)}"
            )
        if draft.sha256 != built.sha256:
            return (
                f"the attachment {_shown(draft.name)} in the draft is not the file as it is"
                " now (its SHA-256 differs)"
            )
    return None


def stray_drafts(source: CampaignFile, outbox: Path) -> list[str]:
    """The `.eml` files in the outbox that are no recipient's draft: nothing sends them."""
    total = len(source.recipients)
    names = {draft_filename(r.index, r.id, total) for r in source.recipients}
    return sorted(path.name for path in outbox.glob("*.eml") if path.name not in names)


def read_outbox(
    source: CampaignFile,
    recipients: tuple[Recipient, ...],
    outbox: Path,
    store: MessageStore,
    *,
    clock: Clock = utc_now,
) -> Prepared:
    """The reviewed drafts, byte for byte, once each is checked as a whole letter.

    Every recipient's letter is built first (nothing leaves before all of them render),
    and each draft must carry exactly the headers that build has, with the same values.
    """
    wanted = {recipient.id for recipient in recipients}
    with MessageStore() as built_store:
        built = prepare(source, source.recipients, built_store, clock=clock)
        references = {
            d.recipient_id: built.data(d) for d in built.drafts if d.recipient_id in wanted
        }
    total = len(source.recipients)
    errors: list[CampaignError] = []
    drafts: list[Draft] = []
    for recipient in recipients:
        path = outbox / draft_filename(recipient.index, recipient.id, total)
        try:
            data = _checked_draft(
                path, recipient, references[recipient.id], source.campaign.max_letter_bytes
            )
            draft = _draft(source.campaign, recipient, path, data, total)
        except CampaignError as err:
            errors.append(err)
            continue
        drafts.append(replace(draft, offset=store.put(data)))
    if errors:
        raise ValidationErrors(errors)
    return Prepared(source.campaign, drafts, store, total)


def _checked_draft(path: Path, recipient: Recipient, reference: bytes, limit: int) -> bytes:
    def refuse(
        message: str, hint: str = "run `campaign drafts` again to rebuild it"
    ) -> CampaignError:
        return CampaignError(message, path=path, recipient=recipient.id, hint=hint)

    if not path.exists() and not path.is_symlink():
        raise refuse(
            "no draft for this recipient in the outbox",
            hint="run `campaign drafts` first, or send without --from-outbox",
        )
    data = read_file(path, limit)
    try:
        data = crlf_letter(data)
    except ValueError as err:
        raise refuse(str(err)) from None
    problem = letter_problem(data, reference)
    if problem is not None:
        raise refuse(problem)
    return data


def _draft(campaign: Campaign, recipient: Recipient, path: Path, data: bytes, total: int) -> Draft:
    """The draft's identity; its content hash from its decoded parts, as a build's is."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    subject = str(message["Subject"])
    reason = unsafe_reason(subject)
    if reason:
        raise CampaignError(
            f"the subject {reason}", path=path, recipient=recipient.id, field="Subject"
        )
    try:
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        # Decoded with CRLF line ends (the wire form); the rendered letter used LF.
        rendered = Rendered(
            subject=subject,
            text=text_part.get_content().replace("\r\n", "\n") if text_part else "",
            html=html_part.get_content().replace("\r\n", "\n") if html_part else None,
        )
    except (LookupError, ValueError, KeyError) as err:
        raise CampaignError(
            f"the letter's body cannot be read: {type(err).__name__}",
            path=path,
            recipient=recipient.id,
        ) from None
    # Hashed as a build hashes them: each file's name and the SHA-256 of its bytes.
    files = [(found.name, found.sha256) for found in attachments_in(message)]
    return Draft(
        recipient_id=recipient.id,
        index=recipient.index,
        file_recipients=total,
        sender=campaign.envelope_sender,
        addresses=recipient.addresses,
        message_id=message_id_for(campaign, recipient.id),
        content_hash=content_hash(subject, recipient.addresses, rendered, files),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        offset=0,
    )
