"""`check --check-dns` against a real DNS server on 127.0.0.1: each domain asked once, in
bounded time, with progress; a domain DNS did not answer for is "not checked", never ok.

The server below is a few lines of UDP answering from a table: MX records, NXDOMAIN,
SERVFAIL, or silence. The resolver is dnspython's own, pointed at it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest
from campaign_factory import GOOD_YAML, write_campaign

from campaign.addresses import (
    UNREACHABLE,
    DomainResult,
    DomainStatus,
    check_domains,
    make_resolver,
)
from campaign.errors import ValidationErrors
from campaign.loading import Options, load_campaign

ACCEPTS = "mail.example.net"
ACCEPTS_TOO = "post.example.com"
MISSING = "missing.example.com"
FAILING = "servfail.example.org"
SILENT = "silent.example.org"


class DnsServer:
    """A UDP DNS server on 127.0.0.1 that answers MX queries from a table, and counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text().rstrip(".")
            self.queries.append(name)
            if name.endswith(SILENT):
                continue
            response = dns.message.make_response(query)
            if name in (ACCEPTS, ACCEPTS_TOO):
                response.answer.append(
                    dns.rrset.from_text(f"{name}.", 300, "IN", "MX", f"10 mx.{name}.")
                )
            elif name == FAILING:
                response.set_rcode(dns.rcode.SERVFAIL)
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def dead_resolver() -> dns.resolver.Resolver:
    """A resolver asking a UDP port on 127.0.0.1 that nothing listens on, 1 s per query."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    resolver = make_resolver(["127.0.0.1"], port)
    resolver.lifetime = 1.0
    return resolver


def campaign_with(tmp_path: Path, alice: str, bob: str, sender: str = "example.org") -> Path:
    """GOOD_YAML with these addresses (`"a@x", "b@y"`) for alice and bob, the sender at `sender`."""
    return write_campaign(
        tmp_path,
        GOOD_YAML.replace('"alice@example.com"', alice)
        .replace('"bob@example.net"', bob)
        .replace("sender@example.org", f"sender@{sender}"),
    )


def test_each_domain_is_asked_once_and_progress_is_told_per_domain(
    dns_server: DnsServer,
) -> None:
    seen: list[tuple[int, int, DomainResult]] = []
    results = check_domains(
        [ACCEPTS, ACCEPTS_TOO, ACCEPTS],
        resolver=make_resolver(["127.0.0.1"], dns_server.port),
        progress=lambda done, total, result: seen.append((done, total, result)),
    )
    assert results == {
        ACCEPTS: DomainResult(ACCEPTS, DomainStatus.ACCEPTS_MAIL),
        ACCEPTS_TOO: DomainResult(ACCEPTS_TOO, DomainStatus.ACCEPTS_MAIL),
    }
    assert sorted(dns_server.queries) == [ACCEPTS, ACCEPTS_TOO]
    assert [(done, total) for done, total, _ in seen] == [(1, 2), (2, 2)]
    assert {result.domain for _, _, result in seen} == {ACCEPTS, ACCEPTS_TOO}


def test_addresses_of_one_domain_cost_one_query_when_loading(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    path = campaign_with(
        tmp_path, f'"a@{ACCEPTS}", "b@{ACCEPTS}"', f'"c@{ACCEPTS}"', sender=ACCEPTS
    )
    options = Options(
        path, check_dns=True, dns_resolver=make_resolver(["127.0.0.1"], dns_server.port)
    )
    source = load_campaign(options)
    assert [r.addresses for r in source.recipients] == [
        (f"a@{ACCEPTS}", f"b@{ACCEPTS}"),
        (f"c@{ACCEPTS}",),
    ]
    assert dns_server.queries == [ACCEPTS]  # the sender and three addresses: one domain
    assert source.notices == ()


def test_domain_that_does_not_exist_is_refused_with_recipient_line_and_field(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    path = campaign_with(tmp_path, f'"a@{ACCEPTS}"', f'"bob@{MISSING}"')
    options = Options(
        path, check_dns=True, dns_resolver=make_resolver(["127.0.0.1"], dns_server.port)
    )
    with pytest.raises(ValidationErrors) as caught:
        load_campaign(options)
    messages = [str(error) for error in caught.value.errors]
    assert (
        f"{path}:11: recipient 'bob', field 'emails': invalid address 'bob@{MISSING}':"
        f" The domain name {MISSING} does not exist."
    ) in messages[-1]
    # The placeholder sender's domain does not exist on this server either: refused too.
    assert f"{path}:4: field 'campaign.from'" in messages[0]


def test_unanswered_domain_is_a_warning_not_ok(tmp_path: Path, dns_server: DnsServer) -> None:
    path = campaign_with(tmp_path, f'"a@{ACCEPTS}"', f'"bob@{SILENT}"', sender=ACCEPTS)
    resolver = make_resolver(["127.0.0.1"], dns_server.port)
    resolver.lifetime = 0.5
    started = time.monotonic()
    source = load_campaign(Options(path, check_dns=True, dns_resolver=resolver))
    assert time.monotonic() - started < 5
    summary, *others = source.notices
    assert summary.recipient is None
    assert summary.message.startswith(f"1 domain not checked (DNS did not answer): {SILENT};")
    assert [(n.recipient, n.field, n.line) for n in others] == [("bob", "emails", 11)]
    assert (
        others[0].message
        == f"bob@{SILENT}: the domain {SILENT} was not checked (DNS did not answer)"
    )


def test_servfail_is_not_checked_rather_than_refused(dns_server: DnsServer) -> None:
    resolver = make_resolver(["127.0.0.1"], dns_server.port)
    results = check_domains([ACCEPTS, FAILING], resolver=resolver)
    assert results[FAILING].status is DomainStatus.NOT_CHECKED
    assert results[ACCEPTS].status is DomainStatus.ACCEPTS_MAIL


def test_dead_resolver_gives_up_fast_and_says_dns_is_unreachable(tmp_path: Path) -> None:
    domains = [f"d{i}.example.net" for i in range(20)]
    seen: list[int] = []
    started = time.monotonic()
    results = check_domains(
        domains,
        resolver=dead_resolver(),
        progress=lambda done, total, result: seen.append(done),
    )
    assert time.monotonic() - started < 3  # one query's lifetime; was 1 min 44 s, silently
    assert set(results) == set(domains)
    assert {r.status for r in results.values()} == {DomainStatus.NOT_CHECKED}
    assert {r.reason for r in results.values()} == {UNREACHABLE}
    assert seen == list(range(1, 21))


def test_dead_resolver_when_loading_says_n_domains_not_checked(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, f'"a@{ACCEPTS}"', f'"bob@{MISSING}", "b2@{SILENT}"')
    options = Options(path, check_dns=True, dns_resolver=dead_resolver())
    source = load_campaign(options)
    assert source.notices[0].message.startswith(
        "4 domains not checked (DNS unreachable): example.org, mail.example.net,"
    )
    flagged = {n.recipient for n in source.notices[1:] if "was not checked" in n.message}
    assert flagged == {None, "alice", "bob"}  # the sender, and both recipients


def test_silent_server_is_bounded_by_the_total_time(dns_server: DnsServer) -> None:
    resolver = make_resolver(["127.0.0.1"], dns_server.port)
    started = time.monotonic()
    results = check_domains(
        [ACCEPTS, SILENT, *(f"x{i}.{SILENT}" for i in range(30))],
        resolver=resolver,
        query_seconds=0.4,
        total_seconds=1.0,
        workers=2,
    )
    assert time.monotonic() - started < 3
    assert results[ACCEPTS].status is DomainStatus.ACCEPTS_MAIL
    unchecked = [r for r in results.values() if r.status is DomainStatus.NOT_CHECKED]
    assert len(unchecked) == 31


def test_resolver_refusing_every_domain_is_suspected_in_the_hint(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    path = campaign_with(tmp_path, f'"a@{MISSING}"', '"b@gone.example.net"')
    options = Options(
        path, check_dns=True, dns_resolver=make_resolver(["127.0.0.1"], dns_server.port)
    )
    with pytest.raises(ValidationErrors) as caught:
        load_campaign(options)
    assert len(caught.value.errors) == 3
    assert {e.hint for e in caught.value.errors} == {
        "every domain was refused: is the DNS resolver filtering lookups?"
    }
