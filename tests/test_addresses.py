"""Addresses go through email-validator: normalised, IDN as punycode, invalid ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaign_factory import (
    FIXED_NOW,
    GOOD_YAML,
    assert_clean_refusal,
    parse_eml,
    refuse_over_existing_outbox,
    run_cli,
    write_campaign,
)

from campaign.addresses import AddressError, normalise, placeholder_reason, split_mailbox
from campaign.loading import Options, load_campaign
from campaign.prepare import prepare
from campaign.store import MessageStore

BOB_EMAILS = '    emails: ["bob@example.net"]'


def test_plain_address_is_kept_as_written() -> None:
    assert normalise("Kense@mvd.kz") == "Kense@mvd.kz"


def test_domain_is_lowercased_and_local_part_kept() -> None:
    assert normalise("Gp-rk@ProKuror.KZ") == "Gp-rk@prokuror.kz"


def test_internationalised_domain_becomes_punycode() -> None:
    assert normalise("user@bücher.example") == "user@xn--bcher-kva.example"


def test_internationalised_local_part_is_refused() -> None:
    with pytest.raises(AddressError, match="Internationalized characters before the @-sign"):
        normalise("jürgen@example.com")


def test_address_without_dot_in_domain_is_refused_with_the_reason() -> None:
    with pytest.raises(AddressError, match="It should have a period"):
        normalise("bob@example")


def test_address_with_two_at_signs_is_refused() -> None:
    with pytest.raises(AddressError, match="invalid characters"):
        normalise("bob@@example.com")


def test_address_with_a_line_break_is_refused_before_validation() -> None:
    with pytest.raises(AddressError, match="line break"):
        normalise("bob@example.com\r\nBcc: eve@example.com")


def test_split_name_and_address() -> None:
    parsed = split_mailbox("Campaign Office <campaign@example.org>")
    assert (parsed.display_name, parsed.address) == ("Campaign Office", "campaign@example.org")


def test_split_quoted_name_with_comma_and_escaped_quote() -> None:
    parsed = split_mailbox('"Müller, Jürgen \\"JM\\"" <jm@example.org>')
    assert (parsed.display_name, parsed.address) == ('Müller, Jürgen "JM"', "jm@example.org")


def test_split_bare_address_has_no_name() -> None:
    parsed = split_mailbox("  campaign@example.org ")
    assert (parsed.display_name, parsed.address) == ("", "campaign@example.org")


def test_split_refuses_stray_angle_bracket() -> None:
    with pytest.raises(AddressError, match="Name <address>"):
        split_mailbox("Office campaign@example.org>")


def test_invalid_recipient_address_is_refused_with_recipient_and_reason(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace('"bob@example.net"', '"bob@example"')
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:11: recipient 'bob', field 'emails'" in message
    assert "invalid address 'bob@example': The part after the @-sign is not valid." in message
    assert "It should have a period." in message


def test_invalid_address_in_a_list_names_its_own_line(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path,
        GOOD_YAML.replace(BOB_EMAILS, '    emails:\n      - "bob@example.net"\n      - "bob@ x"'),
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:13: recipient 'bob', field 'emails': invalid address 'bob@ x'" in (
        message
    )


def test_non_text_address_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace(BOB_EMAILS, '    emails: ["bob@example.net", ["x"]]')
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:11: recipient 'bob', field 'emails': expected an address" in message


def test_invalid_sender_address_is_refused_once(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace("<sender@example.org>", "<sender.example.org>")
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:4: field 'campaign.from': invalid address" in message
    assert "1 problem found" in message


def test_two_sender_addresses_are_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path,
        GOOD_YAML.replace(
            '"Test Sender <sender@example.org>"', '["a@example.org", "b@example.org"]'
        ),
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:4: field 'campaign.from': expected exactly one sender" in message


def test_invalid_reply_to_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace("  from:", '  reply_to: "replies@"\n  from:')
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:4: field 'campaign.reply_to': invalid address 'replies@'" in message


def test_same_address_under_two_recipients_is_refused_naming_both(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace('"bob@example.net"', '"alice@example.com"')
    )
    message = assert_clean_refusal(refusal)
    assert f"{refusal.path}:11: recipient 'bob', field 'emails'" in message
    assert "the address alice@example.com is listed also under recipient 'alice'" in message
    assert "(line 8)" in message


def test_same_address_in_other_case_domain_counts_as_the_same(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, GOOD_YAML.replace('"bob@example.net"', '"alice@EXAMPLE.com"')
    )
    assert "is listed also under recipient 'alice'" in assert_clean_refusal(refusal)


def test_same_address_twice_for_one_recipient_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path,
        GOOD_YAML.replace(BOB_EMAILS, '    emails: ["bob@example.net", "bob@Example.NET"]'),
    )
    message = assert_clean_refusal(refusal)
    assert "the address bob@example.net is listed twice for this recipient" in message


def test_single_address_may_be_given_as_text(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace(BOB_EMAILS, '    emails: "bob@example.net"'))
    source = load_campaign(Options(path))
    assert source.recipients[1].addresses == ("bob@example.net",)


def test_internationalised_domain_reaches_the_envelope_as_punycode(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace("bob@example.net", "bob@bücher.example"))
    source = load_campaign(Options(path))
    with MessageStore() as store:
        prepared = prepare(source, source.recipients, store, clock=lambda: FIXED_NOW)
        draft = prepared.drafts[1]
        data = prepared.data(draft)
    assert draft.addresses == ("bob@xn--bcher-kva.example",)
    assert b"To: Bob Example <bob@xn--bcher-kva.example>\r\n" in data


def test_internationalised_domain_is_punycode_in_the_draft_header(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace("bob@example.net", "bob@bücher.example"))
    assert run_cli("--file", path, "drafts").status == 0
    message = parse_eml(tmp_path / "outbox" / "02-bob.eml")
    assert [a.addr_spec for a in message["To"].addresses] == ["bob@xn--bcher-kva.example"]


@pytest.mark.parametrize(
    "address",
    [
        "campaign@example.org",
        "a@EXAMPLE.com",
        "a@example.net",
        "a@mail.example",
        "a@x.invalid",
        "a@host.test",
        "a@localhost",
        "a@mail.localhost",
    ],
)
def test_placeholder_sender_is_named(address: str) -> None:
    reason = placeholder_reason(address)
    assert reason is not None and "reserved for examples and tests" in reason


@pytest.mark.parametrize(
    "address", ["aprk@akorda.kz", "a@example.org.kz", "a@notexample.com", "a@testing.org"]
)
def test_real_sender_is_not_a_placeholder(address: str) -> None:
    assert placeholder_reason(address) is None
