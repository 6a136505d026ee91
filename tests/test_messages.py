"""The .eml drafts as messages: headers, structure, wire form, round trip of Unicode data."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from campaign_factory import (
    BUNDLED_FILES,
    BUNDLED_IDS,
    FIXED_NOW,
    GOOD_YAML,
    draft_bundled,
    parse_eml,
    run_cli,
    write_campaign,
)

BUNDLED_ADDRESSES = {
    "president": ["aprk@akorda.kz"],
    "general-prosecutor": ["Gp-rk@prokuror.kz", "procuror@nursat.kz"],
    "national-security-committee": ["press@knb.kz"],
    "ministry-of-internal-affairs": ["Kense@mvd.kz"],
    "ministry-of-justice": ["kanc@adilet.gov.kz"],
    "ombudsman": ["info@ombudsman.kz", "mbudsman@ombudsman.kz"],
}
BUNDLED_NAMES = {
    "president": "Nursultan Nazarbayev",
    "general-prosecutor": "Zhakyp Assanov",
    "national-security-committee": "Karim Masimov",
    "ministry-of-internal-affairs": "Kalmukhanbet Kassymov",
    "ministry-of-justice": "Marat Beketayev",
    "ombudsman": "Askar Shakirov",
}
MULTIPART_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-language",
}


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draft_bundled(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(scope="module")
def raw(outbox: Path) -> dict[str, bytes]:
    """The bundled drafts' bytes by recipient id."""
    return {
        rid: (outbox / name).read_bytes()
        for rid, name in zip(BUNDLED_IDS, BUNDLED_FILES, strict=True)
    }


@pytest.fixture(scope="module")
def parsed(raw: dict[str, bytes]) -> dict[str, EmailMessage]:
    return {rid: parse_eml(data) for rid, data in raw.items()}


def header_names(data: bytes) -> list[str]:
    """The header names of the top-level block, read from the bytes, not by the parser."""
    block = data[: data.index(b"\r\n\r\n")]
    return [
        line.split(b":", 1)[0].decode("ascii").lower()
        for line in block.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]


def test_bundled_campaign_writes_six_drafts_named_by_order_and_id(outbox: Path) -> None:
    assert sorted(path.name for path in outbox.iterdir()) == list(BUNDLED_FILES)


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_draft_goes_to_exactly_the_seeds_addresses(
    parsed: dict[str, EmailMessage], rid: str
) -> None:
    assert [a.addr_spec for a in parsed[rid]["To"].addresses] == BUNDLED_ADDRESSES[rid]


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_every_address_carries_the_recipients_name(
    parsed: dict[str, EmailMessage], rid: str
) -> None:
    names = {a.display_name for a in parsed[rid]["To"].addresses}
    assert names == {BUNDLED_NAMES[rid]}


def test_sender_is_the_placeholder_office(parsed: dict[str, EmailMessage]) -> None:
    for message in parsed.values():
        (sender,) = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (
            "Campaign Office",
            "campaign@example.org",
        )


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_message_id_is_campaign_and_recipient_at_sender_domain(
    parsed: dict[str, EmailMessage], rid: str
) -> None:
    assert parsed[rid]["Message-ID"] == f"<kz-open-letter-2017-10.{rid}@example.org>"


def test_message_ids_are_the_same_in_a_later_run(
    tmp_path: Path, parsed: dict[str, EmailMessage]
) -> None:
    later = draft_bundled(tmp_path, clock=datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC))
    for rid, name in zip(BUNDLED_IDS, BUNDLED_FILES, strict=True):
        assert parse_eml(later / name)["Message-ID"] == parsed[rid]["Message-ID"]


def test_a_later_run_differs_only_in_the_date(tmp_path: Path, raw: dict[str, bytes]) -> None:
    later = draft_bundled(tmp_path, clock=datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC))
    data = (later / BUNDLED_FILES[0]).read_bytes()
    assert b"Date: Mon, 06 May 2030 07:08:09 +0000\r\n" in data
    assert (
        data.replace(b"Mon, 06 May 2030 07:08:09", b"Tue, 02 Jan 2024 03:04:05")
        == (raw["president"])
    )


def test_date_is_the_clocks_time(parsed: dict[str, EmailMessage]) -> None:
    for message in parsed.values():
        assert message["Date"].datetime == FIXED_NOW


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_headers_are_exactly_the_expected_ones(raw: dict[str, bytes], rid: str) -> None:
    names = header_names(raw[rid])
    assert sorted(names) == sorted(MULTIPART_HEADERS)


def test_no_message_has_a_bcc(raw: dict[str, bytes], parsed: dict[str, EmailMessage]) -> None:
    for rid, data in raw.items():
        assert "Bcc" not in parsed[rid]
        assert b"\r\nbcc:" not in data.lower()


def test_message_is_multipart_alternative_of_text_then_html(
    parsed: dict[str, EmailMessage],
) -> None:
    for message in parsed.values():
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
        assert all(part.get_content_charset() == "utf-8" for part in parts)


def test_bodies_are_quoted_printable(parsed: dict[str, EmailMessage]) -> None:
    for message in parsed.values():
        for part in message.iter_parts():
            assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_every_line_ends_in_crlf(raw: dict[str, bytes]) -> None:
    for data in raw.values():
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        assert data.count(b"\r") == data.count(b"\r\n")


def test_every_line_fits_in_998_octets(raw: dict[str, bytes]) -> None:
    for data in raw.values():
        assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_the_wire_form_is_seven_bit(raw: dict[str, bytes]) -> None:
    for data in raw.values():
        assert data.isascii()
        assert b"\x00" not in data


def test_non_ascii_text_survives_the_encoding(parsed: dict[str, EmailMessage]) -> None:
    body = parsed["general-prosecutor"].get_body(preferencelist=("plain",))
    assert body is not None
    assert "The General Prosecutor’s Office of Kazakhstan" in body.get_content()


# A campaign written here, full of what usually breaks: it must round-trip exactly.

INTL_YAML = """\
campaign:
  id: "intl-2024"
  subject: "Für {{ recipient.name }}: ein Brief"
  from: "Zoë Ångström <zoe@example.org>"
  reply_to: ["\\"Müller, Jürgen\\" <replies@bücher.example>", "office@example.net"]
  signature: "Zoë"
recipients:
  - id: "zoe"
    name: "Zoë Ångström"
    emails: ["zoe.a@example.com"]
  - id: "juergen"
    name: "Müller, Jürgen"
    emails: ["j1@example.com", "j2@bücher.example", "J.Three@Example.NET"]
  - id: "tags"
    name: "Bold <b>& \\"Co\\""
    emails: ["bold@example.com"]
"""
INTL_TEXT = "Liebe/r {{ recipient.name }},\n\nviele Grüße — {{ campaign.signature }}\n"
INTL_HTML = "<p>Liebe/r {{ recipient.name }},</p>\n<p>viele Grüße — {{ campaign.signature }}</p>\n"


@pytest.fixture(scope="module")
def intl_outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("intl")
    path = write_campaign(folder, INTL_YAML, INTL_TEXT, INTL_HTML)
    result = run_cli("--file", path, "drafts")
    assert result.status == 0, result.stderr
    return folder / "outbox"


@pytest.fixture(scope="module")
def intl(intl_outbox: Path) -> dict[str, EmailMessage]:
    names = ("01-zoe.eml", "02-juergen.eml", "03-tags.eml")
    assert sorted(p.name for p in intl_outbox.iterdir()) == list(names)
    return {
        rid: parse_eml(intl_outbox / name)
        for rid, name in zip(("zoe", "juergen", "tags"), names, strict=True)
    }


def content(message: EmailMessage, kind: str) -> str:
    body = message.get_body(preferencelist=(kind,))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def test_non_ascii_display_name_decodes_exactly(intl: dict[str, EmailMessage]) -> None:
    (mailbox,) = intl["zoe"]["To"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == ("Zoë Ångström", "zoe.a@example.com")


def test_display_name_with_a_comma_stays_one_mailbox_per_address(
    intl: dict[str, EmailMessage],
) -> None:
    mailboxes = intl["juergen"]["To"].addresses
    assert [m.display_name for m in mailboxes] == ["Müller, Jürgen"] * 3


def test_three_addresses_of_one_recipient_are_all_in_to(intl: dict[str, EmailMessage]) -> None:
    assert [m.addr_spec for m in intl["juergen"]["To"].addresses] == [
        "j1@example.com",
        "j2@xn--bcher-kva.example",
        "J.Three@example.net",
    ]


def test_display_name_with_quotes_and_brackets_decodes_exactly(
    intl: dict[str, EmailMessage],
) -> None:
    (mailbox,) = intl["tags"]["To"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == ('Bold <b>& "Co"', "bold@example.com")


def test_non_ascii_sender_name_decodes_exactly(intl: dict[str, EmailMessage]) -> None:
    (sender,) = intl["zoe"]["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Zoë Ångström", "zoe@example.org")


def test_reply_to_round_trips_with_punycode_domain(intl: dict[str, EmailMessage]) -> None:
    mailboxes = intl["zoe"]["Reply-To"].addresses
    assert [(m.display_name, m.addr_spec) for m in mailboxes] == [
        ("Müller, Jürgen", "replies@xn--bcher-kva.example"),
        ("", "office@example.net"),
    ]


def test_non_ascii_subject_decodes_exactly(intl: dict[str, EmailMessage]) -> None:
    assert intl["juergen"]["Subject"] == "Für Müller, Jürgen: ein Brief"


def test_text_body_is_the_rendered_text_exactly(intl: dict[str, EmailMessage]) -> None:
    assert content(intl["juergen"], "plain") == ("Liebe/r Müller, Jürgen,\n\nviele Grüße — Zoë\n")


def test_html_body_is_the_rendered_html_exactly(intl: dict[str, EmailMessage]) -> None:
    assert content(intl["tags"], "html") == (
        "<p>Liebe/r Bold &lt;b&gt;&amp; &#34;Co&#34;,</p>\n<p>viele Grüße — Zoë</p>\n"
    )


def test_text_body_keeps_markup_characters_raw(intl: dict[str, EmailMessage]) -> None:
    assert content(intl["tags"], "plain").startswith('Liebe/r Bold <b>& "Co",\n')


def test_reply_to_is_the_only_extra_header(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, INTL_YAML, INTL_TEXT, INTL_HTML)
    assert run_cli("--file", path, "drafts").status == 0
    data = (tmp_path / "outbox" / "01-zoe.eml").read_bytes()
    assert sorted(header_names(data)) == sorted(MULTIPART_HEADERS | {"reply-to"})


def test_text_only_template_gives_a_single_text_part(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("--file", path, "drafts").status == 0
    data = (tmp_path / "outbox" / "01-alice.eml").read_bytes()
    message = parse_eml(data)
    assert message.get_content_type() == "text/plain"
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert sorted(header_names(data)) == sorted(
        {
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
            "content-language",
        }
    )


def test_message_id_uses_the_senders_domain(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace("sender@example.org", "me@Mail.Example.COM"))
    assert run_cli("--file", path, "drafts").status == 0
    message = parse_eml(tmp_path / "outbox" / "02-bob.eml")
    assert message["Message-ID"] == "<small-test.bob@mail.example.com>"


def test_long_subject_is_folded_and_decodes_whole(tmp_path: Path) -> None:
    subject = " ".join(["Überlange Betreffzeile"] * 20)
    path = write_campaign(tmp_path, GOOD_YAML.replace("A letter for {{ recipient.name }}", subject))
    assert run_cli("--file", path, "drafts").status == 0
    data = (tmp_path / "outbox" / "01-alice.eml").read_bytes()
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert parse_eml(data)["Subject"] == subject


FOLDED_SUBJECT = (
    "Ångström Öffentlichkeit Zoë a in über Ångström Brief » « Zoë Zoë die a a Brief ¡"
    " Ångström Kasachstan"
)


def test_long_non_ascii_subject_keeps_every_space(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path, GOOD_YAML.replace("A letter for {{ recipient.name }}", FOLDED_SUBJECT)
    )
    assert run_cli("--file", path, "drafts").status == 0
    assert parse_eml(tmp_path / "outbox" / "01-alice.eml")["Subject"] == FOLDED_SUBJECT


SPAM_RULE = re.compile(r"^\s*-?\d+(?:\.\d+)?\s+([A-Z0-9_]+)\s", re.MULTILINE)


def spamassassin_rules(data: bytes) -> list[str]:
    """The rules `spamassassin -L -t` (local tests only) reports as hit for `data`."""
    spamassassin = shutil.which("spamassassin")
    if spamassassin is None:
        pytest.skip("spamassassin is not installed (apt-get install spamassassin)")
    report = subprocess.run(
        [spamassassin, "-L", "-t"], input=data, capture_output=True, timeout=60, check=True
    ).stdout.decode("utf-8", "replace")
    table = report[report.index("Content analysis details:") :]
    return SPAM_RULE.findall(table)


def test_spamassassin_finds_no_missing_or_invalid_header(raw: dict[str, bytes]) -> None:
    rules = spamassassin_rules(raw["ombudsman"])
    assert "HTML_MESSAGE" in rules  # the table was read: this rule always hits here
    assert [r for r in rules if r.startswith(("MISSING_", "INVALID_", "TO_NO_BRKTS"))] == []


def test_spamassassin_finds_no_missing_header_with_encoded_names(intl_outbox: Path) -> None:
    rules = spamassassin_rules((intl_outbox / "02-juergen.eml").read_bytes())
    assert "HTML_MESSAGE" in rules
    assert [r for r in rules if r.startswith(("MISSING_", "INVALID_", "TO_NO_BRKTS"))] == []
