"""The fast MessageBuilder writes exactly the bytes of the email-package reference build."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign.message import MessageBuilder, build_message, subject_header, to_header
from campaign.models import Campaign, Mailbox, Recipient, Rendered

DATE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
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
    "María",
    "de",
    "la",
    "Peña",
    "Smith",
    "Jr.",
    "Dr.",
    "(x)",
    '"Q"',
    "Rossi,",
    "Ng",
    "a.b",
    "Šimková",
    "François",
    "¿Qué?",
    "100%",
    "back\\slash",
]
LOCALS = ["a", "ioana.rossi", "francois.simkova-000001", "x.very.long.local.part.name.here"]

names = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
mailboxes = st.lists(
    st.tuples(names, st.sampled_from(LOCALS)), min_size=1, max_size=3, unique_by=lambda t: t[1]
).map(
    lambda items: tuple(
        Mailbox(name, f"{local}{i}@example.org") for i, (name, local) in enumerate(items)
    )
)
subjects = st.lists(st.sampled_from(WORDS), min_size=1, max_size=14).map(" ".join)
bodies = st.text(alphabet=st.sampled_from([*"abc xyzÅöü€ =.\t\n-", "é", "字", "😀"]), max_size=400)


def package_fold(name: str, boxes: tuple[Mailbox, ...]) -> str:
    value = tuple(
        Address(display_name=m.display_name, username=m.address.split("@")[0], domain="example.org")
        for m in boxes
    )
    return str(policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP))


def reads_back(line: str, boxes: tuple[Mailbox, ...]) -> bool:
    name, _, value = line.partition(":")
    header = policy.default.header_factory(name, value.replace("\r\n", "").strip())
    return [(a.display_name, a.addr_spec) for a in header.addresses] == [
        (m.display_name, m.address) for m in boxes
    ]


def campaign(tmp: Path, reply_to: tuple[Mailbox, ...] = ()) -> Campaign:
    return Campaign(
        id="builder-test",
        subject="s",
        sender=Mailbox("Campaign Office", "office@example.org"),
        reply_to=reply_to,
        template="letter",
        data={},
        source=tmp / "recipients.yaml",
        templates_dir=tmp,
    )


@settings(max_examples=400, deadline=None)
@given(mailboxes)
def test_to_header_reads_back_and_is_the_package_line_when_one_line(
    boxes: tuple[Mailbox, ...],
) -> None:
    ours = to_header(boxes)
    assert reads_back(ours, boxes)
    assert all(len(line) <= 78 for line in ours.split("\r\n"))
    theirs = package_fold("To", boxes)
    if theirs.count("\r\n") == 1:
        assert ours == theirs


def test_to_header_keeps_the_comma_python_would_encode_into_the_next_name() -> None:
    boxes = (
        Mailbox("Smith Zoë", "x.very.long.local.part.name.here0@example.org"),
        Mailbox("de", "francois.simkova-0000011@example.org"),
    )
    assert not reads_back(package_fold("To", boxes), boxes)  # CPython 3.11.7 loses "de"
    assert to_header(boxes) == (
        "To: Smith =?utf-8?q?Zo=C3=AB?=\r\n"
        " <x.very.long.local.part.name.here0@example.org>,\r\n"
        " de <francois.simkova-0000011@example.org>\r\n"
    )
    assert reads_back(to_header(boxes), boxes)


@settings(max_examples=300, deadline=None)
@given(subjects)
def test_subject_header_reads_back_exactly(subject: str) -> None:
    line = subject_header(subject)
    _, _, value = line.partition(":")
    assert str(policy.default.header_factory("Subject", value.replace("\r\n", "").strip())) == (
        subject
    )
    assert all(len(part) <= 78 for part in line.split("\r\n"))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(boxes=mailboxes, subject=subjects, text=bodies, html=st.none() | bodies, test=st.booleans())
def test_builder_bytes_equal_the_reference_build(
    tmp_path: Path,
    boxes: tuple[Mailbox, ...],
    subject: str,
    text: str,
    html: str | None,
    test: bool,
) -> None:
    source = campaign(tmp_path, reply_to=(Mailbox("Press Desk", "press@example.org"),))
    recipient = Recipient(
        id="r1",
        name=boxes[0].display_name,
        addresses=tuple(box.address for box in boxes),
        index=1,
        line=1,
        data={},
    )
    rendered = Rendered(subject=subject, text=text + "\n", html=html)
    test_to = Mailbox("", "me@example.org") if test else None
    reference = build_message(source, recipient, rendered, date=DATE, test_to=test_to)
    builder = MessageBuilder(source, DATE)
    builder.build(recipient, rendered, test_to=test_to)  # the first build is cross-checked
    fast = builder.build(recipient, rendered, test_to=test_to)
    assert fast.data == reference.data
    assert fast.sha256 == reference.sha256
    assert fast.content_hash == reference.content_hash
