"""The letter's text: the bundled campaign's content, autoescaping, strict sandboxed templates."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from campaign_factory import (
    BUNDLED_FILES,
    BUNDLED_IDS,
    GOOD_TEXT,
    GOOD_YAML,
    assert_clean_refusal,
    draft_bundled,
    parse_eml,
    refuse_over_existing_outbox,
    run_cli,
    write_campaign,
)

SALUTATIONS = {
    "president": "Dear Mr President,",
    "general-prosecutor": "Dear Mr Assanov,",
    "national-security-committee": "Dear Mr Masimov,",
    "ministry-of-internal-affairs": "Dear Mr. Kassymov,",
    "ministry-of-justice": "Dear Mr. Beketayev,",
    "ombudsman": "Dear Mr Shakirov,",
}

ADDRESS_BLOCKS = {
    "president": (
        "To: The President of the Republic of Kazakhstan\n"
        "    Nursultan Nazarbayev\n"
        "    010000, Astana city, 6 Mangilik El Street, Government House\n"
        "    e-mail: aprk@akorda.kz\n"
    ),
    "general-prosecutor": (
        "To: The General Prosecutor’s Office of Kazakhstan\n"
        "    Mr Zhakyp Assanov\n"
        "    010000, Astana, Mangilik El avenue, 14,\n"
        "    e-mail: Gp-rk@prokuror.kz, procuror@nursat.kz\n"
    ),
    "national-security-committee": (
        "To: The National Security Committee of Kazakhstan\n"
        "    Mr Karim Masimov\n"
        "    010000, Astana, 31/33 Kenesary Street,\n"
        "    e-mail: press@knb.kz\n"
    ),
    "ministry-of-internal-affairs": (
        "To: Ministry of Internal Affairs of Kazakhstan\n"
        "    Mr. Kalmukhanbet Kassymov\n"
        "    Tauelsizdik avenue, 1\n"
        "    Astana, Kazakhstan\n"
        "    e-mail: Kense@mvd.kz\n"
    ),
    "ministry-of-justice": (
        "To: Ministry of Justice of Kazakstan\n"
        "    Mr. Marat Beketayev\n"
        "    Mangilik El Street, 8\n"
        "    Astana, Kazakhstan\n"
        "    e-mail: kanc@adilet.gov.kz\n"
    ),
    "ombudsman": (
        "To: Ombudsman in the Republic of Kazakhstan\n"
        "    Mr Askar Shakirov\n"
        "    010000, Astana, House of Ministries; entrance No. 15,\n"
        "    e-mail: info@ombudsman.kz, mbudsman@ombudsman.kz\n"
    ),
}

SIGNATORIES = (
    "Brando BENIFEI",
    "Mady DELVAUX",
    "Ana GOMES",
    "Tunne KELAM",
    "Urmas PAET",
    "Pier Antonio PANZERI",
    "Lola SANCHEZ CALDENTEY",
    "Helmut SCHOLZ",
    "Igor SOLTES",
    "Barbara SPINELLI",
    "Bart STAES",
    "Hilde VAUTMANS",
    "Julie WARD",
)

# Sentences of the source letter, compared with line breaks folded to spaces.
KEY_SENTENCES = (
    "We, Members of the European Parliament, would like to draw your attention to the"
    " worrying human rights situation in the Republic of Kazakhstan.",
    "On 10 October, 2017, Mr Tokmadi was convicted and sentenced to three years’"
    " incarceration, and a confiscation order was imposed in the amount of 252 million"
    " tenge (600,000 euros).",
    "Over eight years of detention, Mr Dzhaskishev has developed life-threatening diseases",
    "For the same reason, in July 2017, the General Secretariat of INTERPOL excluded"
    " Mr Ablyazov’s name from INTERPOL’s Red Notices list.",
    "Therefore, we invite the Republic of Kazakhstan to conduct fair and independent"
    " investigations, while fully complying with the respect for human rights and the"
    " right to a fair trial.",
)

CC_BLOCK = """
CC:

The General Prosecutor’s Office of Kazakhstan
Mr Zhakyp Assanov
010000, Astana, Mangilik El avenue, 14,
e-mail: Gp-rk@prokuror.kz, procuror@nursat.kz

The National Security Committee of Kazakhstan
Mr Karim Masimov
010000, Astana, 31/33 Kenesary Street,
e-mail: press@knb.kz

Ministry of Internal Affairs of Kazakhstan
Mr. Kalmukhanbet Kassymov
Tauelsizdik avenue, 1
Astana, Kazakhstan
e-mail: Kense@mvd.kz

Ministry of Justice of Kazakstan
Mr. Marat Beketayev
Mangilik El Street, 8
Astana, Kazakhstan
e-mail: kanc@adilet.gov.kz

Ombudsman in the Republic of Kazakhstan
Mr Askar Shakirov
010000, Astana, House of Ministries; entrance No. 15,
e-mail: info@ombudsman.kz, mbudsman@ombudsman.kz
"""

FOOTNOTES = (
    "[1] http://en.odfoundation.eu/a/8357,kazakhstan-the-life-of-political-prisoner-"
    "mukhtar-dzhakishev-is-in-danger",
    "[2] http://tbinternet.ohchr.org/_layouts/treatybodyexternal/Download.aspx"
    "?symbolno=CCPR%2fC%2f115%2fD%2f2304%2f2013&",
)


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EmailMessage]:
    """The bundled campaign's six drafts, parsed back, by recipient id."""
    outbox = draft_bundled(tmp_path_factory.mktemp("bundled"))
    return {
        rid: parse_eml(outbox / name) for rid, name in zip(BUNDLED_IDS, BUNDLED_FILES, strict=True)
    }


def plain(message: EmailMessage) -> str:
    """The text part as the template wrote it (the wire form's CRLF line ends undone)."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def html(message: EmailMessage) -> str:
    """The HTML part as the template wrote it (the wire form's CRLF line ends undone)."""
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def folded(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_letter_opens_with_place_and_date(letters: dict[str, EmailMessage], rid: str) -> None:
    assert plain(letters[rid]).startswith("Brussels, 19 October, 2017\n\nTo: ")


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_letter_carries_its_recipients_address_block(
    letters: dict[str, EmailMessage], rid: str
) -> None:
    assert ADDRESS_BLOCKS[rid] in plain(letters[rid])


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_letter_uses_its_recipients_salutation(letters: dict[str, EmailMessage], rid: str) -> None:
    text = plain(letters[rid])
    assert f"\n\n{SALUTATIONS[rid]}\n\nWe, Members of the European Parliament" in text
    others = [s for other, s in SALUTATIONS.items() if other != rid]
    assert not any(salutation in text for salutation in others)


@pytest.mark.parametrize("rid", BUNDLED_IDS)
def test_html_letter_uses_its_recipients_salutation(
    letters: dict[str, EmailMessage], rid: str
) -> None:
    assert f"<p>{SALUTATIONS[rid]}</p>" in html(letters[rid])


def test_addressee_letter_does_not_say_it_is_a_copy(letters: dict[str, EmailMessage]) -> None:
    assert "You receive in copy" not in plain(letters["president"])


@pytest.mark.parametrize("rid", BUNDLED_IDS[1:])
def test_copied_bodies_are_told_whom_the_letter_addresses(
    letters: dict[str, EmailMessage], rid: str
) -> None:
    assert (
        "\n\nYou receive in copy this open letter addressed to the President of the\n"
        "Republic of Kazakhstan, Nursultan Nazarbayev.\n\n"
    ) in plain(letters[rid])


@pytest.mark.parametrize("sentence", KEY_SENTENCES)
def test_every_letter_carries_the_source_text(
    letters: dict[str, EmailMessage], sentence: str
) -> None:
    for message in letters.values():
        assert sentence in folded(plain(message))
        assert sentence in folded(html(message))


def test_signatories_close_the_letter_in_the_source_order(
    letters: dict[str, EmailMessage],
) -> None:
    closing = "Yours sincerely,\n\nMembers of the European Parliament\n" + "\n".join(SIGNATORIES)
    for message in letters.values():
        assert closing + "\n" in plain(message)


def test_html_lists_all_thirteen_signatories_in_order(letters: dict[str, EmailMessage]) -> None:
    items = "\n".join(f"<li>{name}</li>" for name in SIGNATORIES)
    for message in letters.values():
        assert items in html(message)


def test_footnote_links_are_given_as_written(letters: dict[str, EmailMessage]) -> None:
    for message in letters.values():
        assert "\n---\n" + "\n".join(FOOTNOTES) + "\n" in plain(message)


def test_footnote_ampersand_is_escaped_in_html_only(letters: dict[str, EmailMessage]) -> None:
    text = html(letters["president"])
    assert 'href="http://tbinternet.ohchr.org/' in text
    assert "2304%2f2013&amp;" in text
    assert '2304%2f2013&"' not in text


def test_cc_block_lists_the_five_bodies_in_order(letters: dict[str, EmailMessage]) -> None:
    for message in letters.values():
        assert plain(message).endswith(FOOTNOTES[1] + "\n" + CC_BLOCK)


def test_html_cc_block_names_every_body_and_address(letters: dict[str, EmailMessage]) -> None:
    text = html(letters["president"])
    cc = text[text.index("<strong>CC:</strong>") :]
    assert "The General Prosecutor’s Office of Kazakhstan<br>" in cc
    assert "Mr Zhakyp Assanov<br>" in cc
    assert "e-mail: Gp-rk@prokuror.kz, procuror@nursat.kz</p>" in cc
    assert "e-mail: info@ombudsman.kz, mbudsman@ombudsman.kz</p>" in cc
    assert cc.index("Prosecutor") < cc.index("Security") < cc.index("Internal Affairs")
    assert cc.index("Internal Affairs") < cc.index("Justice") < cc.index("Ombudsman")


def test_seed_spellings_are_kept(letters: dict[str, EmailMessage]) -> None:
    text = plain(letters["ministry-of-justice"])
    assert "Ministry of Justice of Kazakstan" in text
    assert "Mr Dzhaskishev has developed" in text
    assert "mbudsman@ombudsman.kz" in text


def test_subject_is_the_campaign_subject(letters: dict[str, EmailMessage]) -> None:
    for message in letters.values():
        assert message["Subject"] == (
            "Open letter from Members of the European Parliament on human rights in Kazakhstan"
        )


# A campaign written here: template data, autoescaping, strict and sandboxed rendering.

HTML_TEXT = "<p>Dear {{ recipient.name }},</p>\n"


def test_html_is_autoescaped_and_text_is_not(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path, GOOD_YAML.replace('"Bob Example"', '"Bob <b>& Co"'), GOOD_TEXT, HTML_TEXT
    )
    assert run_cli("--file", path, "drafts").status == 0
    message = parse_eml(tmp_path / "outbox" / "02-bob.eml")
    assert plain(message) == "Dear Bob <b>& Co,\n\nThis is the letter.\n"
    assert html(message) == "<p>Dear Bob &lt;b&gt;&amp; Co,</p>\n"


def test_subject_is_rendered_per_recipient(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("--file", path, "drafts").status == 0
    message = parse_eml(tmp_path / "outbox" / "01-alice.eml")
    assert message["Subject"] == "A letter for Alice Example"


def test_free_data_and_the_recipient_list_reach_the_template(tmp_path: Path) -> None:
    text = (
        "{{ campaign.place }} / {{ recipient.title }} /"
        " {% for r in recipients %}{{ r.id }} {% endfor %}\n"
    )
    path = write_campaign(
        tmp_path,
        GOOD_YAML.replace("  from:", '  place: "Brussels"\n  from:').replace(
            '    name: "Bob Example"', '    name: "Bob Example"\n    title: "Minister"'
        ),
        text.replace("{{ recipient.title }}", "{{ recipient.title | default('-') }}"),
    )
    assert run_cli("--file", path, "drafts").status == 0
    assert plain(parse_eml(tmp_path / "outbox" / "02-bob.eml")) == (
        "Brussels / Minister / alice bob \n"
    )


def test_template_option_chooses_another_template(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path,
        GOOD_YAML.replace("  from:", '  template: "note"\n  from:'),
        "A note for {{ recipient.name }}\n",
        template="note",
    )
    assert run_cli("--file", path, "drafts").status == 0
    assert plain(parse_eml(tmp_path / "outbox" / "01-alice.eml")) == "A note for Alice Example\n"


def test_undefined_variable_is_refused_naming_template_line_recipient_and_variable(
    tmp_path: Path,
) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="Dear {{ recipient.name }},\n\n{{ recipient.nmae }}\n"
    )
    message = assert_clean_refusal(refusal)
    template = tmp_path / "templates" / "letter.txt.j2"
    assert f"{template}:3: field 'nmae': undefined variable" in message
    assert "(for 2 recipients: alice, bob)" in message  # said once, for both


def test_undefined_top_level_name_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(tmp_path, None, text_template="{{ sender }}\n")
    message = assert_clean_refusal(refusal)
    template = tmp_path / "templates" / "letter.txt.j2"
    assert f"{template}:1: field 'sender': undefined variable" in message
    assert "'sender' is undefined" in message


def test_undefined_variable_in_html_template_names_that_template(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, html_template="<p>\n{{ campaign.signature }}</p>\n"
    )
    message = assert_clean_refusal(refusal)
    template = tmp_path / "templates" / "letter.html.j2"
    assert f"{template}:2: field 'signature': undefined variable" in message
    assert "(for 2 recipients: alice, bob)" in message


def test_undefined_variable_in_subject_names_the_subject(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace("{{ recipient.name }}", "{{ recipient.title }}")
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:3: field 'title': undefined variable" in message
    assert "(for 2 recipients: alice, bob)" in message


def test_error_for_one_recipient_writes_no_draft_at_all(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "{{ recipient.name[4] }}{{ recipient.title }}\n")
    yaml_text = GOOD_YAML.replace(
        '    name: "Alice Example"', '    name: "Alice Example"\n    title: "Dr"'
    )
    path.write_text(yaml_text, encoding="utf-8")
    result = run_cli("--file", path, "drafts")
    assert result.status == 2
    assert "recipient 'bob', field 'title'" in result.err
    assert "recipient 'alice'" not in result.err
    assert not (tmp_path / "outbox").exists()


def test_template_syntax_error_is_refused_with_file_and_line(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="Dear {{ recipient.name }},\n{% if recipient.title %}\n"
    )
    message = assert_clean_refusal(refusal)
    template = tmp_path / "templates" / "letter.txt.j2"
    assert f"{template}:2: template syntax error: Unexpected end of template" in message


def test_html_template_syntax_error_is_refused_with_file_and_line(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, html_template="<p>\n</p>\n{{ recipient.name }\n"
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.html.j2'}:3: template syntax error" in message


def test_subject_syntax_error_is_refused_naming_the_subject(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace("{{ recipient.name }}", "{{ recipient.name")
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:3: field 'campaign.subject': the subject is not a valid template" in (
        message
    )


def test_template_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path,
        None,
        before_run=lambda folder: (folder / "templates" / "letter.txt.j2").write_bytes(
            "Grüße {{ recipient.name }}\n".encode("latin-1")
        ),
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.txt.j2'}: the template is not valid UTF-8" in message


def test_template_cannot_reach_python_internals(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="{{ recipient.__class__.__mro__ }}\n"
    )
    message = assert_clean_refusal(refusal)
    assert "(for 2 recipients: alice, bob)" in message
    assert "access to attribute '__class__'" in message
    assert "is unsafe" in message


def test_template_cannot_change_the_data(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="{{ recipients.append(recipient) }}\n"
    )
    message = assert_clean_refusal(refusal)
    assert "(for 2 recipients: alice, bob)" in message
    assert "template error" in message
