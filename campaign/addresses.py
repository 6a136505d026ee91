"""E-mail addresses: validation and normalisation through email-validator, at one boundary."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
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


_SIMPLE = re.compile(r"[^@\"\s\[\]\\]+@[^@\"\s\[\]\\]+\Z")
# Longer addresses take the full call, which knows every length rule.
_FAST_MAX_LENGTH = 64


def _validate(address: str) -> email_validator.ValidatedEmail:
    try:
        return email_validator.validate_email(
            address, check_deliverability=False, allow_smtputf8=False
        )
    except email_validator.EmailNotValidError as err:
        raise AddressError(str(err)) from None


@lru_cache(maxsize=65536)
def _ascii_domain(domain: str) -> str:
    """A campaign's addresses share few domains: each is validated (IDNA, UTS-46) once."""
    return _validate(f"postmaster@{domain}").ascii_domain


def _fast_normalise(address: str) -> str:
    """email-validator's answer for a plain ASCII address, its domain validated once.

    The same steps as `validate_email` for this case (local-part syntax, RFC 2142
    lowercasing, domain, length), through email-validator's own functions;
    tests/test_address_fast_path.py holds it to the full call.
    """
    local, _, domain = address.rpartition("@")
    if not local.isascii() or len(address) > _FAST_MAX_LENGTH:
        return _validate(address).ascii_email or ""
    try:
        ascii_local = validate_email_local_part(local, allow_smtputf8=False)["ascii_local_part"]
    except email_validator.EmailNotValidError as err:
        raise AddressError(str(err)) from None
    if ascii_local is None:  # pragma: no cover - ASCII local parts always have one
        return _validate(address).ascii_email or ""
    if ascii_local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        ascii_local = ascii_local.lower()
    normalised = f"{ascii_local}@{_ascii_domain(domain)}"
    return address if normalised == address else normalised  # share the string when equal


def normalise(address: str) -> str:
    """The address in email-validator's normalised ASCII form (IDN domains as punycode).

    Internationalised local parts need SMTPUTF8, which not every server speaks; they
    are refused here rather than failing halfway through a send. DNS is not asked:
    `check_domains` does that, once per domain.
    """
    reason = unsafe_reason(address)
    if reason:
        raise AddressError(reason)
    if _SIMPLE.match(address):
        return _fast_normalise(address)
    ascii_form = _validate(address).ascii_email
    if ascii_form is None:  # pragma: no cover - allow_smtputf8=False guarantees it
        raise AddressError("the address needs SMTPUTF8, which is not supported")
    return ascii_form


# Domains reserved for examples and tests (RFC 2606, RFC 6761): mail there reaches no one.
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net")
PLACEHOLDER_SUFFIXES = ("example", "invalid", "test", "localhost")


def placeholder_reason(address: str) -> str | None:
    """Why `address` is a placeholder that no letter should come from, or None.

    For `send` (also with --test-to) to refuse a campaign.from left at its example value.
    """
    domain = address.rpartition("@")[2].rstrip(".").lower()
    labels = domain.split(".")
    reserved = any(domain == d or domain.endswith("." + d) for d in PLACEHOLDER_DOMAINS)
    if reserved or labels[-1] in PLACEHOLDER_SUFFIXES:
        return f"{domain} is reserved for examples and tests (RFC 2606); no mail goes there"
    return None


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


# --check-dns: each distinct domain asked once, in parallel, within a bounded time.
DNS_QUERY_SECONDS = 3.0  # one DNS query (a domain takes up to four: MX, A, AAAA, TXT)
DNS_TOTAL_SECONDS = 30.0  # every domain of the campaign
DNS_WORKERS = 8
# When this many domains in a row go unanswered and none has been answered yet, DNS is
# taken as unreachable and the rest are not asked (a dead resolver costs one timeout).
DNS_GIVE_UP_AFTER = 3


class DomainStatus(StrEnum):
    """What DNS said about a domain: it takes mail, it does not, or it was not asked."""

    ACCEPTS_MAIL = "accepts mail"
    NO_MAIL = "does not accept mail"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True, slots=True)
class DomainResult:
    """One domain's answer; `reason` says why it takes no mail or was not checked."""

    domain: str
    status: DomainStatus
    reason: str = ""


# Called after each domain: (domains done, domains in all, the latest result).
DnsProgress = Callable[[int, int, DomainResult], None]

NO_ANSWER = "DNS did not answer"
UNREACHABLE = "DNS unreachable"
OUT_OF_TIME = "the time for DNS checks ran out"


def make_resolver(nameservers: Iterable[str], port: int = 53) -> dns.resolver.Resolver:
    """A resolver that asks these servers only (e.g. a local test server), not resolv.conf."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = list(nameservers)
    resolver.port = port
    return resolver


def _check_domain(
    domain: str, resolver: dns.resolver.Resolver, stop: threading.Event
) -> DomainResult:
    if stop.is_set():
        return DomainResult(domain, DomainStatus.NOT_CHECKED, UNREACHABLE)
    try:
        found = email_validator.validate_email(
            f"postmaster@{domain}",
            check_deliverability=True,
            allow_smtputf8=False,
            dns_resolver=resolver,
        )
    except email_validator.EmailNotValidError as err:
        return DomainResult(domain, DomainStatus.NO_MAIL, str(err))
    # email-validator leaves `mx` unset when DNS could not be asked (timeout, no
    # nameserver answered): "unknown", which is not "ok".
    if getattr(found, "mx", None) is None:
        return DomainResult(domain, DomainStatus.NOT_CHECKED, NO_ANSWER)
    return DomainResult(domain, DomainStatus.ACCEPTS_MAIL)


def check_domains(
    domains: Iterable[str],
    *,
    resolver: dns.resolver.Resolver | None = None,
    progress: DnsProgress | None = None,
    query_seconds: float = DNS_QUERY_SECONDS,
    total_seconds: float = DNS_TOTAL_SECONDS,
    workers: int = DNS_WORKERS,
) -> dict[str, DomainResult]:
    """Ask DNS whether each distinct domain accepts mail; every domain gets a result.

    At most `workers` domains are asked at once and no new one is started after
    `total_seconds`; a domain that was not answered in time is NOT_CHECKED. The
    resolver (the system's by default) has its lifetime capped to `query_seconds`.
    """
    ordered = list(dict.fromkeys(domains))
    results: dict[str, DomainResult] = {}
    if not ordered:
        return results
    if resolver is None:
        import dns.resolver

        resolver = dns.resolver.Resolver()
    resolver.lifetime = min(resolver.lifetime or query_seconds, query_seconds)
    deadline = time.monotonic() + total_seconds
    stop = threading.Event()
    pending = iter(ordered)
    unanswered = 0
    answered = False
    why_stopped = OUT_OF_TIME

    def record(result: DomainResult) -> None:
        results[result.domain] = result
        if progress is not None:
            progress(len(results), len(ordered), result)

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(ordered))))
    try:
        running: set[Future[DomainResult]] = set()
        for domain in pending:
            running.add(pool.submit(_check_domain, domain, resolver, stop))
            if len(running) >= workers:
                break
        while running:
            done, running = wait(
                running, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if not done:
                break  # out of time
            for future in done:
                result = future.result()
                record(result)
                if result.status is DomainStatus.NOT_CHECKED:
                    unanswered += 1
                else:
                    answered, unanswered = True, 0
            if not answered and unanswered >= DNS_GIVE_UP_AFTER:
                why_stopped = UNREACHABLE
                break
            if time.monotonic() >= deadline:
                break
            for domain in pending:
                running.add(pool.submit(_check_domain, domain, resolver, stop))
                if len(running) >= workers:
                    break
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    for domain in ordered:
        if domain not in results:
            record(DomainResult(domain, DomainStatus.NOT_CHECKED, why_stopped))
    if not answered:  # not one answer: the resolver, not the domains, is the problem
        return {
            domain: DomainResult(domain, DomainStatus.NOT_CHECKED, UNREACHABLE)
            for domain in ordered
        }
    return {domain: results[domain] for domain in ordered}
