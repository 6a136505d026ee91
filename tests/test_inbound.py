"""classify and match on every fixture under tests/fixtures/inbox, and on hostile input."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign.inbound import (
    MAX_MESSAGE_BYTES,
    Kind,
    MessageTooLarge,
    SentLetter,
    SentLetters,
    classify,
    clean_text,
    crlf_key,
    match,
)

FIXTURES = Path(__file__).parent / "fixtures" / "inbox"


def letter_id(recipient: str) -> str:
    return f"<kz-open-letter-2017-10.{recipient}@example.org>"


# The campaign's sent letters, as the lead's send log would give them.
LETTERS = SentLetters(
    [
        SentLetter(
            "president",
            letter_id("president"),
            ("nobody-here@example.org", "chancellery@example.com"),
        ),
        SentLetter(
            "general-prosecutor",
            letter_id("general-prosecutor"),
            ("office@example.com", "reception@example.net"),
        ),
        SentLetter(
            "national-security-committee",
            letter_id("national-security-committee"),
            ("knb-office@example.net",),
        ),
        SentLetter(
            "ministry-of-internal-affairs",
            letter_id("ministry-of-internal-affairs"),
            ("interior@example.net", "press@example.com"),
        ),
        SentLetter(
            "ministry-of-justice",
            letter_id("ministry-of-justice"),
            ("nosuchuser@example.net", "full@example.net", "press@example.net"),
        ),
        SentLetter(
            "ombudsman",
            letter_id("ombudsman"),
            ("ombudsman-typo@example.net", "ombudsman@example.com", "appeals@example.net"),
        ),
    ]
)


@dataclass(frozen=True)
class Want:
    kind: Kind
    recipient: str
    address: str | None
    status: str | None = None
    diagnostic: str | None = None  # a part of it
    matched_by: str = "message-id"


EXPECTED: dict[str, tuple[Kind, list[Want]]] = {
    "postfix-bounce-full.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "ombudsman",
                "ombudsman-typo@example.net",
                "5.1.1",
                "User unknown in virtual mailbox table",
            ),
        ],
    ),
    "postfix-bounce-headers-two-recipients.eml": (
        Kind.BOUNCE,
        [
            Want(Kind.BOUNCE, "ministry-of-justice", "full@example.net", "5.2.2", "Mailbox full"),
            Want(
                Kind.BOUNCE,
                "ministry-of-justice",
                "nosuchuser@example.net",
                "5.1.1",
                "User unknown",
            ),
        ],
    ),
    "postfix-bounce-local-unknown-user.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "president",
                "nobody-here@example.org",
                "5.1.1",
                'unknown user: "nobody-here@example.org"',
            ),
        ],
    ),
    "postfix-delayed.eml": (
        Kind.DELAYED,
        [
            Want(
                Kind.DELAYED,
                "general-prosecutor",
                "office@example.com",
                "4.4.1",
                "Connection refused",
            )
        ],
    ),
    "exim-bounce-text.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "national-security-committee",
                "knb-office@example.net",
                "5.1.1",
                "Recipient address rejected: User unknown",
                matched_by="address",
            ),
        ],
    ),
    "exim-dsn.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "ministry-of-internal-affairs",
                "interior@example.net",
                "5.0.0",
                "mailbox is full",
            ),
        ],
    ),
    "office365-ndr.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "president",
                "chancellery@example.com",
                "5.1.10",
                "RESOLVER.ADR.RecipientNotFound",
            ),
        ],
    ),
    "exchange-2003-ndr.eml": (
        Kind.BOUNCE,
        [Want(Kind.BOUNCE, "ombudsman", "appeals@example.net", "5.1.1", "does not exist")],
    ),
    "gmail-bounce.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "ombudsman",
                "ombudsman@example.com",
                "5.1.1",
                "User unknown in local recipient table",
            ),
        ],
    ),
    "qmail-bounce.eml": (
        Kind.BOUNCE,
        [
            Want(
                Kind.BOUNCE,
                "ministry-of-internal-affairs",
                "press@example.com",
                "5.1.1",
                "no mailbox here by that name",
                matched_by="address",
            ),
        ],
    ),
    "autoreply-rfc3834.eml": (
        Kind.AUTO_REPLY,
        [Want(Kind.AUTO_REPLY, "general-prosecutor", "reception@example.net")],
    ),
    "exchange-out-of-office.eml": (
        Kind.AUTO_REPLY,
        [Want(Kind.AUTO_REPLY, "national-security-committee", "knb-office@example.net")],
    ),
    "autoreply-russian.eml": (
        Kind.AUTO_REPLY,
        [Want(Kind.AUTO_REPLY, "ministry-of-internal-affairs", "interior@example.net")],
    ),
    "read-receipt.eml": (
        Kind.AUTO_REPLY,
        [Want(Kind.AUTO_REPLY, "president", "chancellery@example.com")],
    ),
    "reply-in-reply-to.eml": (
        Kind.REPLY,
        [Want(Kind.REPLY, "ombudsman", "ombudsman@example.com")],
    ),
    "reply-references-only.eml": (
        Kind.REPLY,
        [Want(Kind.REPLY, "ministry-of-internal-affairs", "press@example.com")],
    ),
    "reply-quotes-message-id-in-body.eml": (Kind.OTHER, []),
    # knb-office@example.net is one of this campaign's addresses too: the Message-ID decides.
    "dsn-for-another-campaign.eml": (Kind.BOUNCE, []),
    "truncated-dsn.eml": (Kind.OTHER, []),
    "malformed.eml": (Kind.OTHER, []),
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_has_an_expectation_and_a_provenance() -> None:
    names = sorted(path.name for path in FIXTURES.glob("*.eml"))
    assert names == sorted(EXPECTED)
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    assert [name for name in names if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_classified_as_its_kind(name: str) -> None:
    assert classify(fixture(name)).kind is EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_matches_the_right_recipient_address_and_reason(name: str) -> None:
    found = match(classify(fixture(name)), LETTERS)
    got = sorted(
        (m.kind, m.recipient, m.address, m.entry.status if m.entry else None, m.matched_by)
        for m in found
    )
    wanted = EXPECTED[name][1]
    assert got == sorted((w.kind, w.recipient, w.address, w.status, w.matched_by) for w in wanted)
    for want in wanted:
        if want.diagnostic is None:
            continue
        (hit,) = [m for m in found if m.address == want.address]
        assert hit.entry is not None and want.diagnostic in (hit.entry.diagnostic_code or "")


def test_real_postfix_bounce_reads_every_report_field() -> None:
    finding = classify(fixture("postfix-bounce-full.eml"))
    assert finding.key == "<20261204140150.908D820E7B2@mail.example.org>"
    assert finding.message_id == finding.key
    assert finding.sender == "Mail Delivery System <MAILER-DAEMON@example.org>"
    assert finding.subject == "Undelivered Mail Returned to Sender"
    assert finding.date is not None and finding.date.isoformat() == "2026-12-04T14:01:50+00:00"
    assert finding.reporting_mta == "mail.example.org"
    assert finding.original_message_id == letter_id("ombudsman")
    (entry,) = finding.recipients
    assert entry.final_recipient == "ombudsman-typo@example.net"
    assert entry.original_recipient == "ombudsman-typo@example.net"
    assert (entry.action, entry.status, entry.remote_mta) == ("failed", "5.1.1", "127.0.0.1")


def test_headers_only_report_names_the_original_from_its_rfc822_headers() -> None:
    finding = classify(fixture("postfix-bounce-headers-two-recipients.eml"))
    assert finding.original_message_id == letter_id("ministry-of-justice")
    assert [e.final_recipient for e in finding.recipients] == [
        "full@example.net",
        "nosuchuser@example.net",
    ]


def test_message_without_message_id_is_keyed_by_the_hash_of_its_bytes() -> None:
    data = fixture("qmail-bounce.eml")
    finding = classify(data)
    assert finding.message_id is None
    assert finding.key == crlf_key(data)
    assert finding.key.startswith("sha256:") and len(finding.key) == 7 + 64


def test_the_hash_key_is_the_same_for_lf_and_crlf_copies() -> None:
    data = fixture("qmail-bounce.eml")
    crlf = data.replace(b"\n", b"\r\n")
    assert classify(crlf).key == classify(data).key
    assert classify(crlf).sha256 != classify(data).sha256  # sha256 is of the bytes as given


def test_a_bounce_quoting_the_letter_only_in_its_text_is_matched_by_address_only() -> None:
    finding = classify(fixture("qmail-bounce.eml"))
    assert finding.original_message_id is None and finding.references == ()
    assert match(finding, SentLetters([])) == []


def test_a_flufl_bounce_for_an_address_this_campaign_never_had_matches_nothing() -> None:
    letters = SentLetters([SentLetter("ombudsman", letter_id("ombudsman"), ("a@example.net",))])
    assert match(classify(fixture("qmail-bounce.eml")), letters) == []


def test_a_report_naming_the_letter_matches_even_when_no_address_agrees() -> None:
    # Forwarded mail: the report names an address the letter was never sent to.
    letters = SentLetters([SentLetter("ombudsman", letter_id("ombudsman"), ("info@example.com",))])
    (found,) = match(classify(fixture("postfix-bounce-full.eml")), letters)
    assert (found.recipient, found.address, found.matched_by) == ("ombudsman", None, "message-id")
    assert found.entry is not None and found.entry.final_recipient == "ombudsman-typo@example.net"


def test_a_report_cut_after_its_first_recipient_still_counts_matched_by_address() -> None:
    data = fixture("postfix-bounce-headers-two-recipients.eml")
    cut = data[: data.index(b"Final-Recipient: rfc822; nosuchuser")]
    finding = classify(cut)
    assert finding.kind is Kind.BOUNCE and finding.original_message_id is None
    (found,) = match(finding, LETTERS)
    assert (found.recipient, found.address, found.matched_by) == (
        "ministry-of-justice",
        "full@example.net",
        "address",
    )


def test_the_campaigns_own_letter_in_the_mailbox_is_not_an_answer() -> None:
    own = (
        b"From: Campaign Office <campaigner@example.org>\n"
        b"To: ombudsman@example.com\nSubject: Open letter\n"
        b"Message-ID: <kz-open-letter-2017-10.ombudsman@example.org>\n"
        b"References: <kz-open-letter-2017-10.president@example.org>\n\nText.\n"
    )
    assert match(classify(own), LETTERS) == []


def test_a_reply_to_a_test_send_matches_when_its_letter_is_passed() -> None:
    test_id = "<test.kz-open-letter-2017-10.president@example.org>"
    letters = SentLetters([SentLetter("president", test_id, ("campaigner@example.org",))])
    reply = (
        b"From: campaigner@example.org\nTo: campaigner@example.org\nSubject: Re: test\n"
        b"Message-ID: <r1@example.org>\nIn-Reply-To: " + test_id.encode() + b"\n\nOk.\n"
    )
    (found,) = match(classify(reply), letters)
    assert (found.kind, found.recipient, found.letter_message_id) == (
        Kind.REPLY,
        "president",
        test_id,
    )


def test_message_id_domains_compare_without_case() -> None:
    reply = (
        b"From: someone@example.net\nSubject: Re: letter\nMessage-ID: <r2@example.net>\n"
        b"In-Reply-To: <kz-open-letter-2017-10.ombudsman@EXAMPLE.ORG>\n\nThanks.\n"
    )
    (found,) = match(classify(reply), LETTERS)
    assert (found.recipient, found.address) == ("ombudsman", None)


def test_a_reply_naming_two_letters_matches_both_recipients_once_each() -> None:
    reply = (
        b"From: someone@example.net\nSubject: Re: letters\nMessage-ID: <r3@example.net>\n"
        b"In-Reply-To: <kz-open-letter-2017-10.ombudsman@example.org>\n"
        b"References: <kz-open-letter-2017-10.president@example.org>\n"
        b" <kz-open-letter-2017-10.ombudsman@example.org>\n\nThanks.\n"
    )
    assert sorted(m.recipient for m in match(classify(reply), LETTERS)) == [
        "ombudsman",
        "president",
    ]


def _report(*recipient_blocks: str, returned: str = "") -> bytes:
    parts = [
        "From: MAILER-DAEMON@mx.example.net\nTo: campaigner@example.org\n"
        "Subject: Delivery report\nMessage-ID: <dsn1@mx.example.net>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nReport.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        + "\n".join(recipient_blocks)
    ]
    if returned:
        parts.append(f"\n--B\nContent-Type: text/rfc822-headers\n\n{returned}\n")
    parts.append("\n--B--\n")
    return "".join(parts).encode("utf-8")


JUSTICE_HEADERS = "Message-ID: <kz-open-letter-2017-10.ministry-of-justice@example.org>\n"


def test_a_delivered_report_is_not_a_bounce() -> None:
    data = _report(
        "Final-Recipient: rfc822; press@example.net\nAction: delivered\nStatus: 2.0.0\n",
        returned=JUSTICE_HEADERS,
    )
    finding = classify(data)
    assert finding.kind is Kind.OTHER and "delivered" in finding.evidence
    assert match(finding, LETTERS) == []


def test_failed_wins_over_delayed_for_the_same_address() -> None:
    data = _report(
        "Final-Recipient: rfc822; full@example.net\nAction: delayed\nStatus: 4.2.2\n",
        "Final-Recipient: rfc822; full@example.net\nAction: failed\nStatus: 5.2.2\n",
        returned=JUSTICE_HEADERS,
    )
    (found,) = match(classify(data), LETTERS)
    assert (found.kind, found.address, found.entry and found.entry.status) == (
        Kind.BOUNCE,
        "full@example.net",
        "5.2.2",
    )


def test_a_report_without_action_takes_it_from_the_status_class() -> None:
    data = _report(
        "Final-Recipient: rfc822; full@example.net\nStatus: 5.2.2\n", returned=JUSTICE_HEADERS
    )
    (entry,) = classify(data).recipients
    assert entry.action == "failed"


def test_recipient_types_and_case_are_normalised() -> None:
    data = _report(
        "Original-Recipient: rfc822;<NoSuchUser@Example.NET>\n"
        "Final-Recipient: RFC822 ;  nosuchuser@mx.example.net\nAction: failed\nStatus: 5.1.1\n",
        returned=JUSTICE_HEADERS,
    )
    (found,) = match(classify(data), LETTERS)
    assert found.address == "nosuchuser@example.net"


def test_utf8_recipient_escapes_are_decoded() -> None:
    data = _report(
        "Final-Recipient: utf-8; j\\x{00FC}rgen@example.net\nAction: failed\nStatus: 5.1.1\n",
        returned=JUSTICE_HEADERS,
    )
    (entry,) = classify(data).recipients
    assert entry.final_recipient == "jürgen@example.net"


def test_gmail_names_the_letter_in_its_per_message_block_when_no_headers_come_back() -> None:
    data = fixture("gmail-bounce.eml")
    cut = data[: data.index(b"--f403045c0b1a2a2d4b055c3b1a2a\nContent-Type: text/rfc822-headers")]
    cut = cut.replace(b"References:", b"X-R:").replace(b"In-Reply-To:", b"X-I:")
    finding = classify(cut)
    assert finding.original_message_id == letter_id("ombudsman")
    assert [m.address for m in match(finding, LETTERS)] == ["ombudsman@example.com"]


def test_header_text_is_decoded_and_stripped_of_controls() -> None:
    data = (
        b"From: =?utf-8?q?Evil=1B[2J=0A?= <x@example.net>\n"
        b"Subject: =?utf-8?q?Re:_hello=0D=0AX-Injected:_1=E2=80=AE?= \x07bell\n"
        b"Message-ID: <c1@example.net>\nIn-Reply-To: <kz-open-letter-2017-10.ombudsman@example.org>"
        b"\n\nBody\n"
    )
    finding = classify(data)
    assert finding.subject == "Re: hello X-Injected: 1 bell"
    assert not re.search("[\x00-\x1f\x7f\u202e]", finding.sender + finding.subject)
    (found,) = match(finding, LETTERS)
    assert found.kind is Kind.REPLY


def test_a_hostile_message_id_is_not_used_as_the_key() -> None:
    data = b"From: a@example.net\nMessage-ID: <a b\x1b[31m@x>\nSubject: s\n\nb\n"
    finding = classify(data)
    assert finding.message_id is None and finding.key.startswith("sha256:")


def test_size_cap_is_checked_before_parsing() -> None:
    with pytest.raises(MessageTooLarge) as caught:
        classify(b"Subject: x\n\n" + b"x" * 100, max_bytes=50)
    assert (caught.value.size, caught.value.limit) == (112, 50)
    assert MAX_MESSAGE_BYTES == 25 * 1024 * 1024


def test_bytes_without_headers_are_other_with_a_reason() -> None:
    finding = classify(b"\x00\x01\x02 not mail")
    assert finding.kind is Kind.OTHER and finding.problem is not None


def test_deeply_nested_multiparts_do_not_raise() -> None:
    depth = 3000
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    data = ("From: a@example.net\nSubject: deep\n" + head + "\nend\n").encode()
    assert classify(data).kind is Kind.OTHER


def test_a_mail_system_message_naming_no_failure_is_other() -> None:
    data = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Delivery report\n"
        b"Message-ID: <m1@mx.example.net>\n"
        b"In-Reply-To: <kz-open-letter-2017-10.ombudsman@example.org>\n\nAll is well.\n"
    )
    finding = classify(data)
    assert finding.kind is Kind.OTHER and finding.problem is not None
    assert match(finding, LETTERS) == []


def test_record_is_json_ready_and_names_the_inbound_message() -> None:
    (found,) = match(classify(fixture("postfix-bounce-full.eml")), LETTERS)
    record = json.loads(json.dumps(found.record()))
    assert record["recipient"] == "ombudsman"
    assert record["address"] == "ombudsman-typo@example.net"
    assert record["message_id"] == letter_id("ombudsman")
    assert record["inbound"] == "<20261204140150.908D820E7B2@mail.example.org>"
    assert record["status"] == "5.1.1" and record["action"] == "failed"
    assert record["sha256"] == found.finding.sha256
    assert found.event_key == (
        "<20261204140150.908D820E7B2@mail.example.org> ombudsman ombudsman-typo@example.net"
    )


def test_clean_text_cuts_long_values() -> None:
    assert clean_text("a" * 400, 10) == "aaaaaaaaa…"
    assert clean_text(" a\t\tb\u2028c ") == "a b c"


# --- never raises -------------------------------------------------------------------------

_HEADER_NAMES = [
    "From",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "Precedence",
    "X-Failed-Recipients",
    "Final-Recipient",
    "Action",
    "Status",
    "Date",
]
_VALUES = [
    "multipart/report; report-type=delivery-status; boundary=B",
    "multipart/report; report-type=disposition-notification; boundary=B",
    "message/delivery-status",
    "message/rfc822",
    "text/rfc822-headers",
    "base64",
    "quoted-printable",
    "<kz-open-letter-2017-10.ombudsman@example.org>",
    "=?utf-8?b?////?=",
    "=?x-unknown?q?=FF?=",
    "rfc822; a@example.net",
    "failed",
    "5.1.1",
    "MAILER-DAEMON@x",
]
_line = st.one_of(
    st.tuples(st.sampled_from(_HEADER_NAMES), st.sampled_from(_VALUES) | st.text(max_size=40)).map(
        lambda nv: f"{nv[0]}: {nv[1]}"
    ),
    st.sampled_from(["--B", "--B--", "", " folded", "Hi. This is the qmail-send program"]),
    st.text(max_size=60),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_classify_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    finding = classify(data)
    assert finding.size == len(data)
    match(finding, LETTERS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_line, max_size=60), st.sampled_from(["\n", "\r\n", "\r"]))
def test_classify_never_raises_on_mime_shaped_junk(lines: list[str], end: str) -> None:
    data = end.join(lines).encode("utf-8", "surrogateescape")
    finding = classify(data)
    assert not re.search("[\x00-\x1f\x7f]", finding.subject + finding.sender)
    for found in match(finding, LETTERS):
        json.dumps(found.record())


def test_a_flood_of_headers_is_refused_before_parsing() -> None:
    data = b"".join(b"X-H%d: v\n" % i for i in range(6000)) + b"\nbody\n"
    finding = classify(data)
    assert finding.kind is Kind.OTHER and finding.problem is not None
    assert "header block" in finding.problem


def test_a_long_bounce_is_still_read_from_its_head() -> None:
    data = fixture("qmail-bounce.eml") + b"x" * 79 + b"\n" + (b"y" * 79 + b"\n") * 30_000
    (found,) = match(classify(data), LETTERS)
    assert (found.kind, found.address) == (Kind.BOUNCE, "press@example.com")
