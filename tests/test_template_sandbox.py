"""The template sandbox bounds work: huge values are refused before they are made, a render
has a time limit, a letter a size limit, and templates are read only from their folder.

Each refusal names the template file and line; the CLI ones leave the outbox untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from campaign_factory import (
    GOOD_TEXT,
    GOOD_YAML,
    assert_clean_refusal,
    parse_eml,
    refuse_over_existing_outbox,
    run_cli,
    write_campaign,
)

from campaign.errors import CampaignError
from campaign.loading import Options, load_campaign
from campaign.models import Recipient
from campaign.render import MAX_LETTER_BYTES, LetterRenderer
from campaign.sandbox import MAX_ITEMS, MAX_TEXT

# A list written out, of eleven texts of a million characters: no `*` makes it.
ELEVEN_MEGABYTES = "[" + ", ".join(["'y' * 1000000"] * 11) + "]"
# Expressions that would take gigabytes or hours; each must fail at once, naming why.
HUGE = [
    ("('x' * 2000000000)|length", "* would make 2,000,000,000 characters"),
    ("(2000000000 * 'x')|length", "* would make 2,000,000,000 characters"),
    ("([0] * 10**9)|length", "* would make 1,000,000,000 items"),
    ("range(10**9)|length", "range() would make 1,000,000,000 numbers"),
    ("(['x' * 1000000] * 100)|join|length", "would make a list of more than"),
    ("('%2000000000s' % 'x')|length", "a % format width would make 2,000,000,000"),
    ("('%0*d' % (2000000000, 1))|length", "a % format width would make 2,000,000,000"),
    ("(('%(a)s' * 100000) % {'a': 'y' * 10000})|length", "this % format would make"),
    ("'%2000000000s'|format('x')|length", "a % format width would make 2,000,000,000"),
    ("'{:>2000000000}'.format('x')|length", "a format width would make 2,000,000,000"),
    ("'{0:{1}}'.format('x', 2000000000)|length", "a format width would make 2,000,000,000"),
    ("('{0}' * 100000).format('y' * 10000)|length", "str.format would make"),
    ("'x'.ljust(2000000000)|length", "str.ljust() would make 2,000,000,000 characters"),
    ("'x'.center(2000000000)|length", "str.center() would make 2,000,000,000"),
    ("'x'.zfill(2000000000)|length", "str.zfill() would make 2,000,000,000"),
    ("('\\t' * 1000).expandtabs(10**7)|length", "str.expandtabs() would make"),
    ("('x' * 10000).replace('x', 'y' * 10000)|length", "str.replace() would make 100,010,000"),
    ("','.join(" + ELEVEN_MEGABYTES + ")|length", "str.join() would make"),
    ("'x'|center(2000000000)|length", "the center filter would make 2,000,000,000"),
    ("('a\\n' * 100000)|indent(1000)|length", "the indent filter would make"),
    ("('x' * 10000)|replace('x', 'y' * 10000)|length", "str.replace() would make"),
    (ELEVEN_MEGABYTES + "|join|length", "the join filter would make"),
    ("range(100000)|map('string')|join('y' * 1000)|length", "the join filter would make"),
    ("('x' * 100000)|wordwrap(1, wrapstring='y' * 1000)|length", "the wordwrap filter would"),
    ("range(10)|batch(10**9, 'x')|list|length", "the batch filter would make"),
    ("range(10)|slice(10**9)|list|length", "the slice filter would make"),
    ("(['x'] * 10)|tojson(indent=10**7)|length", "the tojson filter would make"),
    ("(10**100000)|string|length", "** would make 400,000 bits of integer"),
    ("(2**2000 * 2**2000 * 2**2000)|string|length", "* would make 6,002 bits of integer"),
    ("(1).to_bytes(2000000000, 'big')|length", "int.to_bytes() would make 2,000,000,000"),
    ("('x' * 10000000 + 'y' * 10000000)|length", "+ would make 20,000,000 characters"),
    ("(range(100000)|list + range(100000)|list)|length", "+ would make 200,000 items"),
    ("('x' * 10000000 ~ 'y' * 10000000)|length", "~ would make 20,000,000 characters"),
    ("lipsum(10**9)|length", "lipsum() makes at most 100 paragraphs"),
]


def renderer_for(
    tmp_path: Path, text: str, html: str | None = None, **limits: Any
) -> tuple[LetterRenderer, tuple[Recipient, ...]]:
    """A renderer for GOOD_YAML with these templates (and limits); its recipients."""
    path = write_campaign(tmp_path, GOOD_YAML, text, html)
    source = load_campaign(Options(path))
    return LetterRenderer(source.campaign, source.recipients, **limits), source.recipients


def refusal_of(tmp_path: Path, text: str, **limits: Any) -> CampaignError:
    renderer, recipients = renderer_for(tmp_path, text, **limits)
    with pytest.raises(CampaignError) as caught:
        renderer.render(recipients[0])
    return caught.value


@pytest.mark.parametrize(("expression", "says"), HUGE, ids=[e for e, _ in HUGE])
def test_huge_value_is_refused_at_once_naming_template_and_line(
    tmp_path: Path, expression: str, says: str
) -> None:
    started = time.monotonic()
    error = refusal_of(tmp_path, "Dear {{ recipient.name }},\n{{ " + expression + " }}\n")
    assert time.monotonic() - started < 5
    assert error.path == str(tmp_path / "templates" / "letter.txt.j2")
    assert error.line == 2
    assert error.recipient == "alice"
    assert error.message.startswith("template error: ")
    assert says in error.message


# Run from a tiny launcher: on Linux a child's peak RSS starts at its parent's RSS when it is
# spawned, and the test process itself grows to hundreds of MiB over a full run.
PEAK_RSS_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[1:]], os.environ)
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def test_the_reported_two_gigabyte_string_is_refused_in_little_memory(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "{{ ('x'*2000000000)|length }}\n")
    started = time.monotonic()
    command = ["-m", "campaign", "--file", str(path), "check"]
    launched = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PEAK_RSS_LAUNCHER, *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    exit_status, peak_rss_kib = map(int, launched.stdout.split()[-2:])
    stderr = launched.stderr
    assert exit_status == 2, stderr
    assert time.monotonic() - started < 30
    assert peak_rss_kib < 300 * 1024, peak_rss_kib  # was 1.9 GB
    assert "Traceback" not in stderr
    assert "letter.txt.j2:1" in stderr
    assert "would make 2,000,000,000 characters" in " ".join(stderr.split())


def test_huge_value_is_refused_by_the_cli_with_the_outbox_untouched(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="Dear {{ recipient.name }},\n{{ ([0] * 10**9)|length }}\n"
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.txt.j2'}:2: " in message
    assert "* would make 1,000,000,000 items; the limit is 100,000" in message
    assert "alice" in message  # named per recipient, or in "(for 2 recipients: alice, bob)"


def test_loops_inside_loops_stop_at_the_time_limit_and_later_letters_at_once(
    tmp_path: Path,
) -> None:
    text = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n"
    renderer, recipients = renderer_for(tmp_path, text, seconds=0.5)
    started = time.monotonic()
    with pytest.raises(CampaignError) as first:
        renderer.render(recipients[0])
    assert time.monotonic() - started < 3
    with pytest.raises(CampaignError) as second:
        renderer.render(recipients[1])
    assert time.monotonic() - started < 3
    assert "rendering took more than 0.5 seconds" in first.value.message
    assert (first.value.line, first.value.recipient) == (1, "alice")
    assert (second.value.message, second.value.recipient) == (first.value.message, "bob")


def test_recursive_macro_that_doubles_a_text_is_stopped(tmp_path: Path) -> None:
    text = (
        "{% macro double(s, n) %}{% if n %}{{ double(s ~ s, n - 1) }}{% else %}"
        "{{ s|length }}{% endif %}{% endmacro %}{{ double('x', 40) }}\n"
    )
    error = refusal_of(tmp_path, text)
    assert "~ would make" in error.message
    assert f"the limit is {MAX_TEXT:,}" in error.message


def test_letter_over_the_size_limit_stops_rendering_naming_the_recipient(tmp_path: Path) -> None:
    text = "{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}\n"
    error = refusal_of(tmp_path, text, max_letter_bytes=1_000_000)
    assert error.recipient == "alice"
    assert error.message == (
        "the letter is larger than 1,000,000 bytes (subject, text and HTML together)"
    )
    assert error.path == str(tmp_path / "templates" / "letter.txt.j2")


def test_letter_size_counts_utf8_bytes_of_subject_text_and_html(tmp_path: Path) -> None:
    # 400,000 characters of two bytes each: under the limit in characters, over in bytes.
    renderer, recipients = renderer_for(
        tmp_path, "{{ 'я' * 200000 }}\n", "<p>{{ 'я' * 200000 }}</p>\n", max_letter_bytes=800_000
    )
    with pytest.raises(CampaignError) as caught:
        renderer.render(recipients[1])
    assert caught.value.recipient == "bob"
    assert "larger than 800,000 bytes" in caught.value.message


def test_default_letter_limit_is_refused_by_the_cli_naming_the_recipient(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template="{% for i in range(2000) %}{{ 'x' * 10000 }}{% endfor %}\n"
    )
    message = assert_clean_refusal(refusal)
    assert f"the letter is larger than {MAX_LETTER_BYTES:,} bytes" in message
    assert "alice" in message


# What stays allowed: everyday uses of the same operators.

EVERYDAY = [
    ("'-' * 12", "------------"),
    ("3 * 'ab'", "ababab"),
    ("[1, 2] * 2", "[1, 2, 1, 2]"),
    ("2 ** 10", "1024"),
    ("'%-6s|' % recipient.id", "alice |"),
    ("'%05.1f' % 3.14159", "003.1"),
    ("'%(a)s-%(b)s' % {'a': 1, 'b': 2}", "1-2"),
    ("'{:>8}'.format(recipient.id)", "   alice"),
    ("'{0}, {0}'.format(recipient.id)", "alice, alice"),
    ("'Dear ' ~ recipient.name ~ ','", "Dear Alice Example,"),
    ("recipient.name + '!'", "Alice Example!"),
    ("recipients|map(attribute='id')|join(', ')", "alice, bob"),
    ("', '.join(recipient.emails)", "alice@example.com"),
    ("range(3)|join('-')", "0-1-2"),
    ("recipient.id|center(9)", "  alice  "),
    ("'a\\nb'|indent(2)", "a\n  b"),
    ("recipient.name|replace('Example', 'X')", "Alice X"),
    ("'%s and %s'|format('a', 'b')", "a and b"),
    ("range(5)|batch(2)|list", "[[0, 1], [2, 3], [4]]"),
    ("range(4)|slice(2)|list", "[[0, 1], [2, 3]]"),
    ("[[1], [2]]|sum(start=[])", "[1, 2]"),
    ("recipient.id.ljust(7, '.')", "alice.."),
    (
        "recipient|tojson",
        '{"emails": ["alice@example.com"], "id": "alice", "name": "Alice Example"}',
    ),
]


@pytest.mark.parametrize(("expression", "shown"), EVERYDAY, ids=[e for e, _ in EVERYDAY])
def test_everyday_expression_still_renders(tmp_path: Path, expression: str, shown: str) -> None:
    renderer, recipients = renderer_for(tmp_path, "{{ " + expression + " }}")
    assert renderer.render(recipients[0]).text == shown + "\n"


def test_loop_over_recipients_with_loop_variables_still_renders(tmp_path: Path) -> None:
    text = (
        "{% for r in recipients if r.id != recipient.id %}{{ loop.index }}/{{ loop.length }}"
        " {{ r.name }}{% else %}none{% endfor %}"
        "{% for k, v in recipient|dictsort %}|{{ k }}{% endfor %}\n"
    )
    renderer, recipients = renderer_for(tmp_path, text)
    assert renderer.render(recipients[0]).text == "1/1 Bob Example|emails|id|name\n"


def test_range_up_to_the_limit_is_allowed(tmp_path: Path) -> None:
    renderer, recipients = renderer_for(tmp_path, f"{{{{ range({MAX_ITEMS})|length }}}}")
    assert renderer.render(recipients[0]).text == f"{MAX_ITEMS}\n"


# Templates come from the templates folder only.


def link_outside(
    folder: Path, name: str, text: str = "A file outside {{ recipient.id }}\n"
) -> Path:
    outside = folder / "outside.txt"
    outside.write_text(text, encoding="utf-8")
    link = folder / "templates" / name
    if link.exists():
        link.unlink()
    link.symlink_to(outside)
    return outside


def test_letter_template_linked_to_a_file_elsewhere_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, before_run=lambda folder: link_outside(folder, "letter.txt.j2")
    )
    message = assert_clean_refusal(refusal)
    template = tmp_path / "templates" / "letter.txt.j2"
    assert f"{template}: the template 'letter.txt.j2' resolves to {tmp_path / 'outside.txt'}" in (
        message
    )
    assert "outside the templates folder" in message


def test_html_template_linked_to_a_file_elsewhere_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path, None, before_run=lambda folder: link_outside(folder, "letter.html.j2")
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.html.j2'}: the template 'letter.html.j2'" in message


@pytest.mark.parametrize(
    "tag", ["{% include 'part.j2' %}", "{% extends 'part.j2' %}", "{% import 'part.j2' as p %}"]
)
def test_include_extends_or_import_through_a_link_to_elsewhere_is_refused(
    tmp_path: Path, tag: str
) -> None:
    def setup(folder: Path) -> None:
        link_outside(folder, "part.j2")

    refusal = refuse_over_existing_outbox(
        tmp_path, None, text_template=f"Dear {{{{ recipient.name }}}},\n{tag}\n", before_run=setup
    )
    message = assert_clean_refusal(refusal)
    assert f"{tmp_path / 'templates' / 'letter.txt.j2'}:2: " in message
    assert "resolves to" in message and "outside the templates folder" in message


def test_include_of_a_parent_path_is_refused(tmp_path: Path) -> None:
    refusal = refuse_over_existing_outbox(
        tmp_path,
        None,
        text_template="{% include '../outside.txt' %}\n",
        before_run=lambda folder: (folder / "outside.txt").write_text("secret\n"),
    )
    message = assert_clean_refusal(refusal)
    assert "no template '../outside.txt' in the templates folder" in message
    assert "secret" not in message


def test_link_inside_the_folder_and_a_linked_folder_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "shared-templates"
    real.mkdir()
    (real / "body.j2").write_text("Body for {{ recipient.id }}\n", encoding="utf-8")
    (real / "letter.txt.j2").symlink_to(real / "body.j2")
    path = tmp_path / "recipients.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    (tmp_path / "templates").symlink_to(real)
    result = run_cli("--file", path, "drafts")
    assert result.status == 0, result.stderr
    assert "Body for alice" in parse_eml(tmp_path / "outbox" / "01-alice.eml").get_content()


def test_error_in_an_included_template_names_that_file_and_line(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "Dear {{ recipient.name }},\n{% include 'p.j2' %}\n")
    (tmp_path / "templates" / "p.j2").write_text("ok\n\n{{ 'x' * 10**9 }}\n", encoding="utf-8")
    source = load_campaign(Options(path))
    renderer = LetterRenderer(source.campaign, source.recipients)
    with pytest.raises(CampaignError) as caught:
        renderer.render(source.recipients[0])
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "templates" / "p.j2"), 3)


def test_good_text_still_renders_unchanged(tmp_path: Path) -> None:
    renderer, recipients = renderer_for(tmp_path, GOOD_TEXT)
    assert renderer.render(recipients[1]).text == "Dear Bob Example,\n\nThis is the letter.\n"
