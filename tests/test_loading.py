"""recipients.yaml is read strictly: every bad input is refused by file, line, recipient and field.

Each refusal runs `campaign drafts` over an outbox that already holds drafts, and checks
that the outbox is left byte-for-byte as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from campaign_factory import (
    GOOD_YAML,
    assert_clean_refusal,
    copy_bundled,
    refuse_over_existing_outbox,
    run_cli,
    write_campaign,
)

from campaign.loading import Options, load_campaign
from campaign.strictyaml import MAX_FILE_BYTES

# Lines of GOOD_YAML: 1 campaign, 2 id, 3 subject, 4 from, 5 recipients,
# 6-8 alice (id, name, emails), 9-11 bob (id, name, emails).
BOB_NAME = '    name: "Bob Example"'
BOB_EMAILS = '    emails: ["bob@example.net"]'


def refused(tmp_path: Path, bad_yaml: str) -> tuple[str, Path]:
    refusal = refuse_over_existing_outbox(tmp_path, bad_yaml)
    return assert_clean_refusal(refusal), refusal.path


def test_good_campaign_loads_with_its_free_data(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path,
        GOOD_YAML.replace("  from:", '  place: "Brussels"\n  from:').replace(
            BOB_NAME, BOB_NAME + '\n    title: "Minister"'
        ),
    )
    source = load_campaign(Options(path))
    assert source.campaign.id == "small-test"
    assert source.campaign.template == "letter"
    assert source.campaign.templates_dir == tmp_path / "templates"
    assert source.campaign.data["place"] == "Brussels"
    assert [r.id for r in source.recipients] == ["alice", "bob"]
    assert source.recipients[1].data["title"] == "Minister"
    assert source.recipients[1].line == 10


def test_missing_required_key_is_refused_with_recipient_and_field(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace('    name: "Bob Example"\n', ""))
    assert f"{path}:9: recipient 'bob', field 'name': the required key 'name' is missing" in message


def test_missing_campaign_key_is_refused_with_its_field(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace('  from: "Test Sender <sender@example.org>"\n', "")
    )
    assert f"{path}:2: field 'campaign.from': the required key 'from' is missing" in message


def test_misspelt_recipient_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace(BOB_EMAILS, '    emial: ["bob@example.net"]')
    )
    assert f"{path}:11: recipient 'bob', field 'emial': unknown key 'emial'" in message
    assert "did you mean 'emails'?" in message
    assert "missing" not in message  # one error for one typo


def test_misspelt_campaign_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace("  subject:", "  subjet:"))
    assert f"{path}:3: field 'campaign.subjet': unknown key 'subjet'" in message
    assert "did you mean 'subject'?" in message


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace("recipients:", "recipient:"))
    assert f"{path}:5: field 'recipient': unknown top-level key 'recipient'" in message
    assert "did you mean 'recipients'?" in message


def test_list_where_a_text_belongs_is_refused_as_wrong_type(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, '    name: ["Bob", "Example"]'))
    assert f"{path}:10: recipient 'bob', field 'name': expected a text, found a list" in message


def test_mapping_where_addresses_belong_is_refused_as_wrong_type(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path,
        GOOD_YAML.replace(BOB_EMAILS, '    emails: {work: "bob@example.net"}'),
    )
    assert f"{path}:11: recipient 'bob', field 'emails'" in message
    assert "expected an address or a list of addresses, found a mapping" in message


def test_campaign_section_given_as_text_is_refused(tmp_path: Path) -> None:
    text = 'campaign: "small-test"\n' + GOOD_YAML[GOOD_YAML.index("recipients:") :]
    message, path = refused(tmp_path, text)
    assert f"{path}:1: field 'campaign': 'campaign' must be a mapping, not a text" in message


def test_recipient_given_as_text_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML + '  - "carol@example.com"\n')
    assert f"{path}:12: field 'recipients': recipient #3 must be a mapping" in message


def test_duplicate_recipient_id_is_refused_naming_the_first(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace('id: "bob"', 'id: "alice"'))
    assert f"{path}:9: recipient 'alice', field 'id': the id 'alice' is used twice" in message
    assert "(first on line 6)" in message


def test_recipient_id_that_is_not_a_slug_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace('id: "bob"', 'id: "Bob Example"'))
    assert f"{path}:9: recipient 'Bob Example', field 'id': 'Bob Example' is not a slug" in message


def test_empty_recipient_list_is_refused(tmp_path: Path) -> None:
    text = GOOD_YAML[: GOOD_YAML.index("recipients:")] + "recipients: []\n"
    message, path = refused(tmp_path, text)
    assert f"{path}:5: field 'recipients': the recipient list is empty" in message


def test_missing_recipient_list_is_refused(tmp_path: Path) -> None:
    text = GOOD_YAML[: GOOD_YAML.index("recipients:")]
    message, path = refused(tmp_path, text)
    assert f"{path}:1: field 'recipients': the 'recipients' list is missing" in message


def test_empty_address_list_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_EMAILS, "    emails: []"))
    assert f"{path}:11: recipient 'bob', field 'emails': the address list is empty" in message


def test_empty_name_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace('"Bob Example"', '"  "'))
    assert f"{path}:10: recipient 'bob', field 'name': the value is empty" in message


def test_duplicate_key_in_a_mapping_is_refused_with_both_lines(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace(BOB_NAME, '    name: "Bob"\n    name: "Robert"')
    )
    assert f"{path}:11: field 'name': the key 'name' is given twice (first on line 10)" in message


def test_duplicate_campaign_key_is_refused(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace("  from:", '  subject: "Second subject"\n  from:')
    )
    assert f"{path}:4: field 'subject': the key 'subject' is given twice" in message
    assert "(first on line 3)" in message


def test_unquoted_no_is_refused_not_read_as_false(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, "    name: no"))
    assert f"{path}:10: field 'name': no would be read as a yes/no (boolean) value" in message
    assert 'put it in quotes: "no"' in message


def test_unquoted_leading_zero_number_is_refused_not_read_as_octal(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace(BOB_NAME, '    name: "Bob"\n    postal: 0123')
    )
    assert f"{path}:11: field 'postal': 0123 would be read as a number" in message
    assert 'put it in quotes: "0123"' in message


def test_bare_date_is_refused_not_read_as_a_date(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace("  from:", "  date: 2017-10-19\n  from:"))
    assert f"{path}:4: field 'date': 2017-10-19 would be read as a date" in message


def test_unquoted_float_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace("  from:", "  version: 1.5\n  from:"))
    assert f"{path}:4: field 'version': 1.5 would be read as a number" in message


def test_null_value_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, "    name:"))
    assert f"{path}:10: field 'name': the value is empty (nothing)" in message


def test_python_object_tag_is_refused(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path,
        GOOD_YAML.replace(
            '    name: "Bob Example"', '    name: !!python/object/apply:os.system ["true"]'
        ),
    )
    assert f"{path}:10: field 'name': the tag tag:yaml.org,2002:python/object/apply" in message
    assert "os.system is not allowed: the file holds plain data only" in message


def test_anchor_and_alias_are_refused(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path,
        GOOD_YAML.replace('    name: "Alice Example"', '    name: &who "Alice Example"'),
    )
    assert f"{path}:7: field 'name': anchors (&who) are not supported" in message


def test_second_yaml_document_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML + "---\ncampaign: {}\n")
    assert f"{path}:12: the file holds more than one YAML document" in message


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, '    name: "Bob'))
    assert f"{path}:" in message
    assert "not valid YAML" in message


def test_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(tmp_path, None, before_run=_latin1_name)
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:10: the file is not valid UTF-8" in message


def _latin1_name(folder: Path) -> None:
    path = folder / "recipients.yaml"
    path.write_bytes(GOOD_YAML.replace("Bob Example", "Bob Müller").encode("latin-1"))


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(tmp_path, None, before_run=_oversize)
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}: the file is 64 MiB, far larger than any campaign" in message
    assert "the limit is 64 MiB" in message


def _oversize(folder: Path) -> None:
    with open(folder / "recipients.yaml", "r+b") as handle:  # sparse: no 64 MiB written
        handle.truncate(MAX_FILE_BYTES + 1)


def test_password_in_a_recipient_is_refused_pointing_to_the_environment(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace(BOB_NAME, '    name: "Bob"\n    password: "x"')
    )
    assert f"{path}:11: field 'password': a password does not belong in the" in message
    assert "CAMPAIGN_SMTP_PASSWORD" in message


def test_password_in_the_smtp_section_is_refused_pointing_to_the_environment(
    tmp_path: Path,
) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML + 'smtp:\n  host: "smtp.example.org"\n  password: "hunter2"\n'
    )
    assert f"{path}:14: field 'password': a password does not belong in the" in message
    assert "CAMPAIGN_SMTP_PASSWORD" in message
    assert "hunter2" not in message


def test_smtp_port_out_of_range_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML + "smtp:\n  port: 70000\n")
    assert f"{path}:13: field 'smtp.port': expected a port number between 1 and 65535" in message


def test_missing_templates_folder_is_refused_naming_the_template(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, before_run=lambda folder: shutil.rmtree(folder / "templates")
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.txt.j2'}: the letter template is missing" in message


def test_templates_option_points_to_another_folder(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "campaign", GOOD_YAML, text_template=None)
    write_campaign(tmp_path / "elsewhere", GOOD_YAML, text_template="Other {{ recipient.id }}\n")
    result = run_cli("--file", path, "--templates", tmp_path / "elsewhere" / "templates", "drafts")
    assert result.status == 0, result.stderr
    assert b"Other alice" in (tmp_path / "campaign" / "outbox" / "01-alice.eml").read_bytes()


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    refusal = refuse_over_existing_outbox(tmp_path, None, file=missing)
    message = assert_clean_refusal(refusal)
    assert f"{missing}: file not found" in message
    assert "--file" in message


def test_every_problem_is_listed_in_one_run(tmp_path: Path) -> None:
    bad = GOOD_YAML.replace('    name: "Alice Example"\n', "").replace(
        '"bob@example.net"', '"bob@example"'
    )
    message, path = refused(tmp_path, bad)
    assert "2 problems found; nothing was written or sent" in message
    assert f"{path}:6: recipient 'alice', field 'name'" in message
    assert f"{path}:10: recipient 'bob', field 'emails'" in message


def test_likely_mistakes_are_looked_for_only_when_asked(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    looked = load_campaign(Options(path))
    not_looked = load_campaign(Options(path, notices=False))
    assert any("'mbudsman' looks like a misspelling" in n.message for n in looked.notices)
    assert not any("misspelling" in n.message for n in not_looked.notices)
    assert not_looked.recipients == looked.recipients
