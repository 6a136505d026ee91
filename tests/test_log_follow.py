"""`campaign log --follow` and a live run (issue 5): real processes beside a real `campaign send`.

The follower and the sender are separate `python -m campaign` processes, as in two terminals;
stdout is a pipe (not a terminal), so the follower prints one line of counts per change.
Every send goes to the loopback test server only.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from log_helpers import (
    STATUS_WORDS,
    campaign,
    json_rows,
    queued_replies,
    send,
    subprocess_environ,
)
from send_helpers import copy_bundled
from smtp_server import STALL, FaultScript, SmtpServer

CAMPAIGN_ID = "kz-open-letter-2017-10"
PROGRESS = re.compile(r"^\d\d:\d\d:\d\d (?P<counts>.+)$")
COUNT = re.compile(r"(\d+) (" + "|".join(STATUS_WORDS) + r")\b")


def is_progress(line: str) -> bool:
    return PROGRESS.match(line) is not None


def counts(line: str) -> dict[str, int]:
    match = PROGRESS.match(line)
    assert match is not None, f"not a progress line: {line!r}"
    found = {status: int(n) for n, status in COUNT.findall(match["counts"])}
    assert sum(found.values()) == 6, line  # every recipient of the campaign, each once
    return found


def _sigint_as_usual() -> None:
    # A child inherits an ignored SIGINT (e.g. from a background shell); Python then never
    # raises KeyboardInterrupt. Restore the default so the child installs its own handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(
    cwd: Path,
    *argv: str | Path,
    environ: dict[str, str],
    stdout: int | IO[str] = subprocess.PIPE,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "campaign", *(str(a) for a in argv)],
        cwd=cwd,
        env=environ,
        stdout=stdout,
        stderr=subprocess.PIPE if stdout == subprocess.PIPE else subprocess.STDOUT,
        text=True,
        preexec_fn=_sigint_as_usual,
    )


class Lines:
    """A child's stdout read line by line in a thread, so every wait has a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, wanted: Callable[[str], bool], timeout: float) -> str:
        """The first line from now on for which `wanted` holds."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line in {timeout} s; seen: {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended; seen: {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def rest(self, timeout: float = 10) -> list[str]:
        """Whatever else the child printed, once its stdout is closed."""
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.seen.append(line)
        return self.seen


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still running at the end is killed (by its own handle)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_follow_shows_progress_while_a_send_runs(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    file = copy_bundled(tmp_path / "c")
    with SmtpServer(faults=FaultScript(data=queued_replies("QF"))) as server:
        follower = start(
            file.parent, "--file", file, "log", "--follow", "--interval", "0.2",
            environ=subprocess_environ(),
        )  # fmt: skip
        processes.append(follower)
        assert follower.stdout is not None and follower.stderr is not None
        lines = Lines(follower.stdout)
        # Started before any log exists: everybody pending.
        assert counts(lines.until(is_progress, 30)) == {"pending": 6}
        with open(tmp_path / "send.out", "w", encoding="utf-8") as send_out:
            # 120 a minute: one message every 0.5 s, so the whole run takes about 2.5 s.
            sender = start(
                file.parent, "--file", file, "send", "--yes", "--rate", "120",
                environ=subprocess_environ(server), stdout=send_out,
            )  # fmt: skip
            processes.append(sender)
            final = lines.until(lambda line: counts(line).get("sent") == 6, 60)
            assert sender.wait(30) == 0, (tmp_path / "send.out").read_text()
        assert len(server.messages) == 6
        follower.send_signal(signal.SIGINT)
        status = follower.wait(10)
        seen = lines.rest()
        stderr = follower.stderr.read()
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert counts(final) == {"sent": 6}
    progress = [counts(line) for line in seen]
    before_final = progress[: seen.index(final)]
    partway = [c for c in before_final if 0 < c.get("sent", 0) < 6]
    assert partway, f"no progress shown before the end: {seen}"
    sent_counts = [c.get("sent", 0) for c in progress]
    assert sent_counts == sorted(sent_counts)  # it only ever goes forward
    assert seen[-1] == final  # a line per change: nothing changed after the last letter


def test_log_tells_a_live_run_from_one_that_was_killed(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    file = copy_bundled(tmp_path / "c")
    with SmtpServer(faults=FaultScript(data=STALL)) as server:  # takes the data, never answers
        with open(tmp_path / "send.out", "w", encoding="utf-8") as send_out:
            sender = start(
                file.parent, "--file", file, "send", "--yes", "--only", "ombudsman",
                "--timeout", "60", environ=subprocess_environ(server), stdout=send_out,
            )  # fmt: skip
        processes.append(sender)
        server.wait_for(1, timeout=30)
        live = campaign(file, "log", "--json")
        table = campaign(file, "log")
        sender.kill()  # a crash while waiting for the server's answer
        sender.wait(10)
    assert live.status == 0, live.stderr
    statuses = {obj["recipient"]: obj["status"] for obj in json_rows(live)}
    assert statuses["ombudsman"] == "sending"
    assert f"a run is in progress: pid {sender.pid}, campaign send of {CAMPAIGN_ID}" in table.out

    dead = campaign(file, "log", "--json")
    assert dead.status == 0, dead.stderr
    [obj] = [o for o in json_rows(dead) if o["recipient"] == "ombudsman"]
    assert obj["status"] == "unknown"
    assert obj["attempts"] == 1
    assert "next: 1 unknown: check with the server's operator" in campaign(file, "log").out


@pytest.fixture
def sent_log(tmp_path: Path) -> Path:
    """The bundled campaign sent in full to the loopback server; returns the campaign file."""
    file = copy_bundled(tmp_path / "c")
    with SmtpServer() as server:
        run = send(file, server)
    assert run.status == 0, run.stdout + run.stderr
    return file


def test_follow_of_a_finished_log_with_a_torn_tail(
    sent_log: Path, processes: list[subprocess.Popen[str]]
) -> None:
    log = sent_log.parent / "outbox" / "send-log.jsonl"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"time":"2024-01-02T03:04:05.000+00:00","event":"atte')
    follower = start(
        sent_log.parent, "--file", sent_log, "log", "--follow", "--interval", "0.2",
        environ=subprocess_environ(),
    )  # fmt: skip
    processes.append(follower)
    assert follower.stdout is not None and follower.stderr is not None
    lines = Lines(follower.stdout)
    assert counts(lines.until(is_progress, 30)) == {"sent": 6}
    follower.send_signal(signal.SIGINT)
    assert follower.wait(10) == 0
    stderr = follower.stderr.read()
    assert "Traceback" not in stderr
    assert [counts(line) for line in lines.rest()] == [{"sent": 6}]  # nothing changed, one line


def _other_campaign_file(file: Path) -> tuple[Path, str]:
    text = file.read_text(encoding="utf-8")
    other = file.with_name("other.yaml")
    other.write_text(text.replace(f'id: "{CAMPAIGN_ID}"', 'id: "another-letter"'), "utf-8")
    return other, f"this log was written for campaign '{CAMPAIGN_ID}', not 'another-letter'"


def _bad_line(file: Path) -> tuple[Path, str]:
    log = file.parent / "outbox" / "send-log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(3, "not json at all\n")
    log.write_text("".join(lines), encoding="utf-8")
    return file, "line 4 is not a valid JSON record; the log may have been edited by hand"


@pytest.mark.parametrize("breaks", [_other_campaign_file, _bad_line], ids=["other", "bad-line"])
def test_follow_explains_a_log_it_cannot_read(
    sent_log: Path, breaks: Callable[[Path], tuple[Path, str]]
) -> None:
    file, message = breaks(sent_log)
    done = subprocess.run(
        [sys.executable, "-m", "campaign", "--file", str(file), "log", "--follow"],
        cwd=file.parent,
        env=subprocess_environ(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    err = " ".join(done.stderr.split())
    assert err.startswith("error: ")
    assert message in err
