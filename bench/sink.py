"""A minimal, fast loopback SMTP sink for the benchmark.

It accepts every message, counts messages and bytes per envelope recipient, and
afterwards tells whether every expected address got exactly one message.

* ESMTP with PIPELINING, 8BITMIME, SMTPUTF8 and SIZE; HELO, EHLO, MAIL, RCPT,
  DATA (dot-unstuffed for the byte count), RSET, NOOP, VRFY, QUIT.
* Pipelining: every complete line in the read buffer is answered in order and
  the replies of one read are written in a single `write`.
* Latency mode (`latency` seconds > 0) models a server across the internet:
  every reply leaves at least `latency` seconds after the command it answers
  arrived (the 220 greeting too, counted from the accept). Replies to commands
  that arrived in the same read share one delay, as a pipelined group sent in
  one packet costs one round trip; a per-connection queue keeps their order.
  Messages are counted when their final dot arrives, before the delayed reply.
* Bounded: command lines longer than 8 KiB and messages larger than SIZE are
  refused and the connection closed; the subprocess mode stops by itself
  after `--max-seconds`.
* Provider mode (`provider=ProviderLimits(...)`, or `--provider-rate`) models a
  real relay's limits, per client address: a message rate as a token bucket
  (`per_minute`, `burst`; a token is taken at MAIL), and at most
  `max_connections` connections at once. Beyond them it answers as relays do,
  with configurable replies: the greeting of a connection too many (default
  `421 4.7.0 Too many concurrent connections`, then it closes) and MAIL without
  a token (default `451 4.7.1 rate limited, try again later`; a 421 reply also
  closes the connection). It counts MAIL commands and refusals of both kinds.

In-process use::

    async with SmtpSink(latency=0.0) as sink:   # sink.port is the bound port
        ...
    report = sink.verify(expected_addresses)

As a separate process (so that it does not share a GIL with the client that is
being measured)::

    python bench/sink.py --port 0 --latency 0.025 --report-file counts.json
    # first line on stdout: the port; on SIGTERM/SIGINT it writes the counts
    # (see SinkCounts.to_json) to --report-file and exits 0.
    python bench/sink.py --provider-rate 600 --provider-burst 20 --provider-connections 2 \
        --provider-mail-reply "450 4.7.1 too much mail" --report-file counts.json

`SinkProcess` wraps that for Python callers. The sink's own ceiling::

    python bench/sink.py ceiling --connections 8 --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

HOST = "127.0.0.1"
MAX_LINE = 8192
MAX_MESSAGE = 64 * 1024 * 1024
_END = b"\r\n.\r\n"
_EMPTY = b".\r\n"


# --------------------------------------------------------------------------- counts


@dataclass
class VerifyReport:
    """What `verify` found: ok only when every expected address got exactly one message."""

    expected: int
    received_addresses: int
    total_messages: int
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected)

    def summary(self, limit: int = 5) -> str:
        if self.ok:
            return f"ok: {self.expected} addresses, one message each"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[:limit]})")
        if self.duplicates:
            some = dict(list(self.duplicates.items())[:limit])
            parts.append(f"{len(self.duplicates)} with more than one message (e.g. {some})")
        if self.unexpected:
            some = dict(list(self.unexpected.items())[:limit])
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {some})")
        return "FAILED: " + "; ".join(parts)

    def to_dict(self, limit: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "expected": self.expected,
            "received_addresses": self.received_addresses,
            "total_messages": self.total_messages,
            "missing_count": len(self.missing),
            "duplicate_count": len(self.duplicates),
            "unexpected_count": len(self.unexpected),
            "missing": self.missing[:limit],
            "duplicates": dict(list(self.duplicates.items())[:limit]),
            "unexpected": dict(list(self.unexpected.items())[:limit]),
        }


@dataclass
class SinkCounts:
    """Per envelope recipient (lower-cased): [messages, bytes]; plus totals."""

    per_recipient: dict[str, list[int]] = field(default_factory=dict)
    total_messages: int = 0
    total_bytes: int = 0
    connections: int = 0
    max_concurrent: int = 0
    protocol_errors: int = 0
    mail_commands: int = 0  # every MAIL command, accepted or refused
    refused_mail: int = 0  # provider mode: MAIL refused for the rate
    refused_connections: int = 0  # provider mode: connections refused at the greeting

    def messages_for(self, address: str) -> int:
        entry = self.per_recipient.get(address.lower())
        return entry[0] if entry else 0

    def bytes_for(self, address: str) -> int:
        entry = self.per_recipient.get(address.lower())
        return entry[1] if entry else 0

    def verify(self, expected: Iterable[str]) -> VerifyReport:
        """Every expected address exactly one message; nothing else received."""
        wanted: set[str] = set()
        for address in expected:
            wanted.add(address.lower())
        got = self.per_recipient
        missing = sorted(a for a in wanted if a not in got)
        duplicates = {a: got[a][0] for a in sorted(wanted) if a in got and got[a][0] != 1}
        unexpected = {a: e[0] for a, e in sorted(got.items()) if a not in wanted}
        return VerifyReport(
            expected=len(wanted),
            received_addresses=len(got),
            total_messages=self.total_messages,
            missing=missing,
            duplicates=duplicates,
            unexpected=unexpected,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "total_messages": self.total_messages,
            "total_bytes": self.total_bytes,
            "connections": self.connections,
            "max_concurrent": self.max_concurrent,
            "protocol_errors": self.protocol_errors,
            "mail_commands": self.mail_commands,
            "refused_mail": self.refused_mail,
            "refused_connections": self.refused_connections,
            "per_recipient": self.per_recipient,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SinkCounts:
        return cls(
            per_recipient={k: list(v) for k, v in data["per_recipient"].items()},
            total_messages=data["total_messages"],
            total_bytes=data["total_bytes"],
            connections=data["connections"],
            max_concurrent=data["max_concurrent"],
            protocol_errors=data.get("protocol_errors", 0),
            mail_commands=data.get("mail_commands", 0),
            refused_mail=data.get("refused_mail", 0),
            refused_connections=data.get("refused_connections", 0),
        )


# --------------------------------------------------------------------------- provider mode


def _reply_line(text: str) -> bytes:
    """A configured reply as one CRLF-terminated line: '451 4.7.1 rate limited'."""
    line = text.strip().encode("ascii")
    if len(line) < 4 or not line[:3].isdigit() or line[:1] not in b"45" or line[3:4] != b" ":
        raise ValueError(f"a refusal must look like '451 4.7.1 text', not {text!r}")
    if b"\r" in line or b"\n" in line or len(line) > 500:
        raise ValueError(f"a refusal must be one line of at most 500 characters: {text!r}")
    return line + b"\r\n"


@dataclass(frozen=True)
class ProviderLimits:
    """What provider mode enforces per client address, and how it says no."""

    per_minute: float  # the token bucket's rate
    burst: int  # and its size (it starts full)
    max_connections: int = 0  # at once; 0: no limit
    greeting_reply: str = "421 4.7.0 Too many concurrent connections"
    mail_reply: str = "451 4.7.1 rate limited, try again later"

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1 or self.max_connections < 0:
            raise ValueError("provider limits: rate > 0, burst >= 1, connections >= 0")
        _reply_line(self.greeting_reply)
        _reply_line(self.mail_reply)

    def ideal_seconds(self, messages: int) -> float:
        """N / rate: the time the issue's target compares with."""
        return messages * 60.0 / self.per_minute

    def to_argv(self) -> list[str]:
        return [
            "--provider-rate",
            repr(self.per_minute),
            "--provider-burst",
            str(self.burst),
            "--provider-connections",
            str(self.max_connections),
            "--provider-greeting-reply",
            self.greeting_reply,
            "--provider-mail-reply",
            self.mail_reply,
        ]


class _Client:
    """One client address's share of the provider's limits: its bucket and its sessions."""

    def __init__(self, limits: ProviderLimits, now: float) -> None:
        self.rate = limits.per_minute / 60.0
        self.burst = float(limits.burst)
        self.tokens = float(limits.burst)
        self.updated = now
        self.sessions = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------- protocol


def _path(arg: bytes) -> str | None:
    """The address inside <...> of a MAIL/RCPT argument; '' for the null path."""
    start = arg.find(b"<")
    end = arg.find(b">", start + 1)
    if start < 0 or end < 0:
        return None
    return arg[start + 1 : end].decode("utf-8", "replace").lower()


class _Session(asyncio.Protocol):
    """One SMTP connection. All state is plain attributes; no regexes, no per-line objects."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.counts = sink.counts
        self.latency = sink.latency
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.in_data = False
        self.scan = 0  # where to resume looking for the end of DATA, relative to data start
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.closing = False
        self.pending: deque[tuple[float, bytes, bool]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.client: _Client | None = None  # provider mode: this client's limits

    # -- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        counts = self.counts
        limits = self.sink.provider
        if limits is not None:
            peer = self.transport.get_extra_info("peername")
            client = self.sink._client(str(peer[0]) if peer else "?")
            if limits.max_connections and client.sessions >= limits.max_connections:
                counts.refused_connections += 1
                self.closing = True
                self._send(self.sink.greeting_refusal, True)
                return
            client.sessions += 1
            self.client = client
        counts.connections += 1
        self.sink._sessions.add(self)
        if len(self.sink._sessions) > counts.max_concurrent:
            counts.max_concurrent = len(self.sink._sessions)
        self._send(b"220 " + self.sink.hostname + b" ESMTP bench sink ready\r\n", False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.sessions -= 1
            self.client = None
        self.sink._sessions.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()
        self.transport = None

    # -- output, with the optional delay

    def _send(self, data: bytes, close: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.latency <= 0:
            transport.write(data)
            if close:
                transport.close()
            return
        due = self.loop.time() + self.latency
        self.pending.append((due, data, close))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        now = self.loop.time()
        pending = self.pending
        out: list[bytes] = []
        close = False
        while pending and pending[0][0] <= now + 1e-6:
            _, data, close_after = pending.popleft()
            out.append(data)
            if close_after:
                close = True
                pending.clear()
                break
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()
        elif pending:
            self.timer = self.loop.call_at(pending[0][0], self._flush)

    # -- input

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        close = False
        counts = self.counts
        while pos < n:
            if self.in_data:
                if buf.startswith(_EMPTY, pos):
                    size = 0
                    nxt = pos + 3
                else:
                    i = buf.find(_END, pos + self.scan)
                    if i < 0:
                        if n - pos > MAX_MESSAGE:
                            out.append(b"552 5.3.4 message too big\r\n")
                            counts.protocol_errors += 1
                            close = True
                            pos = n
                            break
                        self.scan = max(0, n - pos - 4)
                        break
                    end = i + 2  # keep the CRLF of the last line
                    size = end - pos
                    if size >= 2:
                        size -= buf.count(b"\r\n..", pos, end)
                        if buf.startswith(b"..", pos):
                            size -= 1
                    nxt = i + 5
                    if self.sink.keep_messages:
                        body = bytes(buf[pos:end])
                        if body.startswith(b".."):
                            body = body[1:]
                        body = body.replace(b"\r\n..", b"\r\n.")
                        self.sink.messages.append((self.mail_from or "", tuple(self.rcpts), body))
                counts.total_messages += 1
                counts.total_bytes += size
                per = counts.per_recipient
                for rcpt in self.rcpts:
                    entry = per.get(rcpt)
                    if entry is None:
                        per[rcpt] = [1, size]
                    else:
                        entry[0] += 1
                        entry[1] += size
                out.append(b"250 2.0.0 OK queued\r\n")
                self.in_data = False
                self.scan = 0
                self.mail_from = None
                self.rcpts = []
                pos = nxt
                continue

            i = buf.find(b"\n", pos)
            if i < 0:
                if n - pos > MAX_LINE:
                    out.append(b"500 5.5.2 line too long\r\n")
                    counts.protocol_errors += 1
                    close = True
                    pos = n
                break
            end = i - 1 if i > pos and buf[i - 1] == 13 else i
            line = bytes(buf[pos:end])
            pos = i + 1
            verb = line[:4].upper()
            if verb == b"RCPT":
                if self.mail_from is None:
                    out.append(b"503 5.5.1 need MAIL first\r\n")
                    continue
                if line[4:8].upper() != b" TO:":
                    out.append(b"501 5.5.4 syntax: RCPT TO:<address>\r\n")
                    continue
                address = _path(line[8:])
                if not address:
                    out.append(b"501 5.1.3 bad recipient address\r\n")
                    continue
                self.rcpts.append(address)
                out.append(b"250 2.1.5 OK\r\n")
            elif verb == b"MAIL":
                counts.mail_commands += 1
                if self.mail_from is not None:
                    out.append(b"503 5.5.1 nested MAIL\r\n")
                    continue
                if line[4:10].upper() != b" FROM:":
                    out.append(b"501 5.5.4 syntax: MAIL FROM:<address>\r\n")
                    continue
                address = _path(line[10:])
                if address is None:
                    out.append(b"501 5.1.7 bad sender address\r\n")
                    continue
                if self.client is not None and not self.client.take(self.loop.time()):
                    counts.refused_mail += 1
                    out.append(self.sink.mail_refusal)
                    if self.sink.mail_refusal.startswith(b"421"):
                        close = True  # RFC 5321 3.8: 421 closes the channel
                        break
                    continue
                self.mail_from = address
                self.rcpts = []
                out.append(b"250 2.1.0 OK\r\n")
            elif verb == b"DATA":
                if not self.rcpts:
                    out.append(b"503 5.5.1 need RCPT first\r\n")
                    continue
                out.append(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                self.scan = 0
            elif verb == b"EHLO":
                self.mail_from = None
                self.rcpts = []
                out.append(self.sink.ehlo_reply)
            elif verb == b"HELO":
                self.mail_from = None
                self.rcpts = []
                out.append(b"250 " + self.sink.hostname + b"\r\n")
            elif verb == b"RSET":
                self.mail_from = None
                self.rcpts = []
                out.append(b"250 2.0.0 OK\r\n")
            elif verb == b"NOOP":
                out.append(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 bye\r\n")
                close = True
                break
            elif verb == b"VRFY":
                out.append(b"252 2.5.0 cannot verify\r\n")
            else:
                counts.protocol_errors += 1
                out.append(b"500 5.5.2 command not recognised\r\n")
        if pos:
            del buf[:pos]
        if close:
            self.closing = True
            buf.clear()
        if out:
            self._send(out[0] if len(out) == 1 else b"".join(out), close)
        elif close:
            self._send(b"", True)


class SmtpSink:
    """The sink server. `await start()` binds 127.0.0.1 (port 0 = a free port)."""

    def __init__(
        self,
        host: str = HOST,
        port: int = 0,
        latency: float = 0.0,
        keep_messages: bool = False,
        hostname: str = "sink.bench.invalid",
        provider: ProviderLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = float(latency)
        self.keep_messages = keep_messages
        self.hostname = hostname.encode("ascii")
        self.ehlo_reply = (
            b"250-" + self.hostname + b"\r\n"
            b"250-PIPELINING\r\n"
            b"250-8BITMIME\r\n"
            b"250-SMTPUTF8\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n"
            b"250 SIZE " + str(MAX_MESSAGE).encode() + b"\r\n"
        )
        self.counts = SinkCounts()
        self.messages: list[tuple[str, tuple[str, ...], bytes]] = []
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self.provider = provider
        self.greeting_refusal = _reply_line(provider.greeting_reply) if provider else b""
        self.mail_refusal = _reply_line(provider.mail_reply) if provider else b""
        self._clients: dict[str, _Client] = {}

    def _client(self, address: str) -> _Client:
        client = self._clients.get(address)
        if client is None:
            assert self.provider is not None
            now = asyncio.get_running_loop().time()
            client = self._clients[address] = _Client(self.provider, now)
        return client

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Session(self), self.host, self.port, backlog=1024, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset(self) -> None:
        self.counts = SinkCounts()
        self.messages = []
        for session in self._sessions:
            session.counts = self.counts

    def verify(self, expected: Iterable[str]) -> VerifyReport:
        return self.counts.verify(expected)


# --------------------------------------------------------------------------- helpers


class SinkThread:
    """The sink on its own event loop in a background thread (for synchronous callers)."""

    def __init__(
        self,
        latency: float = 0.0,
        keep_messages: bool = False,
        provider: ProviderLimits | None = None,
    ) -> None:
        self.sink = SmtpSink(latency=latency, keep_messages=keep_messages, provider=provider)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.sink.port

    def __enter__(self) -> SinkThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sink.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sink.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def verify(self, expected: Iterable[str]) -> VerifyReport:
        return self.sink.verify(expected)


class SinkProcess:
    """The sink as a child process: `start()` returns the port, `stop()` returns its counts."""

    def __init__(
        self,
        report_file: Path,
        latency: float = 0.0,
        python: str = sys.executable,
        max_seconds: float = 3600.0,
        provider: ProviderLimits | None = None,
    ) -> None:
        self.report_file = Path(report_file)
        self.latency = latency
        self.provider = provider
        self.python = python
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> int:
        self.report_file.unlink(missing_ok=True)
        argv = [
            self.python,
            str(Path(__file__).resolve()),
            "--port",
            "0",
            "--latency",
            repr(self.latency),
            "--report-file",
            str(self.report_file),
            "--max-seconds",
            repr(self.max_seconds),
            *(self.provider.to_argv() if self.provider is not None else []),
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        line = result[0].strip() if result else ""
        if not line.isdigit():
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise RuntimeError(f"sink did not start (first line {line!r})")
        self.port = int(line)
        return self.port

    def stop(self, timeout: float = 30.0) -> SinkCounts:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError("sink did not stop on SIGTERM") from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self.proc.returncode != 0 or not self.report_file.exists():
            raise RuntimeError(f"sink exited {self.proc.returncode} without a report")
        return SinkCounts.from_json(json.loads(self.report_file.read_text("utf-8")))

    def __enter__(self) -> SinkProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------- ceiling


def synthetic_messages(count: int, size: int = 8192) -> list[tuple[str, list[str], bytes]]:
    """`count` messages of about `size` bytes to distinct addresses (for the ceiling)."""
    line = b"The quick brown fox jumps over the lazy dog; a line of an open letter.\r\n"
    body = line * max(1, size // len(line))
    out = []
    for i in range(count):
        head = (
            f"From: sender@example.org\r\nTo: r{i}@example.com\r\n"
            f"Subject: ceiling {i}\r\nMessage-ID: <c{i}@example.org>\r\n\r\n"
        ).encode()
        out.append(("sender@example.org", [f"r{i}@example.com"], head + body))
    return out


def _stuffed(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def transaction_bytes(sender: str, rcpts: Sequence[str], data: bytes) -> tuple[bytes, int]:
    """One whole pipelined transaction and the number of reply lines it earns."""
    head = [f"MAIL FROM:<{sender}>\r\n".encode()]
    head += [f"RCPT TO:<{r}>\r\n".encode() for r in rcpts]
    head.append(b"DATA\r\n")
    return b"".join(head) + _stuffed(data) + b".\r\n", len(rcpts) + 3


async def push_ceiling(
    port: int,
    messages: Sequence[tuple[str, Sequence[str], bytes]],
    connections: int = 8,
    window: int = 32,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Push pre-built transactions over `connections` pipelined connections; time it.

    The client sends `window` whole transactions (MAIL, RCPT, DATA, content)
    without waiting, then reads their replies. It does not wait for each 354
    (RFC 2920 asks a client to), on purpose: this measures the sink, not round
    trips. Pre-building the bytes happens before the clock starts.
    """
    built = [transaction_bytes(s, r, d) for s, r, d in messages]
    shards = [built[i::connections] for i in range(connections)]
    failures: list[str] = []

    async def read_lines(reader: asyncio.StreamReader, want: int) -> None:
        got = 0
        tail = b"\n"  # a reply starts at a line start
        while got < want:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("sink closed the connection")
            got += chunk.count(b"\n")
            text = tail + chunk
            if b"\n4" in text or b"\n5" in text:
                failures.append(text[:200].decode("ascii", "replace"))
            tail = text[-1:]

    async def one(shard: list[tuple[bytes, int]]) -> None:
        if not shard:
            return
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            await read_lines(reader, 1)
            writer.write(b"EHLO ceiling.invalid\r\n")
            line = b""
            while not line.startswith(b"250 "):
                line = await reader.readline()
                if not line:
                    raise ConnectionError("sink closed during EHLO")
            for start in range(0, len(shard), window):
                group = shard[start : start + window]
                writer.write(b"".join(t for t, _ in group))
                await writer.drain()
                await read_lines(reader, sum(k for _, k in group))
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await read_lines(reader, 1)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(s) for s in shards)), timeout)
    elapsed = time.perf_counter() - start
    nbytes = sum(len(d) for _, _, d in messages)
    return {
        "messages": len(messages),
        "connections": connections,
        "window": window,
        "seconds": elapsed,
        "msgs_per_s": len(messages) / elapsed if elapsed > 0 else float("inf"),
        "mb_per_s": nbytes / elapsed / 1e6 if elapsed > 0 else float("inf"),
        "errors": failures[:5],
    }


def measure_ceiling(
    messages: Sequence[tuple[str, Sequence[str], bytes]],
    connections: int,
    workdir: Path,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Sink in a child process, client here; verified at the sink afterwards."""
    sink = SinkProcess(Path(workdir) / "ceiling-sink.json", python=python, max_seconds=900)
    with sink:
        port = sink.port
        result = asyncio.run(push_ceiling(port, messages, connections=connections))
        counts = sink.stop()
    expected = [r for _, rcpts, _ in messages for r in rcpts]
    report = counts.verify(expected)
    result["verified"] = report.ok and not result["errors"]
    result["verify"] = report.summary()
    return result


# --------------------------------------------------------------------------- CLI


async def _serve(args: argparse.Namespace) -> int:
    provider = None
    if args.provider_rate is not None:
        provider = ProviderLimits(
            per_minute=args.provider_rate,
            burst=args.provider_burst,
            max_connections=args.provider_connections,
            greeting_reply=args.provider_greeting_reply,
            mail_reply=args.provider_mail_reply,
        )
    sink = SmtpSink(port=args.port, latency=args.latency, provider=provider)
    port = await sink.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    await sink.stop()
    if args.report_file:
        path = Path(args.report_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(sink.counts.to_json()), "utf-8")
        os.replace(tmp, path)
    else:
        c = sink.counts
        print(
            f"messages={c.total_messages} bytes={c.total_bytes} connections={c.connections}"
            f" mail={c.mail_commands} refused_mail={c.refused_mail}"
            f" refused_connections={c.refused_connections}"
        )
    return 0


def _ceiling_cli(args: argparse.Namespace) -> int:
    if args.messages_file:
        with open(args.messages_file, "rb") as fh:
            messages = pickle.load(fh)
        messages = messages[: args.messages] if args.messages else messages
    else:
        messages = synthetic_messages(args.messages or 20000, args.size)
    results = []
    for _ in range(args.runs):
        results.append(measure_ceiling(messages, args.connections, Path(args.workdir)))
        r = results[-1]
        print(
            f"sink ceiling: {r['messages']} msgs over {r['connections']} connections in "
            f"{r['seconds']:.2f} s = {r['msgs_per_s']:.0f} msgs/s, {r['mb_per_s']:.1f} MB/s, "
            f"verified={r['verified']}"
        )
    return 0 if all(r["verified"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ceiling"]:
        p = argparse.ArgumentParser(prog="sink.py ceiling", description="the sink's own ceiling")
        p.add_argument("--connections", type=int, default=8)
        p.add_argument("--messages", type=int, default=0, help="count (default 20000 synthetic)")
        p.add_argument("--size", type=int, default=8192, help="synthetic message size")
        p.add_argument("--messages-file", help="pickle of (sender, rcpts, bytes) from baselines")
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--workdir", default=".")
        return _ceiling_cli(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="sink.py", description="loopback SMTP sink (127.0.0.1)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    p.add_argument("--report-file", help="write counts as JSON here on SIGTERM/SIGINT")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this")
    defaults = ProviderLimits(per_minute=1, burst=1)
    g = p.add_argument_group("provider mode", "a relay's limits per client address")
    g.add_argument("--provider-rate", type=float, help="messages per minute (turns it on)")
    g.add_argument("--provider-burst", type=int, default=20, help="token bucket size (20)")
    g.add_argument("--provider-connections", type=int, default=0, help="at once; 0: no limit")
    g.add_argument("--provider-greeting-reply", default=defaults.greeting_reply)
    g.add_argument("--provider-mail-reply", default=defaults.mail_reply)
    args = p.parse_args(argv)
    if args.provider_rate is not None:
        try:
            ProviderLimits(
                args.provider_rate,
                args.provider_burst,
                args.provider_connections,
                args.provider_greeting_reply,
                args.provider_mail_reply,
            )
        except ValueError as err:
            p.error(str(err))
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
