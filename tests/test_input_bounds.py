"""Bounded input: deep nesting, long integers, long address lists and secret-looking keys are
refused by file, line and field, before anything is built; `imap:` and `return_path` are read.

Each CLI refusal runs `campaign drafts` over an outbox that already holds drafts and checks
that it is left byte-for-byte as it was.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from campaign_factory import (
    GOOD_YAML,
    assert_clean_refusal,
    refuse_over_existing_outbox,
    run_cli,
    write_campaign,
)

from campaign.errors import CampaignError, ValidationErrors
from campaign.loading import (
    MAX_ADDRESSES_PER_RECIPIENT,
    Options,
    load_campaign,
    secret_key_reason,
)
from campaign.models import ImapFileSettings
from campaign.strictyaml import MAX_DEPTH, MAX_INT_DIGITS

# Lines of GOOD_YAML: 1 campaign, 2 id, 3 subject, 4 from, 5 recipients,
# 6-8 alice (id, name, emails), 9-11 bob (id, name, emails).
BOB_NAME = '    name: "Bob Example"'
BOB_EMAILS = '    emails: ["bob@example.net"]'


def refused(tmp_path: Path, bad_yaml: str) -> tuple[str, Path]:
    refusal = refuse_over_existing_outbox(tmp_path, bad_yaml)
    return assert_clean_refusal(refusal), refusal.path


def problems(path: Path) -> list[str]:
    """What loading `path` refuses, one line per problem."""
    with pytest.raises(CampaignError) as caught:
        load_campaign(Options(path))
    if isinstance(caught.value, ValidationErrors):
        return [str(error) for error in caught.value.errors]
    return [str(caught.value)]


# Nesting and numbers


def test_nesting_of_600_levels_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    deep = "[" * 600 + "]" * 600
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, BOB_NAME + f"\n    deep: {deep}"))
    assert f"{path}:11: field 'deep': the data is nested more than {MAX_DEPTH} levels deep" in (
        message
    )


def test_nesting_of_indented_mappings_is_refused_at_the_first_level_too_deep(
    tmp_path: Path,
) -> None:
    # Top-level mapping, recipients list, bob's mapping: 3 levels; then 60 more mappings.
    levels = "".join("  " * (i + 3) + f"k{i}:\n" for i in range(60)) + "  " * 63 + 'x: "y"\n'
    path = write_campaign(
        tmp_path, GOOD_YAML.replace(BOB_EMAILS, BOB_EMAILS + "\n    k:\n" + levels)
    )
    [problem] = problems(path)
    # The document, the list, bob, k's value: 4 levels; k46's value (line 60) would be the 51st.
    assert problem.startswith(f"{path}:60: field 'k46': the data is nested more than 50 levels")


def test_nesting_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 3  # the document, the recipient list and bob's mapping come first
    value = "[" * depth + '"x"' + "]" * depth
    path = write_campaign(tmp_path, GOOD_YAML.replace(BOB_NAME, BOB_NAME + f"\n    deep: {value}"))
    deep = load_campaign(Options(path)).recipients[1].data["deep"]
    for _ in range(depth):
        deep = deep[0]
    assert deep == "x"


def test_integer_of_5000_digits_is_refused_not_a_traceback(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML + "smtp:\n  port: " + "1" * 5000 + "\n")
    assert (
        f"{path}:13: field 'port': a number of 5000 digits is longer than the"
        f" {MAX_INT_DIGITS} allowed"
    ) in message
    assert "put it in quotes" in message
    assert "1" * 200 not in message


def test_integer_of_101_digits_is_refused_and_of_100_digits_is_read(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace(BOB_NAME, BOB_NAME + "\n    n: " + "9" * 100))
    assert load_campaign(Options(path)).recipients[1].data["n"] == int("9" * 100)
    path.write_text(GOOD_YAML.replace(BOB_NAME, BOB_NAME + "\n    n: " + "9" * 101))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:11: field 'n': a number of 101 digits is longer")


def test_long_value_read_as_a_number_is_quoted_back_shortened(tmp_path: Path) -> None:
    message, _ = refused(
        tmp_path, GOOD_YAML.replace(BOB_NAME, BOB_NAME + "\n    f: 1." + "5" * 3000)
    )
    assert "would be read as a number" in message
    assert "5" * 100 not in message


# Addresses per recipient


def address_list(count: int) -> str:
    return ", ".join(f'"bob{i}@example.net"' for i in range(count))


def test_recipient_with_20000_addresses_is_refused_fast_with_recipient_and_line(
    tmp_path: Path,
) -> None:
    bad = GOOD_YAML.replace(BOB_EMAILS, f"    emails: [{address_list(20_000)}]")
    started = time.monotonic()
    message, path = refused(tmp_path, bad)
    assert time.monotonic() - started < 10  # was 49 s in the header parser
    assert (
        f"{path}:11: recipient 'bob', field 'emails': 20000 addresses; at most"
        f" {MAX_ADDRESSES_PER_RECIPIENT} are allowed"
    ) in message
    assert "split them over several recipients" in message
    assert "1 problem found" in message


def test_recipient_with_the_maximum_of_addresses_is_read(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace(
        BOB_EMAILS, f"    emails: [{address_list(MAX_ADDRESSES_PER_RECIPIENT)}]"
    )
    source = load_campaign(Options(write_campaign(tmp_path, yaml_text)))
    assert len(source.recipients[1].addresses) == MAX_ADDRESSES_PER_RECIPIENT


def test_address_list_one_over_the_maximum_written_one_per_line_is_refused(
    tmp_path: Path,
) -> None:
    lines = "".join(f'      - "bob{i}@example.net"\n' for i in range(101))
    path = write_campaign(tmp_path, GOOD_YAML.replace(BOB_EMAILS + "\n", "    emails:\n" + lines))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:11: recipient 'bob', field 'emails': 101 addresses")


# Secret-looking keys

SECRET_KEYS = (
    "password",
    "Password",
    "passwd",
    "pass",
    "pwd",
    "pw",
    "smtp_pw",
    "passcode",
    "smtp_pass",
    "smtp-pass",
    "smtpPass",
    "smtp_password",
    "SMTP_PASSWORD",
    "smtppassword",
    "passphrase",
    "api_key",
    "api-key",
    "apiKey",
    "APIKey",
    "apikey",
    "token",
    "auth_token",
    "authToken",
    "access_token",
    "secret",
    "client_secret",
    "clientSecret",
    "secret_key",
    "private_key",
    "privateKey",
    "access_key_id",
    "credentials",
    "imap_credential",
)
HARMLESS_KEYS = (
    "passport_no",
    "secretary",
    "compass",
    "bypass",
    "passage",
    "keywords",
    "key",
    "tokenism",
    "salutation",
    "private_office",
    "api",
)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_looking_key_is_refused(key: str) -> None:
    assert secret_key_reason(key) is not None


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_harmless_key_is_accepted(key: str) -> None:
    assert secret_key_reason(key) is None


@pytest.mark.parametrize("key", ["smtp_pass", "api_key", "token", "secret"])
def test_secret_key_in_a_recipient_is_refused_with_line_and_field(tmp_path: Path, key: str) -> None:
    message, path = refused(tmp_path, GOOD_YAML.replace(BOB_NAME, f'{BOB_NAME}\n    {key}: "x1"'))
    assert f"{path}:11: field '{key}': a " in message
    assert "does not belong in the campaign file" in message
    assert "x1" not in message


def test_secret_key_deep_in_a_list_in_the_campaign_section_is_refused(tmp_path: Path) -> None:
    bad = GOOD_YAML.replace("  from:", '  extra:\n    - note: "a"\n      apiKey: "k"\n  from:')
    message, path = refused(tmp_path, bad)
    assert f"{path}:6: field 'apiKey': a secret does not belong in the campaign file" in message


def test_every_secret_key_is_listed_each_with_its_line(tmp_path: Path) -> None:
    bad = GOOD_YAML.replace(BOB_NAME, f'{BOB_NAME}\n    token: "a"').replace(
        '    name: "Alice Example"', '    name: "Alice Example"\n    token: "b"'
    )
    path = write_campaign(tmp_path, bad + 'imap:\n  host: "imap.example.org"\n  password: "c"\n')
    found = problems(path)
    assert [p.split(": ", 2)[:2] for p in found] == [
        [f"{path}:8", "field 'token'"],
        [f"{path}:12", "field 'token'"],
        [f"{path}:16", "field 'password'"],
    ]


def test_harmless_key_reaches_the_template(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path,
        GOOD_YAML.replace(BOB_NAME, f'{BOB_NAME}\n    passport_no: "P123"'),
        "{{ recipient.passport_no | default('-') }}\n",
    )
    result = run_cli("--file", path, "drafts")
    assert result.status == 0, result.stderr
    assert b"P123" in (tmp_path / "outbox" / "02-bob.eml").read_bytes()


# The imap: section and campaign.return_path


def test_imap_section_is_read_into_its_settings(tmp_path: Path) -> None:
    imap = (
        'imap:\n  host: "imap.example.org"\n  port: 993\n  security: "tls"\n'
        '  username: "campaign"\n  ca_file: "ca.pem"\n  folder: "Campaign/Replies"\n'
    )
    source = load_campaign(Options(write_campaign(tmp_path, GOOD_YAML + imap)))
    assert source.campaign.imap == ImapFileSettings(
        host="imap.example.org",
        port=993,
        security="tls",
        username="campaign",
        ca_file="ca.pem",
        folder="Campaign/Replies",
    )


def test_missing_imap_section_gives_empty_settings(tmp_path: Path) -> None:
    assert (
        load_campaign(Options(write_campaign(tmp_path, GOOD_YAML))).campaign.imap
        == ImapFileSettings()
    )


def test_imap_security_mode_outside_the_choices_is_refused(tmp_path: Path) -> None:
    message, path = refused(tmp_path, GOOD_YAML + 'imap:\n  security: "ssl"\n')
    assert f"{path}:13: field 'imap.security': 'ssl' is not a security mode" in message
    assert "expected one of tls, starttls, none" in message


def test_imap_port_out_of_range_and_unknown_key_are_refused(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML + 'imap:\n  port: 0\n  mailbox: "INBOX"\n')
    found = problems(path)
    assert f"{path}:14: field 'imap.mailbox': unknown key 'mailbox'" in found[0]
    assert f"{path}:13: field 'imap.port': expected a port number" in found[1]


def test_return_path_is_normalised(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace("  from:", '  return_path: "Bounces@Example.ORG"\n  from:')
    assert load_campaign(Options(write_campaign(tmp_path, yaml_text))).campaign.return_path == (
        "Bounces@example.org"
    )


def test_return_path_defaults_to_none(tmp_path: Path) -> None:
    assert load_campaign(Options(write_campaign(tmp_path, GOOD_YAML))).campaign.return_path is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"bounces@"', "invalid address 'bounces@'"),
        ('"Bounces <bounces@example.org>"', "the envelope sender is an address only"),
        ('"a@example.org\\r\\nRCPT TO:<x@example.com>"', "contains a line break"),
    ],
)
def test_bad_return_path_is_refused_with_its_field(tmp_path: Path, value: str, reason: str) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace("  from:", f"  return_path: {value}\n  from:")
    )
    assert f"{path}:4: field 'campaign.return_path': " in message
    assert reason in message


def test_misspelt_return_path_gets_a_suggestion(tmp_path: Path) -> None:
    message, path = refused(
        tmp_path, GOOD_YAML.replace("  from:", '  retrun_path: "b@example.org"\n  from:')
    )
    assert f"{path}:4: field 'campaign.retrun_path': unknown key" in message
    assert "did you mean 'return_path'?" in message
