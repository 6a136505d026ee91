"""`campaign report` opened in headless Chromium: what a person would see, print and not see.

Debian's `chromium` (`.ci/install-tools` installs it) is driven over the DevTools protocol
on a pipe (tests/browser.py). A missing chromium fails these tests; only a developer's own
`CAMPAIGN_SKIP_BROWSER=1`, outside CI, skips them.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import Chromium, Page, chromium_path, pdf_pages, png_colours
from report_helpers import (
    EXPECTED_STATUS,
    RECIPIENTS,
    REFUSED_REPLY,
    Mixed,
    answers_by_minute,
    json_statuses,
    report_of,
    send_mixed,
    written_out,
)

from campaign.loading import Options, load_campaign
from campaign.report import report_data, scan_log
from campaign.report_page import write_report
from campaign.review import build_review, load_roster

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.genlog import genlog  # noqa: E402

MADE_AT = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
TITLE = "Delivery report: report-test"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CAMPAIGN_SKIP_BROWSER") == "1" and not os.environ.get("CI"):
            pytest.skip("CAMPAIGN_SKIP_BROWSER=1: browser tests skipped on this machine")
        pytest.fail(
            "chromium is not installed: run .ci/install-tools (as root); these tests do not"
            " skip in CI",
            pytrace=False,
        )
    with Chromium(tmp_path_factory.mktemp("chromium"), executable) as browser:
        yield browser


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    mixed = send_mixed(tmp_path_factory.mktemp("browser") / "campaign")
    report_of(mixed.file, mixed.outbox / "report.html", MADE_AT)
    return mixed


@pytest.fixture
def page(chromium: Chromium, mixed: Mixed) -> Iterator[Page]:
    opened = chromium.open((mixed.outbox / "report.html").as_uri())
    yield opened
    opened.close()


def visible_rows(page: Page) -> list[str]:
    return list(
        page.evaluate(
            "Array.from(document.querySelectorAll('#table tbody tr'))"
            ".filter(r => !r.hidden).map(r => r.dataset.id)"
        )
    )


# ---------------------------------------------------------------------------- nothing else


def test_the_page_requests_nothing_but_itself_and_logs_no_error(page: Page, mixed: Mixed) -> None:
    assert page.requests == [(mixed.outbox / "report.html").as_uri()]
    assert page.problems == []


def test_hostile_markup_in_names_and_replies_does_not_run(page: Page) -> None:
    assert page.evaluate("document.title") == TITLE
    assert page.evaluate("document.images.length") == 0
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('b, i, a[href^=\"http\"]').length") == 0


def test_the_harness_sees_requests_errors_and_dialogs(chromium: Chromium, tmp_path: Path) -> None:
    """The two tests above can fail: a page that loads, logs and alerts is caught."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: the request is refused on loopback
    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!DOCTYPE html><title>bad</title><img src="http://127.0.0.1:{port}/pixel.png">'
        '<script>console.error("boom"); alert("hello")</script>',
        encoding="utf-8",
    )
    opened = chromium.open(bad.as_uri())
    try:
        assert f"http://127.0.0.1:{port}/pixel.png" in opened.requests
        problems = "\n".join(opened.problems)
        assert "console.error: boom" in problems and "dialog: hello" in problems
    finally:
        chromium.call("Page.handleJavaScriptDialog", {"accept": True}, session=opened.session)
        opened.close()


def test_the_policy_blocks_markup_slipped_into_the_page(
    chromium: Chromium, mixed: Mixed, tmp_path: Path
) -> None:
    """Were escaping ever to miss, the page's own policy stops what it let through."""
    text = (mixed.outbox / "report.html").read_text(encoding="utf-8")
    injected = tmp_path / "injected.html"
    injected.write_text(
        text.replace(
            "<body>",
            '<body><img src="http://127.0.0.1:9/x.png"><script>document.title="ran"</script>'
            '<p style="color:red">styled</p>',
            1,
        ),
        encoding="utf-8",
    )
    opened = chromium.open(injected.as_uri())
    try:
        assert opened.evaluate("document.title") == TITLE
        assert opened.requests == [injected.as_uri(), "http://127.0.0.1:9/x.png"]
        assert opened.blocked == {"http://127.0.0.1:9/x.png": "csp"}  # stopped before it left
        assert "Content Security Policy" in "\n".join(opened.problems)
        assert opened.evaluate("getComputedStyle(document.querySelector('p')).color") != (
            "rgb(255, 0, 0)"
        )
    finally:
        opened.close()


# ---------------------------------------------------------------------------- what it shows


def test_the_counts_shown_are_those_of_campaign_log_json(page: Page, mixed: Mixed) -> None:
    glance = page.evaluate("document.getElementById('glance').innerText")
    shown = {status: int(n) for n, status in re.findall(r"(\d+) ([a-z]+)\n", glance)}
    expected = json_statuses(mixed.file)
    assert {s: n for s, n in shown.items() if n} == dict(expected)
    assert dict(expected) == dict(Counter(EXPECTED_STATUS.values()))


def test_rows_show_status_name_attempts_and_reply_as_text(page: Page) -> None:
    rows = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#table tbody tr'))"
        ".map(r => [r.dataset.id, Array.from(r.cells).map(c => c.innerText)]))"
    )
    assert list(rows) == [rid for rid, *_ in RECIPIENTS]
    for rid, status in EXPECTED_STATUS.items():
        assert rows[rid][0].split()[-1] == status
    assert rows["partial-one"][2] == "Bob Partial"
    assert rows["partial-one"][3] == "1"
    assert rows["partial-one"][4] == "550 " + written_out(REFUSED_REPLY)
    assert rows["deferred-one"][3] == "2"
    assert rows["pending-one"][4] == "—"


def test_a_block_shows_the_proof_for_one_recipient(page: Page, mixed: Mixed) -> None:
    text = page.evaluate("document.getElementById('r-sent-one').innerText")
    [path] = (mixed.outbox / "sent").glob("01-sent-one.*.eml")
    assert hashlib.sha256(path.read_bytes()).hexdigest() in text
    assert "matches the archived file" in text
    assert "<report-test.sent-one@mep-letter.eu>" in text
    assert "QR0001" in text
    assert 'Alice <script>document.title="pwned-name"</script> & "Co"' in text


def test_the_chart_has_one_mark_per_minute_and_outcome(page: Page, mixed: Mixed) -> None:
    marks = page.evaluate(
        "Array.from(document.querySelectorAll('svg.chart rect.mark'))"
        ".map(m => [m.dataset.series, Number(m.dataset.count), m.getBBox().height])"
    )
    answers = answers_by_minute(mixed.log)
    assert len(marks) == len(answers)
    drawn: Counter[str] = Counter()
    for series, count, height in marks:
        drawn[series] += count
        assert height > 0
    expected: Counter[str] = Counter()
    for (_, series), count in answers.items():
        expected[series] += count
    assert drawn == expected
    legend = page.evaluate("document.querySelector('ul.legend').innerText")
    assert all(f"{series}: {n}" in legend for series, n in expected.items())


def test_the_screen_shows_a_page_not_a_blank(page: Page, tmp_path: Path) -> None:
    picture = page.screenshot()
    (tmp_path / "report.png").write_bytes(picture)
    assert len(png_colours(picture)) > 100


def test_printing_gives_the_overview_a_page_per_recipient_and_the_record(page: Page) -> None:
    document = page.pdf()
    # overview (counts, next steps, chart); one recipient per page; test sends and the footer
    assert pdf_pages(document) == 1 + len(RECIPIENTS) + 1


def test_choosing_a_status_shows_only_those_recipients(page: Page) -> None:
    assert len(visible_rows(page)) == len(RECIPIENTS)
    page.evaluate(
        "(() => { const s = document.getElementById('f-status'); s.value = 'failed';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    assert visible_rows(page) == ["failed-one"]
    blocks = page.evaluate(
        "Array.from(document.querySelectorAll('article.recipient')).filter(b => !b.hidden).length"
    )
    assert blocks == 1
    assert page.evaluate("document.getElementById('f-shown').innerText") == "1 of 7 listed"


def test_typing_finds_a_recipient_by_its_reply(page: Page) -> None:
    page.evaluate(
        "(() => { const t = document.getElementById('f-text'); t.value = 'greylisted';"
        " t.dispatchEvent(new Event('input')); })()"
    )
    assert visible_rows(page) == ["deferred-one"]


def test_sorting_by_attempts_puts_the_most_tried_first_on_a_second_click(page: Page) -> None:
    button = "document.querySelector('th[data-key=attempts] button')"
    page.evaluate(f"{button}.click()")
    first = visible_rows(page)
    assert first[0] == "pending-one"  # ascending: never tried first, file order among equals
    page.evaluate(f"{button}.click()")
    assert visible_rows(page)[0] == "deferred-one"
    assert page.problems == []


# ---------------------------------------------------------------------------- a long campaign


def test_a_long_campaign_opens_with_its_counts_and_a_capped_list(
    chromium: Chromium, tmp_path: Path
) -> None:
    generated = generate(3000, tmp_path / "c", seed=11)
    log = tmp_path / "c" / "outbox" / "send-log.jsonl"
    log.parent.mkdir()
    genlog(generated.yaml_path, log, 12_000, seed=3)
    source = load_campaign(Options(generated.yaml_path))
    roster_id, entries = load_roster(Options(generated.yaml_path))
    scan = scan_log(log)
    review = build_review(roster_id, entries, log, scan.history)
    data = report_data(review, log, source.campaign, lambda: MADE_AT, scan=scan, list_limit=300)
    out = tmp_path / "long.html"
    write_report(data, out)
    opened = chromium.open(out.as_uri())
    try:
        assert opened.problems == [] and opened.requests == [out.as_uri()]
        glance = opened.evaluate("document.getElementById('glance').innerText")
        shown = {status: int(n) for n, status in re.findall(r"(\d+) ([a-z]+)\n", glance)}
        assert {s: n for s, n in shown.items() if n} == dict(review.counts())
        assert opened.evaluate("document.querySelectorAll('article.recipient').length") == 300
        assert "campaign log --status sent --csv" in opened.evaluate("document.body.innerText")
    finally:
        opened.close()
