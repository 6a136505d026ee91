"""recipients.yaml -> a validated CampaignFile; every problem reported with file, line and field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from campaign.addresses import AddressError, normalise, split_mailbox
from campaign.errors import CampaignError, ValidationErrors
from campaign.headersafety import unsafe_reason
from campaign.lint import find_notices
from campaign.models import (
    Campaign,
    CampaignFile,
    Mailbox,
    Recipient,
    SmtpFileSettings,
    data_line,
)
from campaign.strictyaml import FlatList, YamlList, YamlMapping, read_yaml

TOP_LEVEL_KEYS = ("campaign", "recipients", "smtp")
CAMPAIGN_KEYS = ("id", "subject", "from", "reply_to", "template")
CAMPAIGN_REQUIRED = ("id", "subject", "from")
RECIPIENT_KEYS = ("id", "name", "emails")
SMTP_KEYS = ("host", "port", "security", "username", "ca_file")
SECURITY_CHOICES = ("starttls", "tls", "none")
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?\Z")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|smtp_password", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Options:
    """How to read a campaign file."""

    path: Path
    templates_dir: Path | None = None
    check_dns: bool = False


def load_campaign(options: Options) -> CampaignFile:
    """Read, check and normalise the campaign file; raise ValidationErrors listing every problem."""
    document = read_yaml(options.path)
    checker = _Checker(options.path)
    result = checker.check(document, options)
    if checker.errors or result is None:
        raise ValidationErrors(checker.errors)
    return result


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


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[CampaignError] = []

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
        if not isinstance(document, YamlMapping):
            self.error(
                "the file must be a mapping with 'campaign' and 'recipients'",
                line=getattr(document, "line", 1),
            )
            return None
        self._refuse_secrets(document)
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
        campaign = self._campaign(document, options, smtp)
        recipients = self._recipients(document, options)
        if campaign is None or recipients is None or self.errors:
            return None
        notices = find_notices(recipients)
        return CampaignFile(campaign, recipients, notices)

    def _refuse_secrets(self, node: Any) -> None:
        if isinstance(node, YamlMapping):
            for key, value in node.items():
                if _SECRET_KEY.fullmatch(key):
                    self.error(
                        "a password does not belong in the campaign file",
                        line=node.line_of(key),
                        field=key,
                        hint="remove it and set CAMPAIGN_SMTP_PASSWORD in the environment,"
                        " or let `campaign send` ask for it",
                    )
                self._refuse_secrets(value)
        elif isinstance(node, YamlList):
            for item in node:
                self._refuse_secrets(item)

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
                address = normalise(parsed.address, check_dns=check_dns)
            except AddressError as err:
                self.error(
                    f"invalid address {text!r}: {err}",
                    line=text_line,
                    recipient=recipient,
                    field=field,
                )
                continue
            mailboxes.append(Mailbox(parsed.display_name, address))
        return mailboxes

    def _campaign(
        self, document: YamlMapping, options: Options, smtp: SmtpFileSettings
    ) -> Campaign | None:
        section = self._section(document, "campaign", required=True)
        if section is None:
            return None
        self._known_keys(
            section, CAMPAIGN_KEYS, CAMPAIGN_REQUIRED, closed=False, prefix="campaign."
        )
        campaign_id = self._text(section, "id", prefix="campaign.")
        if campaign_id is not None and not _SLUG.match(campaign_id):
            self.error(
                f"'{campaign_id}' is not a slug",
                line=section.line_of("id"),
                field="campaign.id",
                hint="use lowercase letters, digits and hyphens, e.g. open-letter-2017",
            )
            campaign_id = None
        subject = self._text(section, "subject", prefix="campaign.")
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
        )

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
        if security is not None and security not in SECURITY_CHOICES:
            self.error(
                f"'{security}' is not a security mode",
                line=section.line_of("security"),
                field="smtp.security",
                hint=f"expected one of {', '.join(SECURITY_CHOICES)}",
            )
            security = None
        return SmtpFileSettings(
            host=self._text(section, "host", prefix="smtp."),
            port=port,
            security=security,
            username=self._text(section, "username", prefix="smtp."),
            ca_file=self._text(section, "ca_file", prefix="smtp."),
        )

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
        self._known_keys(item, RECIPIENT_KEYS, RECIPIENT_KEYS, closed=False, recipient=label)
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
        )
