"""`campaign report` (issue 16) read back as HTML with the standard library's parser.

The page is made from a log written by real sends to aiosmtpd servers on 127.0.0.1 with
scripted faults (tests/report_helpers.py): sent, partial, deferred, failed, unknown, resolved,
pending and test-send recipients, and server replies carrying markup and control characters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from campaign_factory import write_campaign
from hypothesis import given, settings
from hypothesis import strategies as st
from log_helpers import campaign as run_campaign
from report_helpers import (
    EXPECTED_STATUS,
    FAILED_REPLY,
    GREYLIST_REPLY,
    HOSTILE_NAME,
    HOSTILE_ORG,
    RECIPIENTS,
    REFUSED_REPLY,
    RESOLVE_REASON,
    SENT_REPLY,
    TEST_TO,
    Mixed,
    Node,
    answers_by_minute,
    json_statuses,
    parse_html,
    report_of,
    send_mixed,
    written_out,
)

from campaign.errors import CampaignError
from campaign.loading import Options, load_campaign
from campaign.report import (
    LIST_LIMIT,
    ArchiveCheck,
    _Minutes,
    bucket_width,
    build_report,
    queue_id,
    report_data,
    scan_log,
)
from campaign.report_page import _css_string, esc, visible, write_report
from campaign.review import build_review, load_roster
from campaign.sendlog import replay

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.genlog import genlog  # noqa: E402

MADE_AT = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


@dataclass(frozen=True)
class Page:
    mixed: Mixed
    path: Path
    text: str
    doc: Node

    def block(self, rid: str) -> Node:
        return self.doc.find("article", id=f"r-{rid}")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    mixed = send_mixed(tmp_path_factory.mktemp("report") / "campaign")
    out = mixed.outbox / "report.html"
    report_of(mixed.file, out, MADE_AT)
    text = out.read_text(encoding="utf-8")
    return Page(mixed, out, text, parse_html(text))


def body_text(doc: Node) -> str:
    """What the page says, outside <script> and <style>."""
    parts: list[str] = []

    def walk(node: Node) -> None:
        for child in node.children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag not in ("script", "style"):
                walk(child)

    walk(doc)
    return "".join(parts)


def dd_after(block: Node, term: str) -> Node:
    """The <dd> that follows the <dt> whose text is `term`."""
    (proof,) = block.find_all("dl", class_="proof")
    nodes = [c for c in proof.children if isinstance(c, Node)]
    for position, node in enumerate(nodes):
        if node.tag == "dt" and node.text() == term:
            return nodes[position + 1]
    raise AssertionError(f"no {term!r} in {block.attrs.get('id')}")


# ---------------------------------------------------------------------------- escaping


def test_hostile_names_and_replies_are_shown_as_text(page: Page) -> None:
    text = body_text(page.doc)
    for hostile in (HOSTILE_NAME, SENT_REPLY, FAILED_REPLY, RESOLVE_REASON):
        assert hostile in text, hostile
    for hostile in (REFUSED_REPLY, GREYLIST_REPLY, HOSTILE_ORG):
        assert written_out(hostile) in text, hostile
    tags = {node.tag for node in page.doc.walk()}
    assert not tags & {"img", "iframe", "object", "embed", "link", "base", "b", "i", "form"}
    assert len(page.doc.find_all("script")) == 1
    assert len(page.doc.find_all("a")) == len(RECIPIENTS)  # the table's links to the blocks


def test_no_element_carries_an_event_handler_or_a_style_attribute(page: Page) -> None:
    for node in page.doc.walk():
        assert not [name for name in node.attrs if name.startswith("on")], node
        assert "style" not in node.attrs, node  # the policy allows no inline style attribute


def test_control_characters_never_reach_the_file(page: Page) -> None:
    raw = page.path.read_bytes()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", raw)
    assert "\\x1b[31mno such user\\x1b[0m" in page.text
    assert "\\x07" in page.text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("two\nlines\tand a tab", "two\nlines\tand a tab"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("bell\x07 nul\x00 del\x7f c1\x9b", "bell\\x07 nul\\x00 del\\x7f c1\\x9b"),
        ("carriage\rreturn", "carriage\\x0dreturn"),
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("para\u2029graph", "para\\u2029graph"),
        ("Prosecutor’s é ü 中", "Prosecutor’s é ü 中"),
    ],
)
def test_visible_writes_out_control_characters(text: str, shown: str) -> None:
    assert visible(text) == shown


# ---------------------------------------------------------------------------- nothing loads


URL_ATTRIBUTES = ("src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data")


def test_no_url_points_outside_the_page(page: Page) -> None:
    for node in page.doc.walk():
        for name in URL_ATTRIBUTES:
            if name in node.attrs:
                assert node.attrs[name].startswith("#"), (node.tag, name, node.attrs[name])
    (style,) = page.doc.find_all("style")
    css = style.text()
    assert "@import" not in css
    assert re.findall(r"url\(\s*([^)]*)\)", css) == ["#pat-failed", "#pat-unknown", "#pat-bounced"]
    assert "http://evil.example/" in body_text(page.doc)  # a link in a reply stays text


def test_the_policy_allows_only_this_style_and_this_script(page: Page) -> None:
    (meta,) = [m for m in page.doc.find_all("meta") if "http-equiv" in m.attrs]
    assert meta.attrs["http-equiv"] == "Content-Security-Policy"
    rules = dict(rule.strip().split(" ", 1) for rule in meta.attrs["content"].split(";"))
    assert rules["default-src"] == "'none'"
    assert rules["base-uri"] == "'none'" and rules["form-action"] == "'none'"

    def digest(text: str) -> str:
        value = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        return f"'sha256-{value}'"

    assert rules["style-src"] == digest(page.doc.find("style").text())
    assert rules["script-src"] == digest(page.doc.find("script").text())
    head = page.text[: page.text.index("<style>")]
    assert "Content-Security-Policy" in head  # before anything it governs


# ---------------------------------------------------------------------------- the numbers


def test_counts_equal_campaign_log_json(page: Page) -> None:
    shown = {
        li.attrs["data-status"]: int(li.attrs["data-count"])
        for li in page.doc.find("section", id="glance").find_all("li", class_="count")
    }
    expected = json_statuses(page.mixed.file)
    assert {s: n for s, n in shown.items() if n} == dict(expected)
    assert dict(expected) == dict(Counter(EXPECTED_STATUS.values()))
    for li in page.doc.find("section", id="glance").find_all("li", class_="count"):
        assert " ".join(li.text().split()).endswith(
            f"{li.attrs['data-count']} {li.attrs['data-status']}"
        )


def test_every_recipient_has_a_block_with_what_log_json_says(page: Page) -> None:
    run_rows = {
        row["recipient"]: row for row in map(json.loads, _log_json(page.mixed.file).splitlines())
    }
    blocks = page.doc.find_all("article", class_="recipient")
    assert [b.attrs["id"] for b in blocks] == [f"r-{rid}" for rid, *_ in RECIPIENTS]
    for block in blocks:
        row = run_rows[block.attrs["id"][2:]]
        assert block.attrs["data-status"] == row["status"]
        assert dd_after(block, "attempts").text() == str(row["attempts"])
        cells = [
            [td.text() for td in tr.find_all("td")]
            for tr in block.find("table", class_="addresses").find("tbody").find_all("tr")
        ]
        assert [c[0] for c in cells] == [a["address"] for a in row["addresses"]]
        assert [c[1].split()[-1] for c in cells] == [a["outcome"] for a in row["addresses"]]
        for cell, address in zip(cells, row["addresses"], strict=True):
            reply = f"{address['code']} {address['reply']}" if address["code"] else address["reply"]
            assert cell[2] == (written_out(reply) or "—")


def _log_json(file: Path) -> str:
    run = run_campaign(file, "log", "--json")
    assert run.status == 0, run.stderr
    return run.stdout


def test_the_sha256_shown_is_that_of_the_archived_file_and_of_what_the_server_took(
    page: Page,
) -> None:
    taken = {m.rcpt_tos[0]: hashlib.sha256(m.data).hexdigest() for m in page.mixed.received}
    checked = 0
    for block in page.doc.find_all("article", class_="recipient"):
        archive = dd_after(block, "archived as").text()
        if archive == "—" or "SHA-256 of the bytes accepted" not in block.text():
            continue  # not archived, or sent with its answer lost (see the next test)
        shown = dd_after(block, "SHA-256 of the bytes accepted").find("code").text()
        on_disk = hashlib.sha256((page.mixed.outbox / archive).read_bytes()).hexdigest()
        assert shown == on_disk
        assert (
            "matches the archived file" in dd_after(block, "SHA-256 of the bytes accepted").text()
        )
        rows = block.find("table", class_="addresses").find("tbody").find_all("tr")
        accepted = [r.find_all("td")[0].text() for r in rows if "accepted" in r.text()]
        assert [shown] == [taken[address] for address in accepted]
        checked += 1
    assert checked == 2  # sent-one, and partial-one's accepted address


def test_a_resolved_or_unknown_letter_shows_the_bytes_its_attempt_sent(page: Page) -> None:
    taken = {m.rcpt_tos[0]: hashlib.sha256(m.data).hexdigest() for m in page.mixed.received}
    for rid, address in (
        ("resolved-one", "frank@example.org"),
        ("unknown-one", "erin@example.net"),
    ):
        shown = dd_after(page.block(rid), "SHA-256 of the bytes sent, answer lost").find("code")
        assert shown.text() == taken[address]
    assert RESOLVE_REASON in dd_after(page.block("resolved-one"), "resolved by hand").text()


def test_a_letter_settled_by_hand_claims_no_acceptance_time_nor_queue_id(page: Page) -> None:
    block = page.block("resolved-one")  # its reason quotes "queued as 4XyZ"
    assert "settled by hand" in dd_after(block, "accepted at").text()
    assert "4XyZ" not in [code.text() for code in block.find_all("code")]
    rows = block.find("table", class_="addresses").find("tbody").find_all("tr")
    assert [row.find_all("td")[3].text() for row in rows] == ["—"]


def test_queue_ids_are_taken_from_the_servers_replies(page: Page) -> None:
    assert dd_after(page.block("sent-one"), "queue id").text() == "QR0001"
    rows = page.block("partial-one").find("table", class_="addresses").find("tbody").find_all("tr")
    assert [row.find_all("td")[3].text() for row in rows] == ["QR0002", "—"]


def test_test_sends_are_listed_apart_and_never_counted_as_sent(page: Page) -> None:
    section = page.doc.find("section", id="tests")
    rows = section.find("tbody").find_all("tr")
    assert [r.find_all("td")[1].text() for r in rows] == ["sent-one", "partial-one"]
    assert {r.find_all("td")[2].text() for r in rows} == {TEST_TO}
    assert all(r.find_all("td")[5].text().startswith("<test.") for r in rows)
    assert "not counted as sent" in section.text()
    glance = page.doc.find("section", id="glance")
    assert glance.find("li", data_status="sent").attrs["data-count"] == "2"
    assert "2 test send(s)" in glance.text()


def test_the_footer_names_the_log_its_sha256_and_when_the_report_was_made(page: Page) -> None:
    footer = " ".join(page.doc.find("footer").text().split())
    log_sha = hashlib.sha256(page.mixed.log.read_bytes()).hexdigest()
    assert log_sha in footer
    assert str(page.mixed.log) in footer
    assert "2030-05-06 07:08:09.000 UTC" in footer
    assert log_sha in page.doc.find("style").text()  # printed at the foot of every page


def test_next_steps_are_those_of_campaign_log(page: Page) -> None:
    roster_id, entries = load_roster(Options(page.mixed.file))
    review = build_review(roster_id, entries, page.mixed.log)
    shown = [
        " ".join(li.text().split()) for li in page.doc.find("ul", class_="next").find_all("li")
    ]
    assert shown == [step.replace("`", "") for step in review.next_steps()]


# ---------------------------------------------------------------------------- the chart


def test_chart_draws_every_answer_in_the_log_once(page: Page) -> None:
    answers = answers_by_minute(page.mixed.log)
    marks = page.doc.find("svg", class_="chart").find_all("rect", class_="mark")
    drawn: Counter[str] = Counter()
    for mark in marks:
        drawn[mark.attrs["data-series"]] += int(mark.attrs["data-count"])
    expected: Counter[str] = Counter()
    for (_, series), count in answers.items():
        expected[series] += count
    assert drawn == expected
    assert len(marks) == len(answers)  # one bar per (minute, outcome) here: every bucket a minute
    assert expected == {"sent": 2, "deferred": 2, "failed": 2, "unknown": 2}


def test_scan_replays_the_log_as_campaign_log_does(page: Page) -> None:
    scan = scan_log(page.mixed.log)
    plain = replay(page.mixed.log)
    assert {r: s.status() for r, s in scan.history.recipients.items()} == {
        r: s.status() for r, s in plain.recipients.items()
    }
    assert scan.sha256 == hashlib.sha256(page.mixed.log.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- the archive checked


def test_an_archived_file_changed_or_removed_is_flagged(page: Page, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(page.mixed.folder, folder)
    [sent_one] = (folder / "outbox" / "sent").glob("01-sent-one.*.eml")
    [partial_one] = (folder / "outbox" / "sent").glob("02-partial-one.*.eml")
    sent_one.write_bytes(b"tampered\r\n")
    partial_one.unlink()
    data = report_of(folder / "recipients.yaml", tmp_path / "r.html", MADE_AT)
    checks = {r.id: (r.archive_check, r.archive_sha256) for r in data.recipients if r.archive}
    assert checks["sent-one"] == (
        ArchiveCheck.DIFFERS,
        hashlib.sha256(b"tampered\r\n").hexdigest(),
    )
    assert checks["partial-one"] == (ArchiveCheck.MISSING, None)
    others = {rid: check for rid, (check, _) in checks.items() if "one" in rid}
    assert {r for r, c in others.items() if c != ArchiveCheck.MATCHES} == {
        "sent-one",
        "partial-one",
    }
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "DIFFERS from the archived file" in text and "archived file not found" in text
    assert data.unproven == ("sent-one", "partial-one")
    assert data.next_steps[0].startswith("2 letter(s) in ")
    assert (
        "do not match what the log recorded (changed or missing): sent-one, partial-one"
        in (data.next_steps[0])
    )
    glance = parse_html(text).find("section", id="glance").text()
    assert "do not match what the log recorded" in " ".join(glance.split())


def test_report_warns_on_the_terminal_when_the_archive_no_longer_proves_a_letter(
    page: Page, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(page.mixed.folder, folder)
    [sent_one] = (folder / "outbox" / "sent").glob("01-sent-one.*.eml")
    sent_one.unlink()
    run = run_campaign(folder / "recipients.yaml", "report", "--out", tmp_path / "r.html")
    assert run.status == 0
    said = " ".join(run.stderr.split())
    assert "warning: 1 letter(s) in" in said and "(changed or missing): sent-one;" in said


def test_a_recipient_taken_out_of_the_file_keeps_its_proof_on_the_page(
    page: Page, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(page.mixed.folder, folder)
    file = folder / "recipients.yaml"
    text = file.read_text(encoding="utf-8")
    start = text.index('  - id: "sent-one"')
    end = text.index("  - id: ", start + 1)
    file.write_text(text[:start] + text[end:], encoding="utf-8")
    out = tmp_path / "r.html"
    data = report_of(file, out, MADE_AT)
    assert data.total == len(RECIPIENTS) - 1
    assert "sent-one" not in {r.id for r in data.recipients}
    [gone] = data.gone
    assert data.gone_total == 1
    before = dd_after(page.block("sent-one"), "SHA-256 of the bytes accepted").find("code")
    assert (gone.id, gone.status, gone.archive_check) == ("sent-one", "sent", ArchiveCheck.MATCHES)
    assert gone.sha256 == before.text()
    doc = parse_html(out.read_text(encoding="utf-8"))
    section = doc.find("section", id="gone")
    block = section.find("article", id="r-sent-one")
    assert (
        dd_after(block, "Message-ID").text()
        == dd_after(page.block("sent-one"), "Message-ID").text()
    )
    assert "campaign file no longer has" in section.text()


# ---------------------------------------------------------------------------- bad input


def test_no_log_is_one_clear_error(tmp_path: Path) -> None:
    file = write_campaign(
        tmp_path / "c",
        'campaign:\n  id: "x"\n  subject: "s"\n'
        '  from: "a@example.org"\nrecipients:\n  - id: "a"\n    name: "A"\n'
        '    emails: ["a@example.com"]\n',
    )
    with pytest.raises(CampaignError, match="no send log"):
        build_report(Options(file), tmp_path / "c" / "outbox" / "log.jsonl", clock=lambda: MADE_AT)


def test_a_log_of_another_campaign_is_refused(page: Page, tmp_path: Path) -> None:
    other = write_campaign(
        tmp_path / "other",
        'campaign:\n  id: "other"\n  subject: "s"\n  from: "a@example.org"\nrecipients:\n'
        '  - id: "a"\n    name: "A"\n    emails: ["a@example.com"]\n',
    )
    with pytest.raises(CampaignError, match="not 'other'"):
        build_report(Options(other), page.mixed.log, clock=lambda: MADE_AT)


def test_the_page_is_replaced_whole(page: Page, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "report.html"
    out.parent.mkdir()
    out.write_text("old", encoding="utf-8")
    report_of(page.mixed.file, out, MADE_AT)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("2.0.0 Ok: queued as 4Rf3Xk1BzYz9", "4Rf3Xk1BzYz9"),  # Postfix
        ("OK id=1qABCd-0001Ab-Xy", "1qABCd-0001Ab-Xy"),  # Exim
        ("2.0.0 3AB4C5D6E7F8 Message accepted for delivery", "3AB4C5D6E7F8"),  # Sendmail
        (
            "2.0.0 OK  1700000000 d1-20020a05600c0001si123wmb.12 - gsmtp",
            "d1-20020a05600c0001si123wmb.12",
        ),
        (
            "2.6.0 <x@example.org> [InternalId=12345678901234, Hostname=AM0PR.outlook.com]"
            " 9000 bytes in 0.1, 88 KB/sec Queued mail for delivery",
            "12345678901234",
        ),
        (
            "Ok 0100018c2f5a3b4c-5d6e7f80-1234-5678-9abc-def012345678-000000",
            "0100018c2f5a3b4c-5d6e7f80-1234-5678-9abc-def012345678-000000",
        ),
        ("2.0.0 OK", None),
        ("Queued mail for delivery", None),
        ("", None),
    ],
)
def test_queue_id_follows_the_usual_servers(reply: str, expected: str | None) -> None:
    assert queue_id(reply) == expected


@pytest.mark.parametrize(
    ("span", "width"),
    [
        (timedelta(0), timedelta(minutes=1)),
        (timedelta(minutes=59), timedelta(minutes=1)),
        (timedelta(minutes=60), timedelta(minutes=2)),
        (timedelta(hours=10), timedelta(minutes=15)),
        (timedelta(days=2), timedelta(hours=1)),
        (timedelta(days=30), timedelta(days=1)),
        (timedelta(days=3000), timedelta(days=60)),
    ],
)
def test_bucket_width_draws_the_span_in_at_most_sixty_bars(
    span: timedelta, width: timedelta
) -> None:
    assert bucket_width(span) == width
    assert span // width < 60


def test_minute_counts_coarsen_to_hours_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import campaign.report as report

    monkeypatch.setattr(report, "MAX_TIME_KEYS", 100)
    minutes = _Minutes()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(600):  # ten hours, one answer a minute
        minutes.add((start + timedelta(minutes=n)).isoformat(timespec="milliseconds"), 0)
    timeline = minutes.timeline()
    assert minutes.key_length == 13 and len(minutes.counts) == 10
    assert timeline.width == timedelta(hours=1)
    assert [b[0] for b in timeline.buckets] == [60] * 10
    assert timeline.start == start


def test_answers_with_no_readable_time_are_counted_apart() -> None:
    minutes = _Minutes()
    minutes.add("2026-01-01T00:00:00.000+00:00", 0)
    minutes.add(None, 0)
    minutes.add("not a time at all", 2)
    timeline = minutes.timeline()
    assert timeline.undated == 2 and timeline.totals()[0] == 1


# ---------------------------------------------------------------------------- a long campaign


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("long")
    generated = generate(3000, folder / "c", seed=11)
    log = folder / "c" / "outbox" / "send-log.jsonl"
    log.parent.mkdir()
    genlog(generated.yaml_path, log, 12_000, seed=3)
    return generated.yaml_path, log


def test_a_long_campaign_lists_those_needing_attention_and_counts_the_rest(
    long_log: tuple[Path, Path], tmp_path: Path
) -> None:
    file, log = long_log
    roster_id, entries = load_roster(Options(file))
    scan = scan_log(log)
    review = build_review(roster_id, entries, log, scan.history)
    source = load_campaign(Options(file))
    data = report_data(review, log, source.campaign, lambda: MADE_AT, scan=scan, list_limit=200)
    counts = {str(status): n for status, n in review.counts().items()}
    assert dict((s, n) for s, n in data.counts if n) == counts
    assert len(data.recipients) == 200
    assert all(r.status != "sent" or r.resolved for r in data.recipients)
    listed = Counter(r.status for r in data.recipients)
    collapsed: dict[str, int] = dict(data.collapsed)
    assert {s: listed.get(s, 0) + collapsed.get(s, 0) for s in counts} == counts
    assert collapsed["sent"] == counts["sent"]
    for urgent in ("unknown", "failed", "partial"):  # listed before the deferred and pending
        assert counts[urgent] and listed[urgent] == counts[urgent]
    positions = [int(r.id[1:]) for r in data.recipients]
    assert positions == sorted(positions)  # shown in file order
    out = tmp_path / "long.html"
    write_report(data, out)
    doc = parse_html(out.read_text(encoding="utf-8"))
    assert len(doc.find_all("article", class_="recipient")) == 200
    assert "campaign log --status sent --csv" in body_text(doc)


def test_a_campaign_within_the_limit_lists_everyone(long_log: tuple[Path, Path]) -> None:
    file, log = long_log
    roster_id, entries = load_roster(Options(file))
    review = build_review(roster_id, entries, log)
    source = load_campaign(Options(file))
    data = report_data(review, log, source.campaign, lambda: MADE_AT)
    assert LIST_LIMIT < 3000 and len(data.recipients) == LIST_LIMIT
    data_all = report_data(review, log, source.campaign, lambda: MADE_AT, list_limit=3000)
    assert [r.id for r in data_all.recipients] == [e.id for e in entries]
    assert data_all.collapsed == ()


# ---------------------------------------------------------------------------- escaping, any text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_reads_back_as_its_visible_form(text: str) -> None:
    doc = parse_html(f'<p title="{esc(text)}">{esc(text)}</p>')
    (p,) = doc.find_all("p")
    assert p.text() == visible(text) and p.attrs["title"] == visible(text)
    assert not set("<>\"'") & set(esc(text))
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", esc(text))
    esc(text).encode("utf-8")  # lone surrogates are written out, so the page always encodes


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_in_the_print_footer_stays_one_css_string(text: str) -> None:
    literal = _css_string(text)
    inner = literal[1:-1]
    assert literal[0] == literal[-1] == '"'
    assert '"' not in inner and "\n" not in inner and "}" not in inner
    assert all(re.match(r"[0-9a-f]{1,6} ", part) for part in inner.split("\\")[1:])


def test_a_long_file_read_in_a_fork_gives_the_same_page(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import campaign.report as report

    monkeypatch.setattr(report, "PARALLEL_READ_BYTES", 0)  # every file counts as long
    forked = report_of(page.mixed.file, tmp_path / "forked.html", MADE_AT)
    assert forked.log_sha256 == hashlib.sha256(page.mixed.log.read_bytes()).hexdigest()
    assert (tmp_path / "forked.html").read_text(encoding="utf-8") == page.text
