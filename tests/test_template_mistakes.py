"""Template mistakes read well: what is missing from what, with "did you mean"; one report
per template line for all recipients; a misspelt key the template does not use is a warning.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from campaign_factory import (
    BUNDLED_IDS,
    FIXED_NOW,
    GOOD_YAML,
    copy_bundled,
    run_cli,
    write_campaign,
)

from campaign.errors import CampaignError, ValidationErrors
from campaign.loading import Options, load_campaign
from campaign.prepare import prepare
from campaign.render import LetterRenderer, TemplateKeys, collapse_template_errors, template_keys
from campaign.store import MessageStore

BOB_NAME = '    name: "Bob Example"'


def errors_of(path: Path) -> list[CampaignError]:
    """Every recipient's error when the campaign at `path` is prepared (as `check` does)."""
    source = load_campaign(Options(path))
    with MessageStore() as store, pytest.raises(ValidationErrors) as caught:
        prepare(source, source.recipients, store, clock=lambda: FIXED_NOW)
    return caught.value.errors


def first_error(tmp_path: Path, text: str, yaml_text: str = GOOD_YAML) -> CampaignError:
    path = write_campaign(tmp_path, yaml_text, text)
    source = load_campaign(Options(path))
    with pytest.raises(CampaignError) as caught:
        LetterRenderer(source.campaign, source.recipients).render(source.recipients[0])
    return caught.value


# What is missing, from what


def test_missing_recipient_key_says_recipient_and_lists_the_keys(tmp_path: Path) -> None:
    error = first_error(tmp_path, "Dear {{ recipient.name }},\n{{ recipient.position }}\n")
    assert (error.line, error.field) == (2, "position")
    assert error.message == "undefined variable: recipient has no 'position'"
    assert error.hint == "the recipients have emails, id, name"
    assert "YamlMapping" not in str(error)


def test_misspelt_recipient_key_gets_did_you_mean(tmp_path: Path) -> None:
    error = first_error(tmp_path, "{{ recipient.nmae }}\n")
    assert error.message == "undefined variable: recipient has no 'nmae'"
    assert error.hint == "did you mean 'name'?"


def test_misspelt_campaign_key_gets_did_you_mean_from_the_campaign_section(
    tmp_path: Path,
) -> None:
    yaml_text = GOOD_YAML.replace("  from:", '  signed_as: "The Signatories"\n  from:')
    error = first_error(tmp_path, "{{ campaign.signd_as }}\n", yaml_text)
    assert error.message == "undefined variable: campaign has no 'signd_as'"
    assert error.hint == "did you mean 'signed_as'?"
    assert error.field == "signd_as"


def test_misspelt_top_level_name_gets_did_you_mean(tmp_path: Path) -> None:
    error = first_error(tmp_path, "{{ recipent.name }}\n")
    assert error.message == "undefined variable: 'recipent' is undefined"
    assert error.hint == "did you mean 'recipient'?"


@pytest.mark.parametrize(
    "expression",
    [
        "recipient.get('salutaton')",
        "none",
        "{}.get('b')",
        "recipient.get('salutaton') | upper",
        "recipient.get('salutaton') | trim",
        "recipient.get('salutaton') | string",
        "recipient.get('salutaton') | e",
        "recipient.get('salutaton') | safe",
        "recipient.get('salutaton') | center(20)",
        "'Mr ' ~ recipient.get('salutaton')",
        "'%s' | format(recipient.get('salutaton'))",
        "'%s' % recipient.get('salutaton')",
        "'{}'.format(recipient.get('salutaton'))",
        "[recipient.get('salutaton')] | join(' ')",
        "' '.join([recipient.get('salutaton')])",
    ],
)
def test_a_missing_value_never_reaches_the_letter_as_none(tmp_path: Path, expression: str) -> None:
    error = first_error(tmp_path, f"Dear {{{{ recipient.name }}}},\n{{{{ {expression} }}}}\n")
    assert error.line == 2
    assert "would write None (a missing value) into the letter" in error.message
    assert "default('', true)" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "{% if recipient.get('salutaton') %}X{% endif %}",
        "{{ recipient.get('salutaton') or '' }}",
        "{{ recipient.get('salutaton') | default('', true) }}",
        "{{ recipient.get('salutaton', 'Sir') | upper }}",
        "{% if recipient.get('salutaton') is none %}none{% endif %}",
        "{{ none | tojson }}",
    ],
)
def test_a_missing_value_may_still_be_tested_and_replaced(tmp_path: Path, text: str) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, f"Dear {{{{ recipient.name }}}},\n{text}\n")
    source = load_campaign(Options(path))
    rendered = LetterRenderer(source.campaign, source.recipients).render(source.recipients[0])
    assert "None" not in rendered.text


def test_check_refuses_a_letter_that_would_read_none(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "Dear {{ recipient.get('salutation') }},\n")
    run = run_cli("--file", path, "check")
    assert run.status == 2
    assert "would write None" in run.err
    assert "Traceback" not in run.err


def test_key_some_recipients_lack_says_so(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace(BOB_NAME, BOB_NAME + '\n    title: "Dr"')
    error = first_error(tmp_path, "{{ recipient.title }} {{ recipient.name }}\n", yaml_text)
    assert error.recipient == "alice"
    assert error.message == "undefined variable: recipient has no 'title'"
    assert error.hint is not None
    assert "other recipients have it" in error.hint
    assert "recipient.title | default('')" in error.hint


def test_key_missing_from_another_recipient_in_a_loop_names_recipients(tmp_path: Path) -> None:
    error = first_error(tmp_path, "{% for r in recipients %}{{ r.nmae }}{% endfor %}\n")
    assert error.message == "undefined variable: recipient has no 'nmae'"
    assert error.hint == "did you mean 'name'?"


# Once per template line


def test_one_mistake_for_every_recipient_is_reported_once(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    (tmp_path / "templates" / "letter.txt.j2").write_text(
        "{{ recipient.name }}\n{{ recipient.position }}\n", encoding="utf-8"
    )
    [error] = errors_of(path)  # prepare collapses the six into one
    assert error.recipient is None
    assert str(error) == (
        f"{tmp_path / 'templates' / 'letter.txt.j2'}:2: field 'position': undefined variable:"
        " recipient has no 'position' (for 6 recipients: president, general-prosecutor,"
        " national-security-committee, ministry-of-internal-affairs, ministry-of-justice"
        " and 1 more) (the recipients have address, emails, honorific, id, name, role,"
        " salutation, title)"
    )


def test_two_mistakes_stay_two_in_order_of_the_first_recipient(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "{{ recipient.nmae }}\n{{ campaign.plac }}\n")
    [collapsed] = errors_of(path)
    assert (collapsed.recipient, collapsed.line) == (None, 1)
    assert collapsed.message.endswith("(for 2 recipients: alice, bob)")


def test_different_problems_are_kept_apart_and_in_order() -> None:
    def error(message: str, recipient: str | None, line: int) -> CampaignError:
        return CampaignError(message, path="t.j2", line=line, recipient=recipient, field="x")

    errors = [
        error("a", "r1", 1),
        error("file problem", None, 3),
        error("b", "r1", 2),
        error("a", "r2", 1),
        error("file problem", None, 3),
        error("b", "r3", 9),
    ]
    collapsed = collapse_template_errors(errors)
    assert [(e.message, e.recipient, e.line) for e in collapsed] == [
        ("a (for 2 recipients: r1, r2)", None, 1),
        ("file problem", None, 3),
        ("b", "r1", 2),
        ("file problem", None, 3),
        ("b", "r3", 9),
    ]
    assert errors[0].message == "a"  # the originals are left as they were


def test_collapsed_error_survives_a_process_boundary() -> None:
    errors = [CampaignError("m", path="t.j2", line=1, recipient=r) for r in ("a", "b")]
    [merged] = collapse_template_errors(errors)
    again = pickle.loads(pickle.dumps(merged))  # as a worker process hands it back
    assert str(again) == str(merged) == "t.j2:1: m (for 2 recipients: a, b)"


# A misspelt key no template uses


def test_misspelt_key_in_the_bundled_campaign_is_a_check_warning(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("salutation:", "salutaion:", 1), encoding="utf-8")
    result = run_cli("--file", path, "check")
    assert result.status == 0, result.stderr
    assert "warning: president: 'salutaion' is not used; the template uses 'salutation'" in (
        result.out
    )


def test_unused_key_notice_names_recipient_field_and_line(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace(BOB_NAME, BOB_NAME + '\n    salutaion: "Dear Bob,"')
    text = "{{ recipient.salutation | default('Dear ' ~ recipient.name) }}\n"
    source = load_campaign(Options(write_campaign(tmp_path, yaml_text, text)))
    [notice] = [n for n in source.notices if "is not used" in n.message]
    assert (notice.recipient, notice.field, notice.line) == ("bob", "salutaion", 11)
    assert notice.message == "'salutaion' is not used; the template uses 'salutation'"


def test_one_misspelt_key_in_many_recipients_is_one_warning(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("salutation:", "salutaion:"), encoding="utf-8")
    result = run_cli("--file", path, "check")
    assert result.status == 0, result.stderr
    assert result.out.count("is not used") == 1
    assert (
        "warning: president: 'salutaion' is not used (and 5 more recipients); the template"
        " uses 'salutation'" in result.out
    )


def test_unused_campaign_key_is_a_warning_too(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace("  from:", '  signd_as: "Us"\n  from:')
    text = "{{ campaign.signed_as | default('The team') }}\n"
    source = load_campaign(Options(write_campaign(tmp_path, yaml_text, text)))
    [notice] = [n for n in source.notices if "is not used" in n.message]
    assert (notice.recipient, notice.field, notice.line) == (None, "campaign.signd_as", 4)


def test_used_keys_and_keys_the_program_reads_are_never_reported(tmp_path: Path) -> None:
    # 'name' is one edit from the template's 'nam', but campaign itself reads it.
    yaml_text = GOOD_YAML.replace(BOB_NAME, BOB_NAME + '\n    salutation: "Hi"')
    text = "{{ recipient.salutation | default('') }}{{ recipient.nam | default('') }}\n"
    source = load_campaign(Options(write_campaign(tmp_path, yaml_text, text)))
    assert [n for n in source.notices if "is not used" in n.message] == []


def test_no_warning_when_a_template_uses_the_whole_recipient(tmp_path: Path) -> None:
    yaml_text = GOOD_YAML.replace(BOB_NAME, BOB_NAME + '\n    salutaion: "Dear Bob,"')
    text = "{{ recipient.salutation | default('') }}{{ recipient|tojson }}\n"
    source = load_campaign(Options(write_campaign(tmp_path, yaml_text, text)))
    assert [n for n in source.notices if "is not used" in n.message] == []


# Which keys the templates name


def keys_of(tmp_path: Path, text: str, subject: str = "Hello", **parts: str) -> TemplateKeys | None:
    path = write_campaign(
        tmp_path, GOOD_YAML.replace("A letter for {{ recipient.name }}", subject), text
    )
    for name, part in parts.items():
        (tmp_path / "templates" / name).write_text(part, encoding="utf-8")
    return template_keys(load_campaign(Options(path)).campaign)


@pytest.mark.parametrize(
    ("text", "recipient", "campaign"),
    [
        ("{{ recipient.a }}{{ recipient['b'] }}{{ recipient.get('c') }}", {"a", "b", "c"}, set()),
        ("{% if recipient.a is defined %}{{ campaign.z }}{% endif %}", {"a"}, {"z"}),
        ("{% for r in recipients|sort(attribute='k') %}{{ r.a }}{% endfor %}", {"a", "k"}, set()),
        ("{{ recipients|selectattr('role')|map(attribute='name')|join }}", {"role", "name"}, set()),
        ("{% set r = recipient %}{{ r.a }}", {"a"}, set()),
        ("{{ recipient[key] }}{{ campaign.x }}", None, {"x"}),
        ("{% for k in recipient %}{{ k }}{% endfor %}", None, set()),
        ("{{ recipient.items()|list }}", None, set()),
        ("{{ campaign|tojson }}{{ recipient.a }}", {"a"}, None),
    ],
)
def test_template_keys_reads_the_keys_named(
    tmp_path: Path, text: str, recipient: set[str] | None, campaign: set[str] | None
) -> None:
    keys = keys_of(tmp_path, text)
    assert keys == TemplateKeys(
        None if recipient is None else frozenset(recipient),
        None if campaign is None else frozenset(campaign),
    )


def test_template_keys_follows_includes_and_reads_the_subject(tmp_path: Path) -> None:
    keys = keys_of(
        tmp_path,
        "{% include 'head.j2' %}{{ recipient.a }}",
        subject="For {{ recipient.s }}",
        **{"head.j2": "{{ campaign.h }}", "letter.html.j2": "{{ recipient.html_only }}"},
    )
    assert keys == TemplateKeys(frozenset({"a", "s", "html_only"}), frozenset({"h"}))


def test_template_keys_of_a_broken_template_is_none(tmp_path: Path) -> None:
    assert keys_of(tmp_path, "{% if %}") is None


def test_bundled_templates_name_every_key_of_the_bundled_recipients(tmp_path: Path) -> None:
    source = load_campaign(Options(copy_bundled(tmp_path)))
    keys = template_keys(source.campaign)
    assert keys is not None and keys.recipient is not None
    used = {key for recipient in source.recipients for key in recipient.data} - {"id"}
    assert used <= keys.recipient
    assert [r.id for r in source.recipients] == list(BUNDLED_IDS)
