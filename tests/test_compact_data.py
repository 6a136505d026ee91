"""A large campaign file is held compactly, and still reads as the file says.

Mappings share their keys, values repeated under one key are one string, a list written
on its key's line keeps no lines of its own: none of this may change what a template or an
error sees.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from campaign_factory import (
    GOOD_YAML,
    assert_clean_refusal,
    refuse_over_existing_outbox,
    write_campaign,
)

from campaign.loading import Options, load_campaign
from campaign.render import LetterRenderer
from campaign.strictyaml import YamlMapping, parse_yaml

MANY = """\
people:
  - id: "a"
    country: "Kazakhstan"
    emails: ["a@example.org", "a2@example.org"]
  - id: "b"
    country: "Kazakhstan"
    emails:
      - "b@example.org"
      - "b2@example.org"
"""


def people() -> list[YamlMapping]:
    document = parse_yaml(MANY, Path("many.yaml"))
    return list(document["people"])


def test_a_mapping_reads_like_the_dict_the_file_describes() -> None:
    first = people()[0]
    assert dict(first) == {
        "id": "a",
        "country": "Kazakhstan",
        "emails": ["a@example.org", "a2@example.org"],
    }
    assert list(first) == ["id", "country", "emails"]
    assert "country" in first and "title" not in first
    assert first.get("title", "none") == "none"
    with pytest.raises(KeyError):
        first["title"]


def test_a_mapping_cannot_be_changed() -> None:
    first = people()[0]
    with pytest.raises(TypeError):
        first["id"] = "z"  # type: ignore[index]


def test_each_key_keeps_its_own_line() -> None:
    first, second = people()
    assert (first.line, first.line_of("country"), first.line_of("emails")) == (2, 3, 4)
    assert (second.line, second.line_of("country"), second.line_of("emails")) == (5, 6, 7)
    assert first.line_of("missing") == 2


def test_a_list_on_its_key_line_is_a_list_like_a_block_list() -> None:
    first, second = people()
    assert first["emails"] == ["a@example.org", "a2@example.org"]
    assert second["emails"] == ["b@example.org", "b2@example.org"]
    assert isinstance(first["emails"], list) and isinstance(second["emails"], list)


def test_recipient_mailboxes_carry_the_recipient_name(tmp_path: Path) -> None:
    path = tmp_path / "recipients.yaml"
    path.write_text(GOOD_YAML, "utf-8")
    alice = load_campaign(Options(path)).recipients[0]
    assert alice.addresses == ("alice@example.com",)
    assert [(m.display_name, m.address) for m in alice.mailboxes] == [
        ("Alice Example", "alice@example.com")
    ]


TEMPLATE = """\
{{ recipient.emails }} {{ recipient.emails == ["x@example.org", "y@example.org"] }}
{{ recipient.emails + ["z@example.org"] }}
{{ recipient | tojson }}
{{ recipients | map(attribute="emails") | sort | first }}
{{ recipient | last }} {{ recipient | length }} {{ recipient | dictsort | first }}
"""


@pytest.mark.parametrize(
    "emails",
    [
        '    emails: ["x@example.org", "y@example.org"]\n',
        '    emails:\n      - "x@example.org"\n      - "y@example.org"\n',
    ],
    ids=["one-line list", "block list"],
)
def test_a_template_sees_the_file_as_plain_dicts_and_lists(tmp_path: Path, emails: str) -> None:
    text = (
        'campaign:\n  id: "t"\n  subject: "S"\n  from: "A <a@example.org>"\n'
        "recipients:\n"
        '  - id: "x"\n    name: "X"\n' + emails + '  - id: "w"\n    name: "W"\n'
        '    emails: ["w@example.org"]\n'
    )
    source = load_campaign(Options(write_campaign(tmp_path, text, TEMPLATE)))
    rendered = LetterRenderer(source.campaign, source.recipients).render(source.recipients[0])
    assert rendered.text.splitlines() == [
        "['x@example.org', 'y@example.org'] True",
        "['x@example.org', 'y@example.org', 'z@example.org']",
        '{"emails": ["x@example.org", "y@example.org"], "id": "x", "name": "X"}',
        "['w@example.org']",
        "emails 3 ('emails', ['x@example.org', 'y@example.org'])",
    ]


def test_a_bad_address_in_a_one_line_list_is_reported_on_that_line(tmp_path: Path) -> None:
    bad = GOOD_YAML.replace('["bob@example.net"]', '["bob@example.net", "bob@@example"]')
    message = assert_clean_refusal(refuse_over_existing_outbox(tmp_path, bad))
    assert ":11: recipient 'bob', field 'emails': invalid address 'bob@@example'" in message


def test_a_bad_address_in_a_block_list_is_reported_on_its_own_line(tmp_path: Path) -> None:
    bad = GOOD_YAML.replace(
        '    emails: ["bob@example.net"]',
        '    emails:\n      - "bob@example.net"\n      - "bob@@example"',
    )
    message = assert_clean_refusal(refuse_over_existing_outbox(tmp_path, bad))
    assert ":13: recipient 'bob', field 'emails': invalid address 'bob@@example'" in message


def test_the_same_address_differing_only_in_case_is_refused_within_a_recipient(
    tmp_path: Path,
) -> None:
    bad = GOOD_YAML.replace('["bob@example.net"]', '["bob@example.net", "BOB@example.net"]')
    message = assert_clean_refusal(refuse_over_existing_outbox(tmp_path, bad))
    assert "recipient 'bob', field 'emails'" in message
    assert "is listed twice for this recipient" in message
