"""recipients.yaml -> a validated CampaignFile; every problem reported with file, line and field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from campaign.addresses import (
    AddressError,
    DnsProgress,
    DomainStatus,
    check_domains,
    normalise,
    split_mailbox,
)
from campaign.attachments import AttachmentError, locate, wire_size
from campaign.errors import CampaignError, ValidationErrors
from campaign.headersafety import unsafe_reason
from campaign.languages import LanguageError, normalise_language
from campaign.lint import find_notices, unused_key_notices
from campaign.message import MAX_LETTER_BYTES
from campaign.models import (
    DEFAULT_LANGUAGE,
    IMAP_SECURITY_MODES,
    SMTP_SECURITY_MODES,
    Attachment,
    Campaign,
    CampaignFile,
    ImapFileSettings,
    Mailbox,
    Notice,
    Recipient,
    SmtpFileSettings,
    data_line,
)
from campaign.render import template_keys
from campaign.strictyaml import FlatList, YamlList, YamlMapping, read_yaml

if TYPE_CHECKING:
    import dns.resolver

TOP_LEVEL_KEYS = ("campaign", "recipients", "smtp", "imap")
CAMPAIGN_KEYS = (
    "id",
    "subject",
    "from",
    "reply_to",
    "return_path",
    "template",
    "language",
    "attachments",
    "max_letter_size",
)
CAMPAIGN_REQUIRED = ("id", "subject", "from")
RECIPIENT_REQUIRED = ("id", "name", "emails")
RECIPIENT_KEYS = (*RECIPIENT_REQUIRED, "language", "attachments")
SMTP_KEYS = ("host", "port", "security", "username", "ca_file")
IMAP_KEYS = ("host", "port", "security", "username", "ca_file", "folder")
# One letter goes to all of a recipient's addresses in one To header; a list this long is
# a mistake (a pasted mailing list), and the header parser is quadratic in it.
MAX_ADDRESSES_PER_RECIPIENT = 100
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?\Z")

# Secret-looking keys, refused anywhere in the file (see secret_key_reason). A key is
# split into words at `_`, `-`, `.`, spaces, digits and camelCase humps; it is refused
# when one of its words, or two neighbouring words, is in these lists. Whole words only:
# `passport_no`, `secretary`, `keywords` and `compass` stay allowed.
SECRET_WORDS = frozenset(
    {
        "password", "passwords", "passwd", "pass", "pwd", "pw", "passphrase", "passcode",
        "secret", "secrets", "token", "tokens", "apikey", "apikeys",
        "credential", "credentials", "creds", "privkey",
    }
)  # fmt: skip
SECRET_WORD_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "key")}
)
# Without separators, these are still unmistakable inside a key (`smtppassword`).
SECRET_PARTS = ("password", "passwd", "passphrase", "apikey")
_KEY_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


@dataclass(frozen=True, slots=True)
class Options:
    """How to read a campaign file."""

    path: Path
    templates_dir: Path | None = None
    check_dns: bool = False
    # --check-dns: told after each domain (the terminal shows progress); the resolver
    # to ask instead of the system's (tests point it at a local server).
    dns_progress: DnsProgress | None = None
    dns_resolver: dns.resolver.Resolver | None = None
    # Where attachment paths are found; None: the campaign file's folder. (`campaign
    # import` checks its YAML in a temporary file that will live elsewhere.)
    attachments_folder: Path | None = None
    # Look for likely mistakes (near-duplicate words, unused keys) to show as warnings:
    # `check` and `send` do; reading only who the recipients are (`log`, `report`) need not.
    notices: bool = True

    @property
    def folder(self) -> Path:
        """The folder attachment paths are relative to, and must stay inside."""
        return self.attachments_folder or self.path.parent


def load_campaign(options: Options) -> CampaignFile:
    """Read, check and normalise the campaign file; raise ValidationErrors listing every problem."""
    document = read_yaml(options.path, refuse_key=secret_key_reason)
    checker = _Checker(options.path)
    result = checker.check(document, options)
    if checker.errors or result is None:
        raise ValidationErrors(checker.errors)
    return result


def secret_key_reason(key: str) -> tuple[str, str] | None:
    """Why `key` may not be in a campaign file (message, hint), or None when it may.

    Templates see every key of the file, and the file is often shared or versioned:
    passwords, tokens and keys belong in the environment, the keyring or a prompt.
    """
    words = [word.lower() for word in _KEY_WORD.findall(key)]
    folded = key.lower()
    found = next((word for word in words if word in SECRET_WORDS), None)
    if found is None:
        found = next(
            (f"{a}_{b}" for a, b in pairwise(words) if (a, b) in SECRET_WORD_PAIRS),
            None,
        )
    if found is None:
        found = next((part for part in SECRET_PARTS if part in folded), None)
    if found is None:
        return None
    kind = "a password" if found.startswith("pass") or found == "pwd" else "a secret"
    return (
        f"{kind} does not belong in the campaign file (the key '{key}' looks like one)",
        "remove it and set CAMPAIGN_SMTP_PASSWORD (or CAMPAIGN_IMAP_PASSWORD) in the"
        " environment, or let campaign ask for it; if it is no secret, rename the key",
    )


@lru_cache(maxsize=1024)
def _close_match(key: str, candidates: tuple[str, ...]) -> str | None:
    normalised = key.lower().replace("-", "_").replace(" ", "_")
    if normalised in candidates:
        return normalised
    matches = difflib.get_close_matches(normalised, candidates, n=1, cutoff=0.7)
    return matches[0] if matches else None


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return "a text"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _template_notices(campaign: Campaign, recipients: tuple[Recipient, ...]) -> tuple[Notice, ...]:
    """Keys no template uses but one edit away from a key they do (`salutaion`)."""
    keys = template_keys(campaign, {campaign.language_of(r) for r in recipients})
    if keys is None:  # a template missing or broken: rendering reports it
        return ()
    return unused_key_notices(
        recipients,
        campaign.data,
        keys.recipient,
        keys.campaign,
        program_recipient_keys=RECIPIENT_KEYS,
        program_campaign_keys=CAMPAIGN_KEYS,
    )


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[CampaignError] = []
        # --check-dns: each domain with where its addresses are (text, line, recipient, field)
        self.domains: dict[str, list[tuple[str, int, str | None, str]]] = {}
        self.notices: list[Notice] = []
        self._check_dns = False
        # Each attachment path written in the file, found once: (path, name, size) or why not.
        self._found: dict[str, tuple[Path, str, int] | AttachmentError] = {}
        self._campaign_files: tuple[Attachment, ...] = ()
        self._max_letter = MAX_LETTER_BYTES

    def error(
        self,
        message: str,
        *,
        line: int | None,
        recipient: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.errors.append(
            CampaignError(
                message, path=self.path, line=line, recipient=recipient, field=field, hint=hint
            )
        )

    def check(self, document: Any, options: Options) -> CampaignFile | None:
        self._check_dns = options.check_dns
        if not isinstance(document, YamlMapping):
            self.error(
                "the file must be a mapping with 'campaign' and 'recipients'",
                line=getattr(document, "line", 1),
            )
            return None
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                guess = _close_match(key, TOP_LEVEL_KEYS)
                self.error(
                    f"unknown top-level key '{key}'",
                    line=document.line_of(key),
                    field=key,
                    hint=f"did you mean '{guess}'?" if guess else "expected campaign, recipients",
                )
        smtp = self._smtp(document)
        imap = self._imap(document)
        campaign = self._campaign(document, options, smtp)
        return_path = self._return_path(document)
        recipients = self._recipients(document, options)
        if options.check_dns and not self.errors:
            self._check_domains(options)
        if campaign is None or recipients is None or self.errors:
            return None
        notices = tuple(self.notices)
        if options.notices:
            notices += (*find_notices(recipients), *_template_notices(campaign, recipients))
        campaign = replace(campaign, imap=imap, return_path=return_path)
        return CampaignFile(campaign, recipients, notices)

    def _section(self, document: YamlMapping, key: str, required: bool) -> YamlMapping | None:
        if key not in document:
            if required:
                self.error(f"the '{key}' section is missing", line=document.line, field=key)
            return None
        value = document[key]
        if not isinstance(value, YamlMapping):
            self.error(
                f"'{key}' must be a mapping, not {_type_name(value)}",
                line=document.line_of(key),
                field=key,
            )
            return None
        return value

    def _known_keys(
        self,
        mapping: YamlMapping,
        known: tuple[str, ...],
        required: tuple[str, ...],
        *,
        closed: bool,
        recipient: str | None = None,
        prefix: str = "",
    ) -> None:
        """Report missing required keys, and unknown keys that look like a misspelt known one."""
        for key in mapping:
            if key in known:
                continue
            guess = _close_match(key, known)
            if guess is not None and guess not in mapping:
                hint = f"did you mean '{guess}'?"
            elif closed:
                hint = f"expected one of {', '.join(known)}"
            else:
                continue
            self.error(
                f"unknown key '{key}'",
                line=mapping.line_of(key),
                recipient=recipient,
                field=prefix + key,
                hint=hint,
            )
        for key in required:
            if key not in mapping and not any(_close_match(k, known) == key for k in mapping):
                self.error(
                    f"the required key '{key}' is missing",
                    line=mapping.line,
                    recipient=recipient,
                    field=prefix + key,
                )

    def _text(
        self,
        mapping: YamlMapping,
        key: str,
        *,
        recipient: str | None = None,
        prefix: str = "",
        header: bool = True,
    ) -> str | None:
        if key not in mapping:
            return None
        value = mapping[key]
        line = mapping.line_of(key)
        if not isinstance(value, str):
            self.error(
                f"expected a text, found {_type_name(value)}",
                line=line,
                recipient=recipient,
                field=prefix + key,
                hint='put it in quotes: "..."' if isinstance(value, int) else None,
            )
            return None
        if not value.strip():
            self.error("the value is empty", line=line, recipient=recipient, field=prefix + key)
            return None
        if header:
            reason = unsafe_reason(value)
            if reason:
                self.error(reason, line=line, recipient=recipient, field=prefix + key)
                return None
        return value

    def _mailboxes(
        self, value: Any, line: int, *, field: str, recipient: str | None, check_dns: bool
    ) -> list[Mailbox] | None:
        texts: list[tuple[str, int]]
        if isinstance(value, str):
            texts = [(value, line)]
        elif isinstance(value, (YamlList, FlatList)):
            if len(value) > MAX_ADDRESSES_PER_RECIPIENT:
                self.error(
                    f"{len(value)} addresses; at most {MAX_ADDRESSES_PER_RECIPIENT} are allowed",
                    line=line,
                    recipient=recipient,
                    field=field,
                    hint="one letter goes to all of them in one To header;"
                    " split them over several recipients",
                )
                return None
            texts = []
            for position, item in enumerate(value):
                item_line = value.line_of_item(position) if isinstance(value, YamlList) else line
                if not isinstance(item, str):
                    self.error(
                        f"expected an address, found {_type_name(item)}",
                        line=item_line,
                        recipient=recipient,
                        field=field,
                    )
                    return None
                texts.append((item, item_line))
        else:
            self.error(
                f"expected an address or a list of addresses, found {_type_name(value)}",
                line=line,
                recipient=recipient,
                field=field,
            )
            return None
        mailboxes: list[Mailbox] = []
        for text, text_line in texts:
            try:
                parsed = split_mailbox(text)
                address = normalise(parsed.address)
            except AddressError as err:
                self.error(
                    f"invalid address {text!r}: {err}",
                    line=text_line,
                    recipient=recipient,
                    field=field,
                )
                continue
            mailboxes.append(Mailbox(parsed.display_name, address))
            if check_dns:
                self.domains.setdefault(address.rpartition("@")[2], []).append(
                    (text, text_line, recipient, field)
                )
        return mailboxes

    def _check_domains(self, options: Options) -> None:
        """Errors for addresses at domains that take no mail; notices for unchecked ones."""
        results = check_domains(
            self.domains, resolver=options.dns_resolver, progress=options.dns_progress
        )
        unchecked = [r for r in results.values() if r.status is DomainStatus.NOT_CHECKED]
        hint = "check the domain, or remove the address"
        if len(results) > 2 and all(r.status is DomainStatus.NO_MAIL for r in results.values()):
            hint = "every domain was refused: is the DNS resolver filtering lookups?"
        for result in results.values():
            for text, line, recipient, field in self.domains[result.domain]:
                if result.status is DomainStatus.NO_MAIL:
                    self.error(
                        f"invalid address {text!r}: {result.reason}",
                        line=line,
                        recipient=recipient,
                        field=field,
                        hint=hint,
                    )
                elif result.status is DomainStatus.NOT_CHECKED:
                    self.notices.append(
                        Notice(
                            f"{text}: the domain {result.domain} was not checked ({result.reason})",
                            recipient=recipient,
                            field=field,
                            line=line,
                        )
                    )
        if unchecked:
            reasons = sorted({r.reason for r in unchecked})
            shown = ", ".join(r.domain for r in unchecked[:10])
            more = f" and {len(unchecked) - 10} more" if len(unchecked) > 10 else ""
            noun = "domain" if len(unchecked) == 1 else "domains"
            self.notices.insert(
                0,
                Notice(
                    f"{len(unchecked)} {noun} not checked ({'; '.join(reasons)}): {shown}{more};"
                    " run `campaign check --check-dns` again when DNS answers",
                    field="emails",
                ),
            )

    def _campaign(
        self, document: YamlMapping, options: Options, smtp: SmtpFileSettings
    ) -> Campaign | None:
        section = self._section(document, "campaign", required=True)
        if section is None:
            return None
        self._known_keys(
            section, CAMPAIGN_KEYS, CAMPAIGN_REQUIRED, closed=False, prefix="campaign."
        )
        self._max_letter = self._letter_limit(section)
        campaign_id = self._text(section, "id", prefix="campaign.")
        if campaign_id is not None and not _SLUG.match(campaign_id):
            self.error(
                f"'{campaign_id}' is not a slug",
                line=section.line_of("id"),
                field="campaign.id",
                hint="use lowercase letters, digits and hyphens, e.g. open-letter-2017",
            )
            campaign_id = None
        language = self._language(section, prefix="campaign.") or DEFAULT_LANGUAGE
        subjects: dict[str, str] = {}
        if isinstance(section.get("subject"), YamlMapping):
            subjects = self._subjects(section["subject"])
            subject = subjects.get(language) or next(iter(subjects.values()), None)
        else:
            subject = self._text(section, "subject", prefix="campaign.")
        if "attachments" in section:
            self._campaign_files = self._attachments(
                section, options.folder, recipient=None, field="campaign.attachments"
            )
        template = "letter"
        if "template" in section:
            template = self._text(section, "template", prefix="campaign.") or ""
            if template and not re.fullmatch(r"[A-Za-z0-9_.-]+", template):
                self.error(
                    f"'{template}' is not a template name",
                    line=section.line_of("template"),
                    field="campaign.template",
                    hint="give the name only, e.g. letter for templates/letter.txt.j2",
                )
                template = ""
        sender: Mailbox | None = None
        if "from" in section:
            errors_before = len(self.errors)
            found = self._mailboxes(
                section["from"],
                section.line_of("from"),
                field="campaign.from",
                recipient=None,
                check_dns=options.check_dns,
            )
            if found is not None and len(found) != 1 and len(self.errors) == errors_before:
                self.error(
                    "expected exactly one sender address",
                    line=section.line_of("from"),
                    field="campaign.from",
                )
            elif found:
                sender = found[0]
        reply_to: list[Mailbox] = []
        if "reply_to" in section:
            reply_to = (
                self._mailboxes(
                    section["reply_to"],
                    section.line_of("reply_to"),
                    field="campaign.reply_to",
                    recipient=None,
                    check_dns=options.check_dns,
                )
                or []
            )
        if campaign_id is None or subject is None or sender is None or not template:
            return None
        templates_dir = options.templates_dir or options.path.parent / "templates"
        return Campaign(
            id=campaign_id,
            subject=subject,
            sender=sender,
            reply_to=tuple(reply_to),
            template=template,
            data=section,
            source=options.path,
            templates_dir=templates_dir,
            smtp=smtp,
            language=language,
            subjects=subjects,
            attachments=self._campaign_files,
            max_letter_bytes=self._max_letter,
        )

    def _letter_limit(self, section: YamlMapping) -> int:
        """`campaign.max_letter_size`: the largest letter in MiB, as sent (default 10)."""
        value = section.get("max_letter_size")
        if value is None:
            return MAX_LETTER_BYTES
        if not isinstance(value, int) or not 1 <= value <= 1024:
            self.error(
                "expected a whole number of MiB between 1 and 1024",
                line=section.line_of("max_letter_size"),
                field="campaign.max_letter_size",
                hint="e.g. max_letter_size: 25 (most servers take 10 to 35 MiB)",
            )
            return MAX_LETTER_BYTES
        return value * 1024 * 1024

    def _language(
        self, mapping: YamlMapping, *, recipient: str | None = None, prefix: str = ""
    ) -> str | None:
        """The mapping's `language`, in canonical case; None when absent or refused."""
        text = self._text(mapping, "language", recipient=recipient, prefix=prefix)
        if text is None:
            return None
        try:
            return normalise_language(text)
        except LanguageError as err:
            self.error(
                str(err),
                line=mapping.line_of("language"),
                recipient=recipient,
                field=prefix + "language",
                hint="a language other than the campaign's picks"
                " templates/<template>.<language>.txt.j2",
            )
            return None

    def _subjects(self, mapping: YamlMapping) -> dict[str, str]:
        """campaign.subject given per language: {language: subject template}."""
        subjects: dict[str, str] = {}
        if not mapping:
            self.error(
                "no subject is given",
                line=mapping.line,
                field="campaign.subject",
                hint='write one subject, or one per language: subject: {en: "...", ru: "..."}',
            )
        for key in mapping:
            field = f"campaign.subject.{key}"
            try:
                language = normalise_language(key)
            except LanguageError as err:
                self.error(str(err), line=mapping.line_of(key), field=field)
                continue
            text = self._text(mapping, key, prefix="campaign.subject.")
            if language in subjects:
                self.error(
                    f"a second subject for the language '{language}'",
                    line=mapping.line_of(key),
                    field=field,
                )
            elif text is not None:
                subjects[language] = text
        return subjects

    def _attachments(
        self, mapping: YamlMapping, folder: Path, *, recipient: str | None, field: str
    ) -> tuple[Attachment, ...]:
        """`attachments:` (one path or a list of them), each a file inside `folder`."""
        value = mapping["attachments"]
        line = mapping.line_of("attachments")
        written: list[tuple[str, int]] = []
        if isinstance(value, str):
            written = [(value, line)]
        elif isinstance(value, (YamlList, FlatList)):
            for position, item in enumerate(value):
                item_line = value.line_of_item(position) if isinstance(value, YamlList) else line
                if not isinstance(item, str):
                    self.error(
                        f"expected a file name, found {_type_name(item)}",
                        line=item_line,
                        recipient=recipient,
                        field=field,
                    )
                    return ()
                written.append((item, item_line))
        else:
            self.error(
                f"expected a file name or a list of file names, found {_type_name(value)}",
                line=line,
                recipient=recipient,
                field=field,
            )
            return ()
        taken = {a.name: a for a in self._campaign_files} if recipient is not None else {}
        found: list[Attachment] = []
        for text, text_line in written:
            if not text.strip():
                self.error("the value is empty", line=text_line, recipient=recipient, field=field)
                continue
            result = self._found.get(text)
            if result is None:
                try:
                    result = locate(folder, text)
                except AttachmentError as err:
                    result = err
                self._found[text] = result
            if isinstance(result, AttachmentError):
                self.error(
                    result.message,
                    line=text_line,
                    recipient=recipient,
                    field=field,
                    hint=result.hint,
                )
                continue
            path, name, size = result
            if wire_size(size) > self._max_letter:
                self.error(
                    f"{text!r} is {size:,} bytes, {wire_size(size):,} as sent (base64):"
                    f" over the letter size limit of {self._max_letter:,} bytes",
                    line=text_line,
                    recipient=recipient,
                    field=field,
                    hint="attach a smaller file (a PDF can often be saved smaller), or link to it",
                )
                continue
            attachment = Attachment(text, path, name, size, text_line, field)
            other = taken.get(name)
            if other is not None:
                where = "the campaign's" if other.field != field else f"line {other.line}"
                self.error(
                    f"two attachments named {name!r} in one letter ({text!r} and"
                    f" {other.written!r}, {where})",
                    line=text_line,
                    recipient=recipient,
                    field=field,
                    hint="a reader could not tell them apart: rename one of the files",
                )
                continue
            taken[name] = attachment
            found.append(attachment)
        return tuple(found)

    def _smtp(self, document: YamlMapping) -> SmtpFileSettings:
        section = self._section(document, "smtp", required=False)
        if section is None:
            return SmtpFileSettings()
        self._known_keys(section, SMTP_KEYS, (), closed=True, prefix="smtp.")
        port = section.get("port")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            self.error(
                "expected a port number between 1 and 65535",
                line=section.line_of("port"),
                field="smtp.port",
            )
            port = None
        security = self._text(section, "security", prefix="smtp.")
        if security is not None and security not in SMTP_SECURITY_MODES:
            self.error(
                f"'{security}' is not a security mode",
                line=section.line_of("security"),
                field="smtp.security",
                hint=f"expected one of {', '.join(SMTP_SECURITY_MODES)}",
            )
            security = None
        return SmtpFileSettings(
            host=self._text(section, "host", prefix="smtp."),
            port=port,
            security=security,
            username=self._text(section, "username", prefix="smtp."),
            ca_file=self._text(section, "ca_file", prefix="smtp."),
        )

    def _imap(self, document: YamlMapping) -> ImapFileSettings:
        section = self._section(document, "imap", required=False)
        if section is None:
            return ImapFileSettings()
        self._known_keys(section, IMAP_KEYS, (), closed=True, prefix="imap.")
        port = section.get("port")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            self.error(
                "expected a port number between 1 and 65535",
                line=section.line_of("port"),
                field="imap.port",
            )
            port = None
        security = self._text(section, "security", prefix="imap.")
        if security is not None and security not in IMAP_SECURITY_MODES:
            self.error(
                f"'{security}' is not a security mode",
                line=section.line_of("security"),
                field="imap.security",
                hint=f"expected one of {', '.join(IMAP_SECURITY_MODES)}",
            )
            security = None
        return ImapFileSettings(
            host=self._text(section, "host", prefix="imap."),
            port=port,
            security=security,
            username=self._text(section, "username", prefix="imap."),
            ca_file=self._text(section, "ca_file", prefix="imap."),
            folder=self._text(section, "folder", prefix="imap."),
        )

    def _return_path(self, document: YamlMapping) -> str | None:
        """campaign.return_path: the envelope sender (MAIL FROM), an address only."""
        section = document.get("campaign")
        if not isinstance(section, YamlMapping) or "return_path" not in section:
            return None
        text = self._text(section, "return_path", prefix="campaign.")
        if text is None:
            return None
        line = section.line_of("return_path")
        try:
            parsed = split_mailbox(text)
            if parsed.display_name:
                raise AddressError("the envelope sender is an address only, without a name")
            address = normalise(parsed.address)
        except AddressError as err:
            self.error(
                f"invalid address {text!r}: {err}",
                line=line,
                field="campaign.return_path",
                hint="bounces go to this address; give a bare address, e.g. bounces@example.org",
            )
            return None
        if self._check_dns:
            self.domains.setdefault(address.rpartition("@")[2], []).append(
                (text, line, None, "campaign.return_path")
            )
        return address

    def _recipients(self, document: YamlMapping, options: Options) -> tuple[Recipient, ...] | None:
        if "recipients" not in document:
            self.error("the 'recipients' list is missing", line=document.line, field="recipients")
            return None
        items = document["recipients"]
        line = document.line_of("recipients")
        if not isinstance(items, list):
            self.error(
                f"'recipients' must be a list, not {_type_name(items)}",
                line=line,
                field="recipients",
            )
            return None
        if not items:
            self.error("the recipient list is empty", line=line, field="recipients")
            return None
        recipients: list[Recipient] = []
        # Keyed by the recipient's own strings where they can be: a campaign of many
        # recipients then holds no copy of its ids and addresses while it is checked.
        seen_ids: dict[str, Recipient] = {}
        seen_addresses: dict[str, Recipient] = {}
        for index, item in enumerate(items, 1):
            item_line = items.line_of_item(index - 1) if isinstance(items, YamlList) else line
            recipient = self._recipient(item, item_line, index, options)
            if recipient is None:
                continue
            if recipient.id in seen_ids:
                first = seen_ids[recipient.id].data
                self.error(
                    f"the id '{recipient.id}' is used twice"
                    f" (first on line {data_line(first, 'id')})",
                    line=data_line(recipient.data, "id"),
                    recipient=recipient.id,
                    field="id",
                    hint="every recipient needs its own id",
                )
                continue
            seen_ids[recipient.id] = recipient
            for address in recipient.addresses:
                key = address.casefold()
                key = address if key == address else key
                other = seen_addresses.get(key)
                if other is None:
                    seen_addresses[key] = recipient
                    continue
                where = (
                    "twice for this recipient"
                    if other is recipient
                    else f"also under recipient '{other.id}'"
                    f" (line {data_line(other.data, 'emails')})"
                )
                self.error(
                    f"the address {address} is listed {where}",
                    line=data_line(recipient.data, "emails"),
                    recipient=recipient.id,
                    field="emails",
                    hint="an address may receive the letter only once",
                )
            recipients.append(recipient)
        return tuple(recipients)

    def _recipient(self, item: Any, line: int, index: int, options: Options) -> Recipient | None:
        if not isinstance(item, YamlMapping):
            self.error(
                f"recipient #{index} must be a mapping with id, name and emails,"
                f" not {_type_name(item)}",
                line=line,
                field="recipients",
            )
            return None
        raw_id = item.get("id")
        label = raw_id if isinstance(raw_id, str) else f"#{index}"
        errors_before = len(self.errors)
        self._known_keys(item, RECIPIENT_KEYS, RECIPIENT_REQUIRED, closed=False, recipient=label)
        recipient_id = self._text(item, "id", recipient=label)
        if recipient_id is not None and not _SLUG.match(recipient_id):
            self.error(
                f"'{recipient_id}' is not a slug",
                line=item.line_of("id"),
                recipient=label,
                field="id",
                hint="use lowercase letters, digits and hyphens, e.g. ministry-of-justice",
            )
        name = self._text(item, "name", recipient=label)
        mailboxes: list[Mailbox] | None = None
        if "emails" in item:
            mailboxes = self._mailboxes(
                item["emails"],
                item.line_of("emails"),
                field="emails",
                recipient=label,
                check_dns=options.check_dns,
            )
            if mailboxes == [] and item["emails"] in ([], ""):
                self.error(
                    "the address list is empty",
                    line=item.line_of("emails"),
                    recipient=label,
                    field="emails",
                )
        language = self._language(item, recipient=label) if "language" in item else None
        attachments: tuple[Attachment, ...] = ()
        if "attachments" in item:
            attachments = self._attachments(
                item, options.folder, recipient=label, field="attachments"
            )
        if len(self.errors) > errors_before or recipient_id is None or name is None:
            return None
        assert mailboxes is not None
        return Recipient(
            id=recipient_id,
            name=name,
            addresses=tuple(mailbox.address for mailbox in mailboxes),
            index=index,
            line=item.line,
            data=item,
            language=language,
            attachments=attachments,
        )
