"""E-mail addresses: validation and normalisation through email-validator, at one boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from email_validator.syntax import validate_email_local_part

from campaign.headersafety import unsafe_reason

if TYPE_CHECKING:  # dnspython is imported only for --check-dns: it costs 6 MB of memory
    import dns.resolver

_NAME_ADDR = re.compile(r"\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*\Z")


class AddressError(ValueError):
    """An address email-validator refused; the message says why."""


@dataclass(frozen=True, slots=True)
class ParsedMailbox:
    display_name: str
    address: str


@lru_cache(maxsize=1)
def _resolver() -> dns.resolver.Resolver:
    return email_validator.caching_resolver(timeout=10)


_SIMPLE = re.compile(r"[^@\"\s\[\]\\]+@[^@\"\s\[\]\\]+\Z")
# Longer addresses take the full call, which knows every length rule.
_FAST_MAX_LENGTH = 64


def _validate(address: str, check_dns: bool) -> email_validator.ValidatedEmail:
    try:
        return email_validator.validate_email(
            address,
            check_deliverability=check_dns,
            allow_smtputf8=False,
            dns_resolver=_resolver() if check_dns else None,
        )
    except email_validator.EmailNotValidError as err:
        raise AddressError(str(err)) from None


@lru_cache(maxsize=65536)
def _ascii_domain(domain: str) -> str:
    """A campaign's addresses share few domains: each is validated (IDNA, UTS-46) once."""
    return _validate(f"postmaster@{domain}", False).ascii_domain


def _fast_normalise(address: str) -> str:
    """email-validator's answer for a plain ASCII address, its domain validated once.

    The same steps as `validate_email` for this case (local-part syntax, RFC 2142
    lowercasing, domain, length), through email-validator's own functions;
    tests/test_address_fast_path.py holds it to the full call.
    """
    local, _, domain = address.rpartition("@")
    if not local.isascii() or len(address) > _FAST_MAX_LENGTH:
        return _validate(address, False).ascii_email or ""
    try:
        ascii_local = validate_email_local_part(local, allow_smtputf8=False)["ascii_local_part"]
    except email_validator.EmailNotValidError as err:
        raise AddressError(str(err)) from None
    if ascii_local is None:  # pragma: no cover - ASCII local parts always have one
        return _validate(address, False).ascii_email or ""
    if ascii_local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        ascii_local = ascii_local.lower()
    normalised = f"{ascii_local}@{_ascii_domain(domain)}"
    return address if normalised == address else normalised  # share the string when equal


def normalise(address: str, *, check_dns: bool = False) -> str:
    """The address in email-validator's normalised ASCII form (IDN domains as punycode).

    Internationalised local parts need SMTPUTF8, which not every server speaks; they
    are refused here rather than failing halfway through a send.
    """
    reason = unsafe_reason(address)
    if reason:
        raise AddressError(reason)
    if not check_dns and _SIMPLE.match(address):
        return _fast_normalise(address)
    ascii_form = _validate(address, check_dns).ascii_email
    if ascii_form is None:  # pragma: no cover - allow_smtputf8=False guarantees it
        raise AddressError("the address needs SMTPUTF8, which is not supported")
    return ascii_form


def split_mailbox(text: str) -> ParsedMailbox:
    """Split `Name <addr>` (or a bare address) into its display name and address.

    Only the split happens here; the address still goes through `normalise`, and
    headers are built from the parts, never from this string.
    """
    reason = unsafe_reason(text)
    if reason:
        raise AddressError(reason)
    match = _NAME_ADDR.match(text)
    if match is None:
        if "<" in text or ">" in text:
            raise AddressError('expected "Name <address>" or a bare address')
        return ParsedMailbox("", text.strip())
    name = match.group("name")
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return ParsedMailbox(name.strip(), match.group("addr").strip())
