"""Languages: each recipient's letter in their language, its template, subject and header.

The bundled campaign, copied, in three languages: English (the campaign's), the bundled
Russian translation, and a Kazakh one written here; sent to a real SMTP server on
127.0.0.1 and read back with the `email` package.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from send_helpers import (
    BUNDLED,
    BUNDLED_IDS,
    REPO,
    by_recipient,
    copy_bundled,
    parse,
    plain_body,
    run_cli,
    send,
    write_small_campaign,
)
from smtp_server import SmtpServer

from campaign.languages import LanguageError, normalise_language
from campaign.loading import Options, load_campaign
from campaign.render import LetterRenderer

ENGLISH_SUBJECT = (
    "Open letter from Members of the European Parliament on human rights in Kazakhstan"
)
SUBJECTS = {
    "en": ENGLISH_SUBJECT,
    "ru": "Открытое письмо депутатов Европейского парламента о правах человека в Казахстане",
    "kk": "Еуропалық Парламент депутаттарының Қазақстандағы адам құқықтары туралы ашық хаты",
}
LANGUAGES = {
    "president": "en",
    "general-prosecutor": "ru",
    "national-security-committee": "kk",
    "ministry-of-internal-affairs": "ru",
    "ministry-of-justice": "en",
    "ombudsman": "kk",
}
KAZAKH = """\
Ресми емес аударма.

{{ recipient.salutation }}

Біз, төменде қол қойған Еуропалық Парламент депутаттары, {{ campaign.date }}
{{ campaign.place }} қаласынан Сізге адам құқықтары туралы хат жазып отырмыз.

Құрметпен,
{% for name in campaign.signatories %}{{ name }}
{% endfor %}"""
# A line each letter has and the others have not.
MARKERS = {
    "en": "We, Members of the European Parliament, would like to draw your",
    "ru": "Неофициальный перевод.",
    "kk": "Ресми емес аударма.",
}


def three_languages(folder: Path, *, subjects: dict[str, str] | None = None) -> Path:
    """The bundled campaign with a subject per language and recipients in en, ru and kk."""
    path = copy_bundled(folder)
    text = path.read_text("utf-8")
    given = SUBJECTS if subjects is None else subjects
    mapping = "".join(f'\n    {language}: "{subject}"' for language, subject in given.items())
    text = text.replace(f'  subject: "{ENGLISH_SUBJECT}"', "  subject:" + mapping, 1)
    for rid, language in LANGUAGES.items():
        if language != "en":
            old = f'  - id: "{rid}"\n'
            assert old in text
            text = text.replace(old, f'{old}    language: "{language}"\n', 1)
    path.write_text(text, "utf-8")
    (folder / "templates" / "letter.kk.txt.j2").write_text(KAZAKH, "utf-8")
    return path


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    return three_languages(tmp_path / "campaign")


def test_each_recipient_gets_the_letter_in_their_language(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    run = send(campaign_file, smtp_server)
    assert run.status == 0, run.stderr
    received = by_recipient(smtp_server)
    for rid, language in LANGUAGES.items():
        [message] = received[rid]
        body = plain_body(message.data)
        assert MARKERS[language] in body
        assert all(marker not in body for other, marker in MARKERS.items() if other != language)
        assert BUNDLED[rid][1] in body  # the salutation, as the file writes it


def test_each_recipient_gets_their_languages_subject_and_content_language(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    received = by_recipient(smtp_server)
    for rid, language in LANGUAGES.items():
        message = parse(received[rid][0].data)
        assert str(message["Subject"]) == SUBJECTS[language]
        assert message["Content-Language"] == language


def test_a_language_without_an_html_template_gets_no_html_part(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    received = by_recipient(smtp_server)
    for rid, language in LANGUAGES.items():
        message = parse(received[rid][0].data)
        has_html = message.get_body(preferencelist=("html",)) is not None
        assert has_html == (language == "en"), rid


def test_one_subject_serves_every_language(tmp_path: Path, smtp_server: SmtpServer) -> None:
    path = three_languages(tmp_path / "campaign", subjects={})
    text = path.read_text("utf-8").replace("  subject:\n", f'  subject: "{ENGLISH_SUBJECT}"\n')
    path.write_text(text, "utf-8")
    assert send(path, smtp_server).status == 0
    assert {str(parse(m.data)["Subject"]) for m in smtp_server.messages} == {ENGLISH_SUBJECT}


def test_a_language_without_a_template_is_refused_naming_recipients_and_language(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    (campaign_file.parent / "templates" / "letter.kk.txt.j2").unlink()
    run = run_cli(campaign_file, "check")
    assert run.status == 2
    assert "no letter template for the language 'kk'" in run.err
    assert "letter.kk.txt.j2" in run.err
    assert "national-security-committee" in run.err and "ombudsman" in run.err
    assert "president" not in run.err and "general-prosecutor" not in run.err
    sent = send(campaign_file, smtp_server)
    assert sent.status == 2
    assert smtp_server.sessions == 0


def test_a_language_without_a_subject_is_refused_naming_recipients_and_language(
    tmp_path: Path,
) -> None:
    path = three_languages(tmp_path / "campaign", subjects={"en": "Open letter", "ru": "Письмо"})
    run = run_cli(path, "check")
    assert run.status == 2
    assert "campaign.subject gives no subject for the language 'kk'" in run.err
    assert "national-security-committee" in run.err and "ombudsman" in run.err
    assert "field 'campaign.subject'" in run.err


def test_check_shows_each_recipients_language(campaign_file: Path) -> None:
    run = run_cli(campaign_file, "check")
    assert run.status == 0, run.stderr
    [heading] = [line for line in run.stdout.splitlines() if " id " in line]
    assert "language" in heading
    for rid, language in LANGUAGES.items():
        [row] = [line for line in run.stdout.splitlines() if f" {rid} " in line]
        assert f" {language} " in row


def test_check_has_no_language_column_for_a_campaign_in_one_language(tmp_path: Path) -> None:
    run = run_cli(copy_bundled(tmp_path / "campaign"), "check")
    assert run.status == 0, run.stderr
    [heading] = [line for line in run.stdout.splitlines() if " id " in line]
    assert "status" in heading and "language" not in heading


def test_the_bundled_campaign_is_in_english_with_no_language_keys() -> None:
    source = load_campaign(Options(REPO / "recipients.yaml"))
    assert source.campaign.language == "en"
    assert [r.language for r in source.recipients] == [None] * len(BUNDLED_IDS)
    assert not any("language" in r.data for r in source.recipients)


def test_the_campaigns_own_language_uses_the_unsuffixed_templates(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    path = write_small_campaign(tmp_path / "campaign", 2, text="Уважаемый {{ recipient.name }}!\n")
    text = path.read_text("utf-8").replace(
        '  template: "letter"\n', '  template: "letter"\n  language: "ru"\n'
    )
    text = text.replace(
        '    name: "Recipient 2"\n', '    name: "Recipient 2"\n    language: "en"\n'
    )
    path.write_text(text, "utf-8")
    (path.parent / "templates" / "letter.en.txt.j2").write_text("Dear {{ recipient.name }},\n")
    assert send(path, smtp_server).status == 0
    received = {m.rcpt_tos[0]: parse(m.data) for m in smtp_server.messages}
    first, second = received["r001@example.net"], received["r002@example.net"]
    assert first["Content-Language"] == "ru" and "Уважаемый" in plain_body(first.as_bytes())
    assert second["Content-Language"] == "en" and "Dear" in plain_body(second.as_bytes())


def test_a_language_tag_is_written_in_its_canonical_case(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    path = write_small_campaign(tmp_path / "campaign", 1)
    text = path.read_text("utf-8").replace(
        '    name: "Recipient 1"\n', '    name: "Recipient 1"\n    language: "EN-gb"\n'
    )
    path.write_text(text, "utf-8")
    (path.parent / "templates" / "letter.en-GB.txt.j2").write_text("Dear colour,\n")
    assert send(path, smtp_server).status == 0
    [message] = smtp_server.messages
    assert parse(message.data)["Content-Language"] == "en-GB"
    assert "colour" in plain_body(message.data)


def test_a_bad_language_tag_is_refused_with_its_line_and_field(tmp_path: Path) -> None:
    path = write_small_campaign(tmp_path / "campaign", 2)
    text = path.read_text("utf-8").replace(
        '    name: "Recipient 2"\n', '    name: "Recipient 2"\n    language: "Russian"\n'
    )
    path.write_text(text, "utf-8")
    run = run_cli(path, "check")
    assert run.status == 2
    assert f"{path}:12: recipient 'r002', field 'language': 'Russian' is not a language tag" in (
        run.err
    )


def test_a_subject_for_a_bad_language_tag_is_refused(tmp_path: Path) -> None:
    path = three_languages(tmp_path / "campaign", subjects={**SUBJECTS, "english": "x"})
    run = run_cli(path, "check")
    assert run.status == 2
    assert "field 'campaign.subject.english': 'english' is not a language tag" in run.err


def test_each_languages_templates_are_read_once(campaign_file: Path) -> None:
    source = load_campaign(Options(campaign_file))
    renderer = LetterRenderer(source.campaign, source.recipients)
    first = {r.id: renderer.render(r).text for r in source.recipients}
    for template in (campaign_file.parent / "templates").glob("letter.*.txt.j2"):
        template.write_text("changed on disk\n", "utf-8")
    assert {r.id: renderer.render(r).text for r in source.recipients} == first


@pytest.mark.parametrize(
    ("written", "tag"),
    [
        ("ru", "ru"),
        ("KK", "kk"),
        ("en-gb", "en-GB"),
        ("sr-latn-rs", "sr-Latn-RS"),
        ("zh-Hant", "zh-Hant"),
        ("es-419", "es-419"),
        ("de-CH-1996", "de-CH-1996"),
    ],
)
def test_language_tags_are_read_in_canonical_case(written: str, tag: str) -> None:
    assert normalise_language(written) == tag


@pytest.mark.parametrize(
    "written", ["Russian", "r", "en_GB", "en-GB-x-private", "x-klingon", "", " ru", "ру", "e1"]
)
def test_anything_else_is_not_a_language_tag(written: str) -> None:
    with pytest.raises(LanguageError):
        normalise_language(written)


def test_check_of_a_long_list_shows_the_language_on_each_line(tmp_path: Path) -> None:
    path = write_small_campaign(tmp_path / "campaign", 201)  # past the drawn table's limit
    text = path.read_text("utf-8").replace(
        '    name: "Recipient 2"\n', '    name: "Recipient 2"\n    language: "ru"\n'
    )
    path.write_text(text, "utf-8")
    (path.parent / "templates" / "letter.ru.txt.j2").write_text("Уважаемый {{ recipient.name }}\n")
    run = run_cli(path, "check")
    assert run.status == 0, run.stderr
    lines = run.stdout.splitlines()
    [heading] = [line for line in lines if line.split()[:3] == ["#", "id", "status"]]
    assert heading.split()[3] == "language"
    [second] = [line for line in lines if " r002 " in line]
    assert second.split()[1:4] == ["r002", "ok", "ru"]
    [last] = [line for line in lines if " r201 " in line]
    assert last.split()[1:4] == ["r201", "ok", "en"]
