"""`campaign log` (issue 5) on logs written by real sends to a real SMTP server on 127.0.0.1.

The "mixed" log is built once per module by two real runs of `campaign send`:

1. `--only president general-prosecutor ombudsman --retries 1` to a server that refuses one of
   the ombudsman's two addresses for good (550) and greylists one of the general prosecutor's
   forever (451), answering every message taken with `queued as QA000n`;
2. `--only ministry-of-justice` to a server that hangs up after the message data (unknown).

The two other recipients are never attempted (pending). Tests that change the log work on a copy.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from campaign_factory import BUNDLED_IDS, write_campaign
from log_helpers import (
    campaign,
    counts_line,
    csv_rows,
    json_rows,
    log_records,
    queue_ids,
    queued_replies,
    received_by,
    send,
    sha256,
    squash,
    table_rows,
)
from send_helpers import copy_bundled, run_cli
from smtp_server import DROP, FaultScript, Received, SmtpServer

from campaign import review
from campaign.sendlog import (
    AddressReply,
    Outcome,
    SendLog,
    Status,
    attempt_record,
    replay,
    result_record,
    run_end_record,
    run_start_record,
)

CAMPAIGN_ID = "kz-open-letter-2017-10"
GREYLISTED = "4.7.1 <procuror@nursat.kz>: greylisted, try again later"
NO_MAILBOX = "5.1.1 <mbudsman@ombudsman.kz>: mailbox unavailable"
LOST = "no answer after the message data"

MIXED_STATUS = {
    "president": "sent",
    "general-prosecutor": "deferred",
    "national-security-committee": "pending",
    "ministry-of-internal-affairs": "pending",
    "ministry-of-justice": "unknown",
    "ombudsman": "partial",
}
MIXED_ATTEMPTS = {
    "president": 1,
    "general-prosecutor": 2,
    "national-security-committee": 0,
    "ministry-of-internal-affairs": 0,
    "ministry-of-justice": 1,
    "ombudsman": 1,
}
ALL_COUNTS = dict.fromkeys(("sent", "partial", "deferred", "failed", "unknown", "pending"), 0)
JSON_KEYS = {
    "recipient",
    "name",
    "organisation",
    "status",
    "addresses",
    "attempts",
    "last_code",
    "last_reply",
    "message_id",
    "time",
    "sha256",
    "archive",
}


@dataclass(frozen=True)
class Sent:
    """A campaign folder after real sends: its file, outbox, log, and what the servers took."""

    folder: Path
    file: Path
    messages: tuple[Received, ...]  # every message any server took, in order
    queue: dict[str, str]  # lower-cased address -> the queue id its server answered with

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"

    @property
    def log(self) -> Path:
        return self.outbox / "send-log.jsonl"

    def copy(self, destination: Path) -> Sent:
        shutil.copytree(self.folder, destination)
        return replace(self, folder=destination, file=destination / self.file.name)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Sent:
    folder = tmp_path_factory.mktemp("mixed")
    file = copy_bundled(folder)
    faults = FaultScript(
        rcpt={"mbudsman@ombudsman.kz": (550, NO_MAILBOX), "procuror@nursat.kz": (451, GREYLISTED)},
        data=queued_replies("QA"),
    )
    with SmtpServer(faults=faults) as first_server:
        only = ("president", "general-prosecutor", "ombudsman")
        first = send(file, first_server, "--only", *only, "--retries", "1", "--backoff", "0")
        taken = first_server.messages
        queue = queue_ids(first_server, "QA")
    assert first.status == 1, first.stdout + first.stderr  # incomplete: deferred and partial
    assert sorted(a for m in taken for a in m.rcpt_tos) == sorted(
        ["aprk@akorda.kz", "Gp-rk@prokuror.kz", "info@ombudsman.kz"]
    )
    with SmtpServer(faults=FaultScript(data=DROP)) as second_server:
        second = send(file, second_server, "--only", "ministry-of-justice", "--timeout", "2")
        dropped = second_server.messages
    assert second.status == 1, second.stdout + second.stderr
    assert [m.rcpt_tos for m in dropped] == [["kanc@adilet.gov.kz"]]  # it did take the data
    return Sent(folder, file, (*taken, *dropped), queue)


@pytest.fixture
def sent_all(tmp_path: Path) -> Sent:
    """The bundled campaign sent in full to a loopback server that answers with queue ids."""
    file = copy_bundled(tmp_path / "all")
    with SmtpServer(faults=FaultScript(data=queued_replies("QK"))) as server:
        run = send(file, server)
        queue = queue_ids(server, "QK")
        messages = tuple(server.messages)
    assert run.status == 0, run.stdout + run.stderr
    assert len(messages) == 6
    return Sent(file.parent, file, messages, queue)


def by_recipient(rows: list[dict[str, Any]], key: str = "recipient") -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def last_time(records: list[dict[str, Any]], recipient: str) -> str | None:
    times = [r["time"] for r in records if r.get("recipient") == recipient]
    return times[-1] if times else None


def message_id_of(message: Received) -> str:
    return str(BytesParser().parsebytes(message.data, headersonly=True)["Message-ID"])


# ------------------------------------------------------------------ field-by-field comparisons

_OUTCOME = re.compile(
    r"^(?P<address>[^:]+): (?P<outcome>\w+)(?: (?P<code>\d{3}))?(?: (?P<reply>.*))?$"
)


def address_outcomes_from_csv(text: str) -> list[dict[str, Any]]:
    """The CSV's `address_outcomes` cell read back into the JSON's `addresses` shape."""
    found = []
    for part in text.split("; "):
        match = _OUTCOME.match(part)
        assert match is not None, part
        code = match["code"]
        found.append(
            {
                "address": match["address"],
                "outcome": match["outcome"],
                "code": int(code) if code is not None else None,
                "reply": match["reply"] or "",
            }
        )
    return found


def assert_csv_matches_json(csv_run: Any, json_run: Any) -> None:
    """Every CSV row, field by field, says what the JSON object for that recipient says."""
    assert csv_run.status == 0 and json_run.status == 0, (csv_run.stderr, json_run.stderr)
    header, rows = csv_rows(csv_run)
    objects = json_rows(json_run)
    assert set(header) >= JSON_KEYS, f"CSV lacks {JSON_KEYS - set(header)}"
    assert "address_outcomes" in header
    assert [r["recipient"] for r in rows] == [o["recipient"] for o in objects]
    mismatches = []
    for row, obj in zip(rows, objects, strict=True):
        expected = {
            "recipient": obj["recipient"],
            "name": obj["name"],
            "organisation": obj["organisation"],
            "status": obj["status"],
            "attempts": str(obj["attempts"]),
            "last_code": "" if obj["last_code"] is None else str(obj["last_code"]),
            "last_reply": obj["last_reply"],
            "time": obj["time"] or "",
            "message_id": obj["message_id"] or "",
            "sha256": obj["sha256"] or "",
            "archive": obj["archive"] or "",
            "addresses": "; ".join(a["address"] for a in obj["addresses"]),
        }
        for name, value in expected.items():
            if row[name] != value:
                mismatches.append((obj["recipient"], name, row[name], value))
        if address_outcomes_from_csv(row["address_outcomes"]) != obj["addresses"]:
            mismatches.append(
                (obj["recipient"], "address_outcomes", row["address_outcomes"], obj["addresses"])
            )
    assert not mismatches, "CSV and JSON disagree (recipient, field, csv, json):\n" + "\n".join(
        map(repr, mismatches)
    )


def assert_table_matches_json(table_run: Any, json_run: Any) -> None:
    """The table's rows say what the JSON says: status, tries, last reply, time, addresses."""
    rows = table_rows(table_run.stdout)
    objects = json_rows(json_run)
    assert [r["id"] for r in rows] == [o["recipient"] for o in objects]
    for row, obj in zip(rows, objects, strict=True):
        code = obj["last_code"]
        reply = f"{code} {obj['last_reply']}" if code is not None else obj["last_reply"]
        assert row["status"] == obj["status"], obj["recipient"]
        assert row["tries"] == str(obj["attempts"]), obj["recipient"]
        assert row["lastreply"] == squash(reply), obj["recipient"]
        assert row["lastevent(UTC)"] == squash((obj["time"] or "")[:19].replace("T", " "))
        assert row["name/organisation"] == squash(f"{obj['name']} {obj['organisation']}")
        for address in obj["addresses"]:
            assert squash(address["address"]) in row["addresses"]


def assert_archives_match(sent: Sent, objects: list[dict[str, Any]]) -> None:
    """For every letter that went out (accepted, or unknown): the archived copy is its bytes."""
    for obj in objects:
        out = [a["address"] for a in obj["addresses"] if a["outcome"] in ("accepted", "unknown")]
        if not out:
            assert obj["sha256"] is None and obj["archive"] is None, obj
            continue
        archived = (sent.outbox / obj["archive"]).read_bytes()
        assert sha256(archived) == obj["sha256"], obj["recipient"]
        for address in out:
            got = received_by(sent.messages, address)
            assert [sha256(m.data) for m in got] == [obj["sha256"]], address
            assert message_id_of(got[0]) == obj["message_id"]


# ------------------------------------------------------------------------------- acceptance


def test_bundled_campaign_sent_to_loopback_shows_six_sent_with_the_servers_replies(
    sent_all: Sent,
) -> None:
    table = campaign(sent_all.file, "log")
    assert table.status == 0, table.stderr
    assert table.stderr == ""
    assert counts_line(table.stdout) == {**ALL_COUNTS, "sent": 6, "sending": 0}
    rows = table_rows(table.stdout)
    assert [row["id"] for row in rows] == list(BUNDLED_IDS)
    for row in rows:
        assert row["status"] == "sent"
        assert row["tries"] == "1"
    # The reply each server gave, queue id included, is on each recipient's row.
    replies = {row["id"]: row["lastreply"] for row in rows}
    objects = json_rows(campaign(sent_all.file, "log", "--json"))
    for obj in objects:
        first_address = obj["addresses"][0]["address"].lower()
        queued = sent_all.queue[first_address]
        assert replies[obj["recipient"]] == squash(f"250 2.0.0 Ok: queued as {queued}")
    assert "next:" not in table.stdout  # nothing left to do

    json_run = campaign(sent_all.file, "log", "--json")
    assert_table_matches_json(table, json_run)
    assert_csv_matches_json(campaign(sent_all.file, "log", "--csv"), json_run)
    assert_archives_match(sent_all, json_rows(json_run))
    for obj in json_rows(json_run):
        assert obj["status"] == "sent"
        for address in obj["addresses"]:
            queued = sent_all.queue[address["address"].lower()]
            assert address == {
                "address": address["address"],
                "outcome": "accepted",
                "code": 250,
                "reply": f"2.0.0 Ok: queued as {queued}",
            }


# ------------------------------------------------------------------------------------ table


def test_table_shows_every_recipient_with_status_reply_and_time(mixed: Sent) -> None:
    run = campaign(mixed.file, "log")
    assert run.status == 0, run.stderr
    assert run.stderr == ""
    assert f"campaign {CAMPAIGN_ID}" in run.out
    assert f"log {mixed.log}" in run.out
    assert counts_line(run.stdout) == {
        "sent": 1,
        "partial": 1,
        "deferred": 1,
        "failed": 0,
        "unknown": 1,
        "pending": 2,
        "sending": 0,
    }
    rows = table_rows(run.stdout)
    assert [row["id"] for row in rows] == list(BUNDLED_IDS)  # never-attempted ones included
    row = by_recipient(rows, "id")
    assert {rid: r["status"] for rid, r in row.items()} == MIXED_STATUS
    assert {rid: r["tries"] for rid, r in row.items()} == {
        rid: str(n) for rid, n in MIXED_ATTEMPTS.items()
    }
    assert row["president"]["name/organisation"] == squash(
        "Nursultan Nazarbayev The President of the Republic of Kazakhstan"
    )
    assert row["president"]["lastreply"] == squash(
        f"250 2.0.0 Ok: queued as {mixed.queue['aprk@akorda.kz']}"
    )
    assert row["general-prosecutor"]["lastreply"] == squash(f"451 {GREYLISTED}")
    assert row["ministry-of-justice"]["lastreply"].startswith(squash(LOST))
    assert row["national-security-committee"]["lastreply"] == ""
    records = log_records(mixed.log)
    for rid in BUNDLED_IDS:
        expected = (last_time(records, rid) or "")[:19].replace("T", " ")
        assert row[rid]["lastevent(UTC)"] == squash(expected), rid


def test_table_shows_per_address_outcomes_where_they_differ(mixed: Sent) -> None:
    row = by_recipient(table_rows(campaign(mixed.file, "log").stdout), "id")
    assert row["ombudsman"]["addresses"] == squash(
        "info@ombudsman.kz (accepted 250) mbudsman@ombudsman.kz (refused 550)"
    )
    assert row["general-prosecutor"]["addresses"] == squash(
        "Gp-rk@prokuror.kz (accepted 250) procuror@nursat.kz (deferred 451)"
    )
    # One address, or all alike: no per-address noise.
    assert row["president"]["addresses"] == "aprk@akorda.kz"
    assert row["ministry-of-justice"]["addresses"] == "kanc@adilet.gov.kz"


def test_table_says_what_to_do_next(mixed: Sent) -> None:
    out = campaign(mixed.file, "log").out
    assert "next: 1 unknown: check with the server's operator" in out
    assert "`campaign send --retry-unknown`" in out
    assert "next: 1 deferred: run `campaign send` again to retry them" in out
    assert "next: 2 pending: `campaign send` will send them" in out
    assert "1 partial: some of their addresses were refused for good or bounced" in out


# ---------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (
            ["--status", "deferred", "pending"],
            ["general-prosecutor", "national-security-committee", "ministry-of-internal-affairs"],
        ),
        (["--recipient", "ombudsman", "president"], ["president", "ombudsman"]),
        (
            [
                *("--status", "sent", "partial", "unknown"),
                *("--recipient", "ombudsman", "ministry-of-justice", "general-prosecutor"),
            ],
            ["ministry-of-justice", "ombudsman"],
        ),
        (["--status", "failed"], []),
    ],
    ids=["two-statuses", "two-recipients", "both", "none-match"],
)
def test_filters_select_the_same_rows_in_every_format(
    mixed: Sent, filters: list[str], expected: list[str]
) -> None:
    table = campaign(mixed.file, "log", *filters)
    assert table.status == 0, table.stderr
    assert [row["id"] for row in table_rows(table.stdout)] == expected
    assert [row["status"] for row in table_rows(table.stdout)] == [
        MIXED_STATUS[r] for r in expected
    ]
    as_json = campaign(mixed.file, "log", *filters, "--json")
    assert [obj["recipient"] for obj in json_rows(as_json)] == expected
    as_csv = campaign(mixed.file, "log", *filters, "--csv")
    header, rows = csv_rows(as_csv)
    assert header  # the header row is there even when nothing matches
    assert [row["recipient"] for row in rows] == expected
    assert_csv_matches_json(as_csv, as_json)


def test_filter_on_a_recipient_not_in_the_campaign_is_refused(mixed: Sent) -> None:
    run = campaign(mixed.file, "log", "--recipient", "ombudsman", "nobody")
    assert run.status == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert "no recipient with id 'nobody'" in run.err


# ---------------------------------------------------------------------------------- history


def history_rows(sent: Sent, recipient: str) -> list[dict[str, str]]:
    run = campaign(sent.file, "log", "--history", recipient)
    assert run.status == 0, run.stderr
    assert f"history of {recipient}" in run.stdout
    return table_rows(run.stdout)


def test_history_lists_every_event_in_order_with_retries_replies_and_times(mixed: Sent) -> None:
    rows = history_rows(mixed, "general-prosecutor")
    records = [r for r in log_records(mixed.log) if r.get("recipient") == "general-prosecutor"]
    events = ["planned", "attempt", "result", "attempt", "result"]
    assert [r["event"] for r in records] == events
    assert [row["event"] for row in rows] == events
    assert [row["attempt"] for row in rows] == ["", "1", "1", "2", "2"]  # the retry is attempt 2
    for row, record in zip(rows, records, strict=True):
        assert row["time"] == squash(record["time"][:23].replace("T", " "))
        assert row["run"] == record["run"]
    assert sorted(r["time"] for r in records) == [r["time"] for r in records]
    # Attempt 1 offered both addresses; the retry only the greylisted one.
    assert rows[1]["addresses"] == squash("Gp-rk@prokuror.kz procuror@nursat.kz")
    assert rows[3]["addresses"] == "procuror@nursat.kz"
    queued = mixed.queue["gp-rk@prokuror.kz"]
    first_result = rows[2]["outcome/reply"]
    assert squash(f"Gp-rk@prokuror.kz: accepted 250 2.0.0 Ok: queued as {queued}") in first_result
    assert squash(f"procuror@nursat.kz: deferred 451 {GREYLISTED}") in first_result
    assert rows[4]["outcome/reply"] == squash(f"procuror@nursat.kz: deferred 451 {GREYLISTED}")


def test_history_of_partial_and_unknown_recipients(mixed: Sent) -> None:
    ombudsman = history_rows(mixed, "ombudsman")
    assert [row["event"] for row in ombudsman] == ["planned", "attempt", "result"]
    assert (
        squash(f"mbudsman@ombudsman.kz: refused 550 {NO_MAILBOX}") in ombudsman[2]["outcome/reply"]
    )
    justice = history_rows(mixed, "ministry-of-justice")
    assert [row["event"] for row in justice] == ["planned", "attempt", "result"]
    assert squash(f"kanc@adilet.gov.kz: unknown {LOST}") in justice[2]["outcome/reply"]
    # Planned (every recipient's letter is recorded) by the first run, attempted by its own.
    assert justice[0]["run"] == ombudsman[0]["run"]
    assert justice[1]["run"] != ombudsman[1]["run"]


def test_history_of_a_recipient_never_attempted(mixed: Sent) -> None:
    run = campaign(mixed.file, "log", "--history", "national-security-committee")
    assert run.status == 0
    assert [row["event"] for row in table_rows(run.stdout)] == ["planned"]
    assert "national-security-committee has not been attempted yet" in run.out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("--history", "president", "--csv"), "--history gives a table, or JSON"),
        (("--follow", "--json"), "--follow keeps a table live"),
        (("--follow", "--csv"), "--follow keeps a table live"),
    ],
)
def test_a_format_the_view_cannot_give_is_refused_not_ignored(
    mixed: Sent, argv: tuple[str, ...], said: str
) -> None:
    run = campaign(mixed.file, "log", *argv)
    assert run.status == 2
    assert said in run.err
    assert run.stdout == ""


# ------------------------------------------------------------------------------ JSON and CSV


def test_json_gives_one_object_per_recipient_with_addresses_replies_and_archive(
    mixed: Sent,
) -> None:
    run = campaign(mixed.file, "log", "--json")
    assert run.status == 0, run.stderr
    assert run.stderr == ""
    objects = json_rows(run)
    assert [obj["recipient"] for obj in objects] == list(BUNDLED_IDS)
    for obj in objects:
        assert obj.keys() >= JSON_KEYS, obj
    obj = by_recipient(objects)
    assert {rid: o["status"] for rid, o in obj.items()} == MIXED_STATUS
    assert {rid: o["attempts"] for rid, o in obj.items()} == MIXED_ATTEMPTS
    assert obj["president"]["name"] == "Nursultan Nazarbayev"
    queue = mixed.queue

    def outcomes(rid: str) -> list[tuple[str, str, int | None, str]]:
        return [(a["address"], a["outcome"], a["code"], a["reply"]) for a in obj[rid]["addresses"]]

    assert outcomes("president") == [
        ("aprk@akorda.kz", "accepted", 250, f"2.0.0 Ok: queued as {queue['aprk@akorda.kz']}")
    ]
    assert outcomes("general-prosecutor") == [
        ("Gp-rk@prokuror.kz", "accepted", 250, f"2.0.0 Ok: queued as {queue['gp-rk@prokuror.kz']}"),
        ("procuror@nursat.kz", "deferred", 451, GREYLISTED),
    ]
    assert outcomes("ombudsman") == [
        ("info@ombudsman.kz", "accepted", 250, f"2.0.0 Ok: queued as {queue['info@ombudsman.kz']}"),
        ("mbudsman@ombudsman.kz", "refused", 550, NO_MAILBOX),
    ]
    [(address, outcome, code, reply)] = outcomes("ministry-of-justice")
    assert (address, outcome, code) == ("kanc@adilet.gov.kz", "unknown", None)
    assert reply.startswith(LOST)
    assert outcomes("national-security-committee") == [("press@knb.kz", "pending", None, "")]
    assert obj["general-prosecutor"]["last_code"] == 451

    records = log_records(mixed.log)
    for rid, o in obj.items():
        assert o["time"] == last_time(records, rid), rid
    for rid in ("national-security-committee", "ministry-of-internal-affairs"):
        assert obj[rid]["message_id"] is None
        assert obj[rid]["sha256"] is None and obj[rid]["archive"] is None
    # Unknown: the server took the data (it hung up after), but nobody knows it accepted.
    [dropped] = received_by(mixed.messages, "kanc@adilet.gov.kz")
    assert obj["ministry-of-justice"]["message_id"] == message_id_of(dropped)
    assert obj["ministry-of-justice"]["sha256"] == sha256(dropped.data)
    assert_archives_match(mixed, objects)
    assert obj["ombudsman"]["archive"].startswith("sent/06-ombudsman.")


def test_csv_parses_back_and_agrees_with_json_field_by_field(mixed: Sent) -> None:
    as_csv = campaign(mixed.file, "log", "--csv")
    assert as_csv.stderr == ""
    assert as_csv.stdout.splitlines()[0].startswith("recipient,")
    assert_csv_matches_json(as_csv, campaign(mixed.file, "log", "--json"))


def test_table_agrees_with_json(mixed: Sent) -> None:
    assert_table_matches_json(campaign(mixed.file, "log"), campaign(mixed.file, "log", "--json"))


def test_a_large_file_read_beside_the_log_gives_the_same_rows_and_errors(
    mixed: Sent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_turn = campaign(mixed.file, "log", "--json")
    bad_line = _bad_line(mixed.copy(tmp_path / "copy"))[0]
    refused_in_turn = campaign(bad_line, "log")
    monkeypatch.setattr(review, "PARALLEL_READ_BYTES", 0)  # every file counts as large
    side_by_side = campaign(mixed.file, "log", "--json")
    assert side_by_side.status == in_turn.status == 0
    assert side_by_side.stdout == in_turn.stdout
    refused = campaign(bad_line, "log")
    assert refused.status == refused_in_turn.status == 2
    assert refused.err == refused_in_turn.err
    assert "send-log.jsonl:4: line 4 is not a valid JSON record" in refused.err


# ------------------------------------------------------------------- log and send agree


def test_send_resumes_exactly_what_log_shows_left(mixed: Sent, tmp_path: Path) -> None:
    sent = mixed.copy(tmp_path / "copy")
    left = json_rows(campaign(sent.file, "log", "--json", "--status", "deferred", "pending"))
    left_ids = [obj["recipient"] for obj in left]
    assert left_ids == [
        "general-prosecutor",
        "national-security-committee",
        "ministry-of-internal-affairs",
    ]
    # The addresses still to send: the deferred one of a half-sent recipient, and the pending.
    left_addresses = sorted(
        a["address"] for obj in left for a in obj["addresses"] if a["outcome"] != "accepted"
    )
    loopback = {"CAMPAIGN_SMTP_HOST": "127.0.0.1", "CAMPAIGN_SMTP_SECURITY": "none"}
    dry = run_cli(sent.file, "send", "--dry-run", environ=loopback)
    assert dry.status == 0, dry.stderr
    assert "letters 3 letters to 3 addresses" in dry.out
    assert "skipped 1 partial, 1 sent, 1 unknown" in dry.out

    run_ids_before = {r["run"] for r in log_records(sent.log) if "run" in r}
    with SmtpServer(faults=FaultScript(data=queued_replies("QC"))) as server:
        third = send(sent.file, server, "--backoff", "0", "--timeout", "2")
        taken = server.messages
        queue = queue_ids(server, "QC")
    assert third.status in (0, 1), third.stderr  # which one is in question: see the report
    assert sorted(a for m in taken for a in m.rcpt_tos) == left_addresses
    attempted = [
        r["recipient"]
        for r in log_records(sent.log)
        if r["event"] == "attempt" and r["run"] not in run_ids_before
    ]
    assert sorted(attempted) == sorted(left_ids)

    after = by_recipient(json_rows(campaign(sent.file, "log", "--json")))
    assert {rid: o["status"] for rid, o in after.items()} == {
        **MIXED_STATUS,
        "general-prosecutor": "sent",
        "national-security-committee": "sent",
        "ministry-of-internal-affairs": "sent",
    }
    gp = after["general-prosecutor"]
    assert [(a["address"], a["reply"]) for a in gp["addresses"]] == [
        ("Gp-rk@prokuror.kz", f"2.0.0 Ok: queued as {mixed.queue['gp-rk@prokuror.kz']}"),
        ("procuror@nursat.kz", f"2.0.0 Ok: queued as {queue['procuror@nursat.kz']}"),
    ]
    assert gp["attempts"] == 3
    # The second address got the very bytes the first one got in the earlier run.
    [late] = received_by(taken, "procuror@nursat.kz")
    assert sha256(late.data) == gp["sha256"] == sha256((sent.outbox / gp["archive"]).read_bytes())
    assert after["ministry-of-justice"]["attempts"] == 1  # unknown: not resent
    history = history_rows(sent, "general-prosecutor")
    assert [row["event"] for row in history][-2:] == ["attempt", "result"]
    assert len({row["run"] for row in history}) == 2


def test_resolving_an_unknown_changes_log_and_send_alike(mixed: Sent, tmp_path: Path) -> None:
    sent = mixed.copy(tmp_path / "copy")
    resolved = campaign(
        sent.file, "resolve", "ministry-of-justice", "--as", "pending", "--reason", "not in its log"
    )
    assert resolved.status == 0, resolved.stderr
    obj = by_recipient(json_rows(campaign(sent.file, "log", "--json")))["ministry-of-justice"]
    assert obj["status"] == "pending"
    assert obj["last_reply"] == "resolved as pending: not in its log"
    history = history_rows(sent, "ministry-of-justice")
    assert history[-1]["event"] == "resolve"
    assert history[-1]["outcome/reply"].startswith(squash("as pending: not in its log"))

    with SmtpServer() as server:
        run = send(sent.file, server, "--only", "ministry-of-justice")
        taken = server.messages
    assert run.status == 0, run.stdout + run.stderr
    assert [m.rcpt_tos for m in taken] == [["kanc@adilet.gov.kz"]]
    obj = by_recipient(json_rows(campaign(sent.file, "log", "--json")))["ministry-of-justice"]
    assert obj["status"] == "sent"
    assert obj["sha256"] == sha256(taken[0].data)


def test_result_records_state_the_status_log_shows(mixed: Sent) -> None:
    """Someone reading the log with jq sees the same status as `campaign log`.

    (Each `result` record once said 'unknown': its status was taken while the attempt was open.)
    """
    last_result = {
        r["recipient"]: r["status"] for r in log_records(mixed.log) if r["event"] == "result"
    }
    assert last_result == {
        rid: status for rid, status in MIXED_STATUS.items() if MIXED_ATTEMPTS[rid]
    }


# --------------------------------------------------------------------- a log read as a stream


def test_torn_last_line_is_ignored_with_a_note(mixed: Sent, tmp_path: Path) -> None:
    sent = mixed.copy(tmp_path / "copy")
    before_json = campaign(sent.file, "log", "--json").stdout
    before_csv = campaign(sent.file, "log", "--csv").stdout
    attempt = next(line for line in sent.log.read_text().splitlines() if '"attempt"' in line)
    with open(sent.log, "a", encoding="utf-8") as handle:
        handle.write(attempt[: len(attempt) // 2])  # a crash in the middle of a write
    lines = len(sent.log.read_text().splitlines())
    note = f"the last line ({lines}) was cut short, probably by a crash; it was ignored"

    table = campaign(sent.file, "log")
    assert table.status == 0, table.stderr
    assert f"note: {note}" in table.out
    assert {row["id"]: row["status"] for row in table_rows(table.stdout)} == MIXED_STATUS
    as_json = campaign(sent.file, "log", "--json")
    assert as_json.status == 0
    assert as_json.stdout == before_json  # stdout stays clean JSON Lines
    assert as_json.err == f"note: {note}"
    as_csv = campaign(sent.file, "log", "--csv")
    assert as_csv.stdout == before_csv
    assert as_csv.err == f"note: {note}"


def test_a_send_after_a_crash_repairs_the_log_and_log_says_so(mixed: Sent, tmp_path: Path) -> None:
    sent = mixed.copy(tmp_path / "copy")
    with open(sent.log, "a", encoding="utf-8") as handle:
        handle.write('{"time":"2024-01-02T03:04:05.000+00:00","event":"attem')
    torn = len(sent.log.read_text().splitlines())
    with SmtpServer() as server:
        run = send(sent.file, server, "--only", "national-security-committee")
    assert run.status == 0, run.stdout + run.stderr
    table = campaign(sent.file, "log")
    assert table.status == 0, table.stderr
    assert f"note: line {torn} was cut short by a crash and was ignored" in table.out
    statuses = {row["id"]: row["status"] for row in table_rows(table.stdout)}
    assert statuses == {**MIXED_STATUS, "national-security-committee": "sent"}


# Each breaks a copy of the mixed campaign; returns the campaign file and extra `log` arguments.


def _missing(sent: Sent) -> tuple[Path, list[str]]:
    return sent.file, ["--log", str(sent.folder / "elsewhere" / "send-log.jsonl")]


def _empty(sent: Sent) -> tuple[Path, list[str]]:
    sent.log.write_bytes(b"")
    return sent.file, []


def _other_file(sent: Sent) -> tuple[Path, list[str]]:
    """The same log read with a copy of the campaign file whose id was edited."""
    text = sent.file.read_text(encoding="utf-8")
    assert f'id: "{CAMPAIGN_ID}"' in text
    other = sent.folder / "other.yaml"
    other.write_text(text.replace(f'id: "{CAMPAIGN_ID}"', 'id: "another-letter"'), "utf-8")
    return other, []


def _other_log(sent: Sent) -> tuple[Path, list[str]]:
    """A log every record of which belongs to another campaign."""
    text = sent.log.read_text(encoding="utf-8")
    sent.log.write_text(
        text.replace(f'"campaign":"{CAMPAIGN_ID}"', '"campaign":"kz-2016"'), "utf-8"
    )
    return sent.file, []


def _bad_line(sent: Sent) -> tuple[Path, list[str]]:
    lines = sent.log.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(3, '{"time": "2024-01-02T03:04:05", "event": "attempt", oops\n')
    sent.log.write_text("".join(lines), encoding="utf-8")
    return sent.file, []


BROKEN_LOGS = {
    "other-campaign-file": (
        _other_file,
        f"this log was written for campaign '{CAMPAIGN_ID}', not 'another-letter'",
    ),
    "other-campaign-log": (
        _other_log,
        f"this log was written for campaign 'kz-2016', not '{CAMPAIGN_ID}'",
    ),
    "bad-line": (
        _bad_line,
        "send-log.jsonl:4: line 4 is not a valid JSON record; the log may have been edited by hand",
    ),
}


@pytest.mark.parametrize("breaks", [_missing, _empty], ids=["missing", "empty"])
def test_log_before_any_send_shows_everyone_pending(
    mixed: Sent, tmp_path: Path, breaks: Callable[[Sent], tuple[Path, list[str]]]
) -> None:
    sent = mixed.copy(tmp_path / "copy")
    file, extra = breaks(sent)
    table = campaign(file, "log", *extra)
    assert table.status == 0, table.stderr
    assert counts_line(table.stdout)["pending"] == len(BUNDLED_IDS)
    as_json = json_rows(campaign(file, "log", *extra, "--json"))
    assert [row["status"] for row in as_json] == ["pending"] * len(BUNDLED_IDS)


@pytest.mark.parametrize("mode", [[], ["--json"], ["--csv"], ["--history", "ombudsman"]])
@pytest.mark.parametrize("case", list(BROKEN_LOGS))
def test_unreadable_log_is_explained_in_one_sentence(
    mixed: Sent, tmp_path: Path, case: str, mode: list[str]
) -> None:
    sent = mixed.copy(tmp_path / "copy")
    breaks, message = BROKEN_LOGS[case]
    file, extra = breaks(sent)
    run = campaign(file, "log", *extra, *mode)
    assert run.status == 2, run.stdout
    assert run.stdout == ""  # no half table, no half JSON
    assert "Traceback" not in run.stderr
    assert run.err.startswith("error: ")
    assert run.err.count("error:") == 1
    assert message in run.err


def test_records_of_another_campaign_in_the_log_are_ignored_with_a_note(
    mixed: Sent, tmp_path: Path
) -> None:
    sent = mixed.copy(tmp_path / "copy")
    before = campaign(sent.file, "log", "--json").stdout
    stray = (
        '{"time":"2024-01-02T03:04:05.000+00:00","event":"result","campaign":"kz-2016",'
        '"run":"x","recipient":"president","attempt":1,"replies":{"aprk@akorda.kz":'
        '{"outcome":"refused","code":550,"reply":"no"}},"message_id":"<x@example.org>",'
        '"status":"failed","transport":"smtp://x"}\n'
    )
    with open(sent.log, "a", encoding="utf-8") as handle:
        handle.write(stray)
    as_json = campaign(sent.file, "log", "--json")
    assert as_json.status == 0
    assert as_json.stdout == before  # the stray record changed nothing
    assert as_json.err == "note: the log also holds records of kz-2016; they were ignored"
    table = campaign(sent.file, "log")
    assert "note: the log also holds records of kz-2016; they were ignored" in table.out
    # `send` will not mix campaigns in one log at all.
    with SmtpServer() as server:
        refused = send(sent.file, server)
        assert server.sessions == 0
    assert refused.status == 2
    assert "Traceback" not in refused.stderr
    assert f"the log {sent.log} also holds campaign(s) kz-2016" in refused.err


# ------------------------------------------------------------------- a large synthetic log

KINDS = ("sent", "partial", "deferred", "failed", "unknown")


def _synthetic_campaign(folder: Path, attempted: int, untouched: int) -> Path:
    lines = [
        "campaign:",
        '  id: "synthetic-20k"',
        '  subject: "A letter for {{ recipient.name }}"',
        '  from: "Test Sender <sender@example.org>"',
        "recipients:",
    ]
    for i in range(attempted + untouched):
        emails = [f"r{i}@example.com"]
        if KINDS[i % len(KINDS)] in ("partial", "deferred") and i < attempted:
            emails.append(f"r{i}.b@example.net")
        lines += [
            f'  - id: "r{i:05d}"',
            f'    name: "Person {i}"',
            "    emails: [" + ", ".join(f'"{e}"' for e in emails) + "]",
        ]
    return write_campaign(folder, "\n".join(lines) + "\n")


def _synthetic_log(path: Path, attempted: int, tries: int) -> None:
    """`tries` attempt+result pairs per recipient, built with the records a real run writes."""
    start = datetime(2024, 1, 2, tzinfo=UTC)
    ticks = iter(range(10**9))
    log = SendLog(path, "synthetic-20k", clock=lambda: start + timedelta(milliseconds=next(ticks)))
    run, transport = "synthetic0001", "smtp://127.0.0.1:2525"
    log.write(run_start_record(run=run, pid=1, transport=transport, planned=attempted, test=False))
    wait = AddressReply(Outcome.DEFERRED, 451, "4.7.1 try again later")
    for i in range(attempted):
        rid, kind = f"r{i:05d}", KINDS[i % len(KINDS)]
        first = f"r{i}@example.com"
        addresses = [first] + ([f"r{i}.b@example.net"] if kind in ("partial", "deferred") else [])
        digest = f"{i:064x}"
        message_id = f"<synthetic-20k.{rid}@example.org>"
        for attempt in range(1, tries + 1):
            log.write(
                attempt_record(
                    run=run,
                    recipient=rid,
                    addresses=addresses,
                    all_addresses=addresses,
                    message_id=message_id,
                    attempt=attempt,
                    content_hash=digest,
                    sha256=digest,
                    size=4096,
                    transport=transport,
                )
            )
            replies = dict.fromkeys(addresses, wait)
            archive = None
            if attempt == tries:
                ok = AddressReply(Outcome.ACCEPTED, 250, f"2.0.0 Ok: queued as S{i}")
                no = AddressReply(Outcome.REFUSED, 550, "5.1.1 no such mailbox")
                lost = AddressReply(Outcome.UNKNOWN, None, "no answer after data")
                final = {"sent": ok, "partial": ok, "deferred": ok, "failed": no, "unknown": lost}
                replies[first] = final[kind]
                if kind == "partial":
                    replies[addresses[1]] = no
                if replies[first] is ok:
                    archive = f"sent/{rid}.eml"
            log.write(
                result_record(
                    run=run,
                    recipient=rid,
                    attempt=attempt,
                    message_id=message_id,
                    replies=replies,
                    status=Status(kind) if attempt == tries else Status.DEFERRED,
                    transport=transport,
                    archive=archive,
                    sha256=digest if archive else None,
                )
            )
    log.write(run_end_record(run=run, counts={}, stopped=None))
    log.close()


def test_a_log_of_twenty_thousand_events_is_read_right(tmp_path: Path) -> None:
    """Correctness on a large log (no timing here: the benchmark in bench/ measures speed)."""
    attempted, untouched, tries = 2500, 10, 4
    file = _synthetic_campaign(tmp_path, attempted, untouched)
    log = tmp_path / "outbox" / "send-log.jsonl"
    _synthetic_log(log, attempted, tries)
    assert sum(1 for r in log_records(log) if r["event"] in ("attempt", "result")) == 20_000

    as_json = campaign(file, "log", "--json")
    assert as_json.status == 0, as_json.stderr
    objects = json_rows(as_json)
    assert len(objects) == attempted + untouched
    share = attempted // len(KINDS)
    assert Counter(o["status"] for o in objects) == {
        **dict.fromkeys(KINDS, share),
        "pending": untouched,
    }
    assert Counter(o["attempts"] for o in objects) == {tries: attempted, 0: untouched}
    obj = by_recipient(objects)
    assert obj["r00000"]["last_reply"] == "2.0.0 Ok: queued as S0"
    assert obj["r00000"]["archive"] == "sent/r00000.eml"
    assert [a["outcome"] for a in obj["r00001"]["addresses"]] == ["accepted", "refused"]
    assert [a["outcome"] for a in obj["r00002"]["addresses"]] == ["accepted", "deferred"]
    assert obj["r00003"]["last_code"] == 550 and obj["r00003"]["sha256"] is None
    assert obj["r00004"]["addresses"][0]["outcome"] == "unknown"
    assert obj["r02509"]["status"] == "pending"

    as_csv = campaign(file, "log", "--csv", "--status", "partial", "unknown")
    _, rows = csv_rows(as_csv)
    assert Counter(r["status"] for r in rows) == {"partial": share, "unknown": share}
    table = campaign(file, "log", "--recipient", "r00000")
    assert counts_line(table.stdout) == {
        **dict.fromkeys(KINDS, share),
        "pending": untouched,
        "sending": 0,
    }


def test_a_recipient_taken_out_of_the_file_stays_in_sight(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "gone")
    assert send(file, smtp_server, "--concurrency", "1").status == 0
    text = file.read_text(encoding="utf-8")
    start = text.index('  - id: "ombudsman"')
    file.write_text(text[:start].rstrip("\n") + "\n", encoding="utf-8")  # the last one, out
    table = campaign(file, "log")
    assert table.status == 0, table.stderr
    assert squash(
        "1 recipient(s) the log has sent to are no longer in the campaign file: ombudsman"
    ) in squash(table.stdout)
    history = campaign(file, "log", "--history", "ombudsman")
    assert history.status == 0, history.stderr
    assert "mbudsman@ombudsman.kz" in history.stdout
    unknown = campaign(file, "log", "--history", "nobody")
    assert unknown.status == 2
    assert "no recipient with id 'nobody'" in " ".join(unknown.stderr.split())


def test_a_recipient_named_with_a_thousand_addresses_a_record_keeps_each_ones_outcome(
    tmp_path: Path,
) -> None:
    """The most addresses a record may name, over three attempts of one recipient: each
    address keeps its own outcome, in the order the log first named it."""
    path = tmp_path / "send-log.jsonl"
    log = SendLog(path, CAMPAIGN_ID)
    run, transport, message_id, digest = (
        "many00000001",
        "smtp://127.0.0.1:2525",
        "<m@x.org>",
        "0" * 64,
    )
    log.write(run_start_record(run=run, pid=1, transport=transport, planned=1, test=False))
    batches = [[f"a{b}-{n}@example.org" for n in range(1000)] for b in range(3)]
    taken, refused = (
        AddressReply(Outcome.ACCEPTED, 250, "ok"),
        AddressReply(Outcome.REFUSED, 550, "no"),
    )
    for attempt, batch in enumerate(batches, 1):
        log.write(
            attempt_record(
                run=run,
                recipient="r1",
                addresses=batch,
                all_addresses=batch,
                message_id=message_id,
                attempt=attempt,
                content_hash=digest,
                sha256=digest,
                size=1,
                transport=transport,
            )
        )
        replies = {a: taken if n % 2 == 0 else refused for n, a in enumerate(batch)}
        log.write(
            result_record(
                run=run,
                recipient="r1",
                attempt=attempt,
                message_id=message_id,
                replies=replies,
                status=Status.PARTIAL,
                transport=transport,
            )
        )
    log.close()

    state = replay(path, CAMPAIGN_ID).recipients["r1"]

    assert [(s.address, s.outcome) for s in state.addresses] == [
        (a, Outcome.ACCEPTED if n % 2 == 0 else Outcome.REFUSED)
        for batch in batches
        for n, a in enumerate(batch)
    ]
    assert state.status() == Status.PARTIAL
