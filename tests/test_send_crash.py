"""A sender killed with SIGKILL mid-run, then run again; a log whose last line was torn.

Nobody may receive the letter twice, and every recipient must be either received by the
server or `unknown` in the log (never silently skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from send_helpers import (
    copy_bundled,
    deliveries,
    log_path,
    read_log,
    run_cli,
    send,
    smtp_environ,
    write_small_campaign,
)
from smtp_server import STALL, FaultScript, SmtpServer, nth

from campaign.sendlog import LogLock, replay

MakeServer = Callable[..., SmtpServer]
COUNT = 300
KILL_AFTER = 100
STALLED = 60  # the 60th message's final reply never comes: one letter is surely in flight


def start_sender(file: Path, server: SmtpServer, *argv: str) -> subprocess.Popen[bytes]:
    """`python -m campaign send` in its own process, pointed at the test server alone."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CAMPAIGN_")}
    environ.update(smtp_environ(server))
    with open(file.parent / "sender-output.txt", "wb") as output:  # the child keeps its copy
        return subprocess.Popen(
            [sys.executable, "-m", "campaign", "--file", str(file), "send", "--yes", *argv],
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=file.parent,
        )


def kill_mid_run(file: Path, server: SmtpServer) -> None:
    # --rate spreads the 300 messages over about three seconds, so the kill lands mid-run.
    sender = start_sender(file, server, "--concurrency", "4", "--rate", "6000", "--timeout", "30")
    try:
        server.wait_for(KILL_AFTER, timeout=30)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait(timeout=10)
    assert sender.returncode == -signal.SIGKILL


def recipient_ids(addresses: Counter[str]) -> set[str]:
    return {address.split("@")[0] for address in addresses}


def test_sigkill_mid_run_then_a_second_run_sends_nobody_twice(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "campaign", COUNT)
    server = make_smtp_server(faults=FaultScript(data=nth(STALLED, STALL)))
    kill_mid_run(file, server)
    received_before = len(server.messages)
    assert KILL_AFTER <= received_before < COUNT, "the kill did not land mid-run"

    # What the killed run left: every letter the server took is in the log, sent or unknown.
    history = replay(log_path(file), "crash-test")
    for rid in recipient_ids(deliveries(server)):
        assert history.recipients[rid].status() in ("sent", "unknown"), rid

    run = send(file, server, "--concurrency", "4", "--backoff", "0", "--timeout", "2")
    # At least the stalled letter is unknown, and the run says so.  (Its exit status is
    # test_send_faults.py::test_a_run_that_skips_unknown_recipients_exits_1.)
    assert run.status in (0, 1), run.stderr
    assert "recipient(s) are unknown" in run.out

    counts = deliveries(server)
    assert max(counts.values()) == 1, [a for a, n in counts.items() if n > 1]
    history = replay(log_path(file), "crash-test")
    received = recipient_ids(counts)
    statuses = {f"r{n:03d}": history.state(f"r{n:03d}").status() for n in range(1, COUNT + 1)}
    for rid, status in statuses.items():
        assert rid in received or status == "unknown", (rid, status)
        assert status in ("sent", "unknown"), (rid, status)
    assert statuses[server.messages[STALLED - 1].rcpt_tos[0].split("@")[0]] == "unknown"
    assert len(received) > received_before  # the second run sent what had not gone


def interrupt_the_third_of_five(
    tmp_path: Path, make_smtp_server: MakeServer, stop: signal.Signals
) -> tuple[Path, SmtpServer, subprocess.Popen[bytes]]:
    """Five letters, one connection: `stop` the sender while the third one's data is in."""
    file = write_small_campaign(tmp_path / "campaign", 5)
    server = make_smtp_server(faults=FaultScript(data=nth(3, STALL)))
    sender = start_sender(file, server, "--concurrency", "1", "--timeout", "60")
    try:
        server.wait_for(3, timeout=30)  # the third letter's data is in; its reply never comes
    finally:
        os.kill(sender.pid, stop)
        sender.wait(timeout=30)
    return file, server, sender


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_letter_on_its_way_when_the_run_is_interrupted_is_kept_and_recorded_unknown(
    tmp_path: Path, make_smtp_server: MakeServer, stop: signal.Signals
) -> None:
    file, server, sender = interrupt_the_third_of_five(tmp_path, make_smtp_server, stop)
    assert sender.returncode != 0
    stalled = server.messages[2]
    [address] = stalled.rcpt_tos
    recipient = address.split("@")[0]
    records = read_log(file)
    output = (file.parent / "sender-output.txt").read_text("utf-8")
    assert [r["event"] for r in records if r.get("recipient") == recipient] == [
        "planned",
        "attempt",
        "result",
    ], (records, output)
    [attempt] = [
        r for r in read_log(file) if r["event"] == "attempt" and r["recipient"] == recipient
    ]
    [result] = [r for r in read_log(file) if r["event"] == "result" and r["recipient"] == recipient]
    assert result["status"] == "unknown"
    assert result["replies"][address]["outcome"] == "unknown"
    assert "interrupted" in result["replies"][address]["reply"]
    kept = (log_path(file).parent / result["archive"]).read_bytes()
    assert hashlib.sha256(kept).hexdigest() == result["sha256"] == attempt["sha256"]
    assert kept == stalled.data
    assert replay(log_path(file), "crash-test").state(recipient).status() == "unknown"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_last_line_of_an_interrupted_run_counts_the_letter_recorded_unknown(
    tmp_path: Path, make_smtp_server: MakeServer, stop: signal.Signals
) -> None:
    file, _, _ = interrupt_the_third_of_five(tmp_path, make_smtp_server, stop)
    output = (file.parent / "sender-output.txt").read_text("utf-8")
    assert "3/5 letters done" in output, output
    assert ": 2 sent, 1 unknown\n" in output, output


def test_an_interrupted_letter_keeps_the_refusal_an_address_got_before_its_data(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "campaign", 2)
    text = file.read_text("utf-8")
    file.write_text(
        text.replace('["r002@example.net"]', '["r002@example.net", "gone@example.net"]'), "utf-8"
    )
    server = make_smtp_server(
        faults=FaultScript(
            rcpt={"gone@example.net": (550, "5.1.1 <gone@example.net>: no such user")},
            data=nth(2, STALL),
        )
    )
    sender = start_sender(file, server, "--concurrency", "1", "--timeout", "60")
    try:
        server.wait_for(2, timeout=30)  # r002's data is in; its reply never comes
    finally:
        os.kill(sender.pid, signal.SIGTERM)
        sender.wait(timeout=30)
    assert sender.returncode != 0
    assert server.messages[1].rcpt_tos == ["r002@example.net"]
    [result] = [r for r in read_log(file) if r["event"] == "result" and r["recipient"] == "r002"]
    refused = result["replies"]["gone@example.net"]
    assert (refused["outcome"], refused["code"]) == ("refused", 550)
    assert "no such user" in refused["reply"]
    on_its_way = result["replies"]["r002@example.net"]
    assert on_its_way["outcome"] == "unknown" and "interrupted" in on_its_way["reply"]
    state = replay(log_path(file), "crash-test").state("r002")
    assert {s.address: s.outcome for s in state.addresses} == {
        "r002@example.net": "unknown",
        "gone@example.net": "refused",
    }


def test_after_a_sigkill_the_log_replays_and_the_lock_is_free(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    file = write_small_campaign(tmp_path / "campaign", COUNT)
    server = make_smtp_server(faults=FaultScript(data=nth(STALLED, STALL)))
    kill_mid_run(file, server)
    history = replay(log_path(file), "crash-test")
    assert history.notes == [] or "cut short" in history.notes[0]
    attempted = [rid for rid, state in history.recipients.items() if state.attempts]
    assert len(attempted) >= len(server.messages)
    stalled = server.messages[STALLED - 1].rcpt_tos[0].split("@")[0]
    assert history.recipients[stalled].status() == "unknown"
    assert LogLock(log_path(file)).held_by_other() is None


# ---- a torn last line ---------------------------------------------------------------------


def tear_last_line(path: Path, keep: int) -> bytes:
    """Cut the log `keep` bytes into its last line (as a crash mid-write would); the tail lost."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[: start + keep]
    path.write_bytes(torn)
    return data[start:]


def test_a_torn_last_line_is_tolerated_and_repaired(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server, "--only", "president").status == 0
    lost = tear_last_line(log_path(file), keep=25)
    assert b'"event":"run-end"' in lost
    run = send(file, smtp_server)
    assert run.status == 0, run.stderr
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages).count("aprk@akorda.kz") == 1
    assert len(smtp_server.messages) == 6
    lines = log_path(file).read_bytes().split(b"\n")
    [torn] = [n for n, line in enumerate(lines) if line and not line.endswith(b"}")]
    assert lines[torn] == lost[:25]
    assert b'"event":"log-repaired"' in lines[torn + 1]
    history = replay(log_path(file), "kz-open-letter-2017-10")
    assert any("cut short" in note for note in history.notes)
    assert all(state.status() == "sent" for state in history.recipients.values())


@pytest.mark.parametrize(
    "after",
    [b"\n", b"\n\n", b"\r\n\r\n", b"\n \n\t\n"],
    ids=["one line end", "a blank line too", "crlf blank line", "spaces and tabs"],
)
def test_a_torn_last_line_an_editor_ended_is_repaired_not_left_to_brick_the_log(
    tmp_path: Path, smtp_server: SmtpServer, after: bytes
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server, "--only", "president").status == 0
    lost = tear_last_line(log_path(file), keep=25)
    torn_line = log_path(file).read_bytes().count(b"\n") + 1
    with open(log_path(file), "ab") as log:
        log.write(after)  # saved in an editor, which ends the last line
    run = send(file, smtp_server)
    assert run.status == 0, run.stderr
    assert len(smtp_server.messages) == 6
    lines = log_path(file).read_bytes().split(b"\n")
    assert lines[torn_line - 1].rstrip(b"\r") == lost[:25]
    repaired = [json.loads(line) for line in lines if b'"event":"log-repaired"' in line]
    assert [r["torn_line"] for r in repaired] == [torn_line]
    assert run_cli(file, "log").status == 0
    again = send(file, smtp_server, "--dry-run")
    assert again.status == 0, again.stderr
    assert "0 letters to 0 addresses skipped 6 sent" in again.out
    history = replay(log_path(file), "kz-open-letter-2017-10")
    assert any(f"line {torn_line} was cut short" in note for note in history.notes)
    assert all(state.status() == "sent" for state in history.recipients.values())


def test_a_torn_last_line_does_not_stop_a_run_with_nothing_to_send(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server).status == 0
    tear_last_line(log_path(file), keep=25)
    run = send(file, smtp_server)
    assert run.status == 0, run.stderr
    assert "Nothing to send" in run.out
    assert len(smtp_server.messages) == 6


def test_a_torn_result_line_leaves_its_recipient_unknown_not_resent(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server, "--concurrency", "1").status == 0
    path = log_path(file)
    # Drop the run-end record, then tear the last result (the ombudsman's) in the middle.
    records = path.read_bytes().splitlines(keepends=True)
    assert b'"event":"run-end"' in records[-1] and b'"recipient":"ombudsman"' in records[-2]
    path.write_bytes(b"".join(records[:-2]) + records[-2][:40])
    run = send(file, smtp_server, "--concurrency", "1")
    assert run.status == 1
    assert "1 recipient(s) are unknown" in run.out
    assert len(smtp_server.received_by("info@ombudsman.kz")) == 1
    assert len(smtp_server.messages) == 6
    history = replay(path, "kz-open-letter-2017-10")
    assert history.recipients["ombudsman"].status() == "unknown"
    assert all(
        state.status() == "sent" for rid, state in history.recipients.items() if rid != "ombudsman"
    )


def test_a_log_damaged_before_its_last_line_is_refused(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server, "--only", "president").status == 0
    path = log_path(file)
    records = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([records[0], b'{"event": "attempt", broken\n', *records[1:]]))
    run = send(file, smtp_server)
    assert run.status == 2
    assert "line 2 is not a valid JSON record" in run.err
    assert len(smtp_server.messages) == 1


def test_a_run_logs_start_plan_attempt_result_end_in_order(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    file = copy_bundled(tmp_path / "campaign")
    assert send(file, smtp_server, "--only", "ombudsman").status == 0
    assert [r["event"] for r in read_log(file)] == [
        "run-start",
        *["planned"] * 6,  # every recipient's letter is recorded, not only the one sent
        "attempt",
        "result",
        "run-end",
    ]
