"""MessageBuilder's messages read, through the `email` package, as an EmailMessage build does.

The reference is independent of the builder: the same letter built with `EmailMessage`
and serialised unfolded (`max_line_length=10_000`), so that Python 3.11's folding bugs
(CPython gh-144156, dropped spaces between encoded words; a comma folded into the next
name) cannot make the reference itself wrong. Both are parsed with `policy.default` and
compared by what a reader sees: addresses, display names, subject, decoded bodies, and
each attachment's file name, type and bytes (the reference adds them with `add_attachment`).
"""

from __future__ import annotations

import mimetypes
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign.errors import CampaignError
from campaign.message import MessageBuilder, address_header, content_hash, decoded, subject_header
from campaign.models import Attachment, Campaign, Mailbox, Recipient, Rendered

DATE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UNFOLDED = policy.SMTP.clone(max_line_length=10_000)
WORDS = [
    "Zoë",
    "Ångström",
    "Anna",
    "Müller",
    "O'Brien",
    "Jean-Luc",
    "Straßer",
    "Łukasz",
    "Żółć",
    "José",
    "de",
    "Peña",
    "Smith",
    "Jr.",
    "(x)",
    '"Q"',
    "Rossi,",
    "a.b",
    "Šimková",
    "¿Qué?",
    "100%",
    "back\\slash",
    "字",
    "😀",
    "Supercalifragilisticexpialidocious" * 3,
]
LOCALS = ["a", "ioana.rossi", "francois.simkova-000001", "x.very.long.local.part.name.here"]

names = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join)
subjects = st.lists(st.sampled_from(WORDS), min_size=1, max_size=16).map(" ".join)
local_parts = st.lists(st.sampled_from(LOCALS), min_size=1, max_size=3, unique=True)
bodies = st.lists(
    st.sampled_from([*"abc xyzÅöü€ =.\t\n-", "\r", "é", "字", "😀", "x" * 120]), max_size=200
).map("".join)
FILE_WORDS = ["letter", "Письмо", "Хат", "annex 1", "naïve", '"quoted"', "a;b", "100%", "ü" * 40]
EXTENSIONS = [".pdf", ".txt", ".png", ".docx", ".csv", ".bin", ".unknown-kind", ""]
file_names = st.builds(
    lambda words, extension: " ".join(words) + extension,
    st.lists(st.sampled_from(FILE_WORDS), min_size=1, max_size=4),
    st.sampled_from(EXTENSIONS),
)
file_bodies = st.binary(min_size=1, max_size=400) | st.sampled_from(
    [b"=_campaign_ --", "Текст\r\n".encode(), b"\r\n" * 40, bytes(range(256)) * 3]
)
files = st.lists(st.tuples(file_names, file_bodies), max_size=3, unique_by=lambda f: f[0])


def campaign(
    tmp: Path, reply_to: tuple[Mailbox, ...] = (), attachments: tuple[Attachment, ...] = ()
) -> Campaign:
    return Campaign(
        id="builder-test",
        subject="s",
        sender=Mailbox("Campaign Office Zoë", "office@example.org"),
        reply_to=reply_to,
        template="letter",
        data={},
        source=tmp / "recipients.yaml",
        templates_dir=tmp,
        attachments=attachments,
    )


def attached(tmp: Path, named: list[tuple[str, bytes]], prefix: str) -> tuple[Attachment, ...]:
    """Each (name, bytes) as a file in `tmp`, attached under that name."""
    found = []
    for number, (name, data) in enumerate(named):
        path = (tmp / f"{prefix}-{number}.bin").resolve()
        path.write_bytes(data)
        found.append(Attachment(path.name, path, name, len(data)))
    return tuple(found)


def _address(mailbox: Mailbox) -> Address:
    username, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=mailbox.display_name, username=username, domain=domain)


def reference(
    source: Campaign,
    recipient: Recipient,
    rendered: Rendered,
    named: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """The same letter, built the plain way with the `email` package."""
    message = EmailMessage(policy=UNFOLDED)
    message["From"] = _address(source.sender)
    message["To"] = tuple(_address(m) for m in recipient.mailboxes)
    if source.reply_to:
        message["Reply-To"] = tuple(_address(m) for m in source.reply_to)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(DATE)
    message["Message-ID"] = f"<{source.id}.{recipient.id}@example.org>"
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if rendered.html is not None:
        message.add_alternative(
            rendered.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
    for name, data in named:
        kind, encoding = mimetypes.guess_type(name)
        kind = "application/octet-stream" if kind is None or encoding else kind
        maintype, _, subtype = kind.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    # Last: making the message multipart moves every Content-* header into its first part.
    message["Content-Language"] = recipient.language or source.language
    return message.as_bytes(policy=UNFOLDED)


def gh128110(display_name: str) -> str:
    """A display name as an RFC 2047 reader shows it, from what Python 3.11 parsed.

    CPython gh-128110 (fixed by python/cpython#130749, after 3.13): the structured-header
    parser keeps a space between two adjacent encoded words of a display name, where
    RFC 2047 6.2 drops it. The builder splits a long run of encoded words after a space
    (kept inside the word), so Python reads one space as two there; collapsing runs of
    spaces undoes exactly that and nothing else a name can hold (names are collapsed).
    """
    return " ".join(display_name.split())


def as_read(data: bytes) -> dict[str, object]:
    """What a reader sees of a message."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    seen: dict[str, object] = {
        name: [(gh128110(a.display_name), a.addr_spec) for a in message[name].addresses]
        for name in ("From", "To", "Reply-To")
        if message[name] is not None
    }
    seen["Subject"] = str(message["Subject"])
    seen["Message-ID"] = str(message["Message-ID"])
    seen["Date"] = message["Date"].datetime
    seen["Content-Language"] = str(message["Content-Language"])
    for kind in ("plain", "html"):
        part = message.get_body(preferencelist=(kind,))
        seen[kind] = None if part is None else part.get_content().replace("\r\n", "\n")
    seen["attachments"] = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    ]
    return seen


def recipient_for(
    name: str, locals_: list[str], attachments: tuple[Attachment, ...] = ()
) -> Recipient:
    return Recipient(
        id="r1",
        name=name,
        addresses=tuple(f"{local}@example.org" for local in locals_),
        index=1,
        line=1,
        data={},
        attachments=attachments,
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=names,
    locals_=local_parts,
    subject=subjects,
    text=bodies,
    html=st.none() | st.just("") | bodies,
)
def test_builder_reads_as_the_email_package_build(
    tmp_path: Path, name: str, locals_: list[str], subject: str, text: str, html: str | None
) -> None:
    source = campaign(tmp_path, reply_to=(Mailbox("Press Desk, Ångström", "press@example.org"),))
    recipient = recipient_for(name, locals_)
    rendered = Rendered(subject=subject, text=text + "\n", html=html)
    built = MessageBuilder(source, DATE).build(recipient, rendered)
    ours, theirs = as_read(built.data), as_read(reference(source, recipient, rendered))
    assert ours == theirs


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=names,
    subject=subjects,
    text=bodies,
    html=st.none() | bodies,
    shared=files,
    own=files,
)
def test_builder_with_attachments_reads_as_the_email_package_build(
    tmp_path: Path,
    name: str,
    subject: str,
    text: str,
    html: str | None,
    shared: list[tuple[str, bytes]],
    own: list[tuple[str, bytes]],
) -> None:
    own = [(f"own {n}", data) for n, data in own]  # never the name of a campaign file
    source = campaign(tmp_path, attachments=attached(tmp_path, shared, "shared"))
    recipient = recipient_for(name, ["a"], attached(tmp_path, own, "own"))
    rendered = Rendered(subject=subject, text=text + "\n", html=html)
    built = MessageBuilder(source, DATE).build(recipient, rendered)
    expected = reference(source, recipient, rendered, [*shared, *own])
    ours, theirs = as_read(built.data), as_read(expected)
    assert ours == theirs
    lines = built.data.split(b"\r\n")
    assert all(len(line) <= 998 and line.isascii() for line in lines)
    assert b"\r" not in built.data.replace(b"\r\n", b"")


def test_the_content_hash_of_a_letter_without_attachments_is_the_one_of_earlier_versions() -> None:
    # A campaign half sent by a version without attachments must not read as changed
    # (the value main computed before attachments existed).
    rendered = Rendered(subject="Hi", text="Dear Anna,\n", html=None)
    assert (
        content_hash("Hi", ("a@example.org",), rendered)
        == "ad66e44c764fe05edb043f3ca4ef9199047e4dd4d40f1282709f61d353ce1997"
    )


@settings(max_examples=300, deadline=None)
@given(names, local_parts)
def test_to_header_reads_back_every_mailbox_within_78_columns_where_words_allow(
    name: str, locals_: list[str]
) -> None:
    boxes = recipient_for(name, locals_).mailboxes
    line = address_header("To", boxes)
    header = policy.default.header_factory("To", line[3:].replace("\r\n", "").strip())
    assert [(gh128110(a.display_name), a.addr_spec) for a in header.addresses] == [
        (" ".join(m.display_name.split()), m.address) for m in boxes
    ]
    longest_token = max(len(t) for t in line.replace("\r\n", " ").split(" "))
    assert all(len(part) <= max(78, longest_token + len("To: ")) for part in line.split("\r\n"))


@settings(max_examples=300, deadline=None)
@given(subjects)
def test_subject_header_reads_back_exactly(subject: str) -> None:
    line = subject_header(subject)
    assert decoded(line) == subject
    value = line.partition(":")[2].replace("\r\n", "").strip()
    assert str(policy.default.header_factory("Subject", value)) == subject


def test_a_comma_in_a_folded_name_stays_with_its_mailbox() -> None:
    # Python 3.11.7's folder moves the comma into the next name as an encoded word here.
    boxes = (
        Mailbox("Smith Zoë", "x.very.long.local.part.name.here0@example.org"),
        Mailbox("de", "francois.simkova-0000011@example.org"),
    )
    line = address_header("To", boxes)
    header = policy.default.header_factory("To", line[3:].replace("\r\n", "").strip())
    assert [a.addr_spec for a in header.addresses] == [b.address for b in boxes]
    assert [a.display_name for a in header.addresses] == ["Smith Zoë", "de"]


def test_a_long_non_ascii_subject_keeps_every_space() -> None:
    subject = " ".join(["Ångström Żółć"] * 12)
    assert decoded(subject_header(subject)) == subject


def test_every_message_of_a_run_is_checked_not_only_the_first(tmp_path: Path) -> None:
    builder = MessageBuilder(campaign(tmp_path), DATE)
    rendered = Rendered(subject="Hello", text="Hi\n", html=None)
    builder.build(recipient_for("Anna", ["a"]), rendered)
    with pytest.raises(CampaignError, match="the name"):
        builder.build(recipient_for("Anna\r\nBcc: x@example.net", ["a"]), rendered)


def test_a_lone_cr_in_the_body_becomes_a_line_end_never_a_bare_cr(tmp_path: Path) -> None:
    builder = MessageBuilder(campaign(tmp_path), DATE)
    built = builder.build(
        recipient_for("Anna", ["a"]), Rendered(subject="Hi", text="one\rtwo\n", html=None)
    )
    assert b"\r" not in built.data.replace(b"\r\n", b"")
    assert as_read(built.data)["plain"] == "one\ntwo\n"


def test_a_campaign_file_is_read_once_for_every_letter_of_the_run(tmp_path: Path) -> None:
    shared = attached(tmp_path, [("letter.pdf", b"%PDF-1 first")], "shared")
    builder = MessageBuilder(campaign(tmp_path, attachments=shared), DATE)
    shared[0].path.write_bytes(b"%PDF-1 changed on disk during the run")
    rendered = Rendered(subject="Hello", text="Hi\n", html=None)
    for name in ("Anna", "Boris", "Zoë"):
        built = builder.build(recipient_for(name, ["a"]), rendered)
        assert as_read(built.data)["attachments"] == [
            ("letter.pdf", "application/pdf", b"%PDF-1 first")
        ]


def test_a_recipients_file_is_read_once_for_every_letter_that_names_it(tmp_path: Path) -> None:
    own = attached(tmp_path, [("map.png", b"\x89PNG first")], "own")
    builder = MessageBuilder(campaign(tmp_path), DATE)
    rendered = Rendered(subject="Hello", text="Hi\n", html=None)
    first = builder.build(recipient_for("Anna", ["a"], own), rendered)
    own[0].path.write_bytes(b"\x89PNG changed")
    second = builder.build(recipient_for("Boris", ["b"], own), rendered)
    assert as_read(first.data)["attachments"] == as_read(second.data)["attachments"]


def test_a_file_gone_before_it_is_read_is_an_error_naming_where_it_is_listed(
    tmp_path: Path,
) -> None:
    own = attached(tmp_path, [("map.png", b"\x89PNG")], "own")
    own = (replace(own[0], line=12),)
    own[0].path.unlink()
    builder = MessageBuilder(campaign(tmp_path), DATE)
    with pytest.raises(CampaignError) as caught:
        builder.build(recipient_for("Anna", ["a"], own), Rendered("Hi", "Hi\n", None))
    assert (caught.value.line, caught.value.recipient, caught.value.field) == (
        12,
        "r1",
        "attachments",
    )
