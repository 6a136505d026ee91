"""Headless Chromium driven over the DevTools protocol on a pipe, for tests of what a person sees.

Debian's `chromium` is started with `--remote-debugging-pipe`: it reads commands on its fd 3 and
writes answers and events on its fd 4, each a JSON object ended by a NUL byte. That needs no
WebSocket, no driver and no library, and every event (console messages, exceptions, requests,
dialogs) is recorded as it comes. The network is closed here: the flags keep Chromium's own
background connections (updates, sync, field trials) from being attempted at all.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

INSTALL_HINT = "chromium is not installed: run .ci/install-tools (as root) first"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--window-size=1280,1000",
    "--remote-debugging-pipe",
)


def chromium_path() -> str | None:
    return shutil.which("chromium")


class BrowserError(Exception):
    """Chromium answered with an error, went away, or did not answer in time."""


class Chromium:
    """One headless browser with a fresh profile; `open(url)` gives a new tab."""

    def __init__(self, profile: Path, executable: str) -> None:
        self.profile = profile
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self._to_browser = -1
        self._from_browser = -1
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def start(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        commands_read, commands_write = os.pipe()
        events_read, events_write = os.pipe()
        # bash puts the pipe ends on fds 3 and 4 in the child (dash allows one-digit fds only).
        child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(events_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_read)
        os.close(events_write)
        script = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        argv = [
            "/bin/bash",
            "-c",
            script,
            self.executable,
            *FLAGS,
            f"--user-data-dir={self.profile / 'profile'}",
            "about:blank",
        ]
        with open(self.profile / "chromium.log", "wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(child_in, child_out),
                start_new_session=True,
            )
        os.close(child_in)
        os.close(child_out)
        self._to_browser, self._from_browser = commands_write, events_read
        self.call("Browser.getVersion", timeout=30)
        return self

    def close(self) -> None:
        process = self.process
        if process is None:
            return
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the protocol

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer, recording the events that come first."""
        self._next_id += 1
        number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while number not in self._replies:
            self._receive(deadline, method)
        reply = self._replies.pop(number)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_for(
        self, methods: tuple[str, ...], session: str, *, since: int = 0, timeout: float = 60
    ) -> dict[str, Any]:
        """The first event of `session` named in `methods`, recorded at or after `since`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if event.get("method") in methods and event.get("sessionId") == session:
                    return event
            since = len(self.events)
            self._receive(deadline, " or ".join(methods))

    def _receive(self, deadline: float, waiting_for: str) -> None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise BrowserError(f"no answer from chromium in time (waiting for {waiting_for})")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium went away; see {self.profile / 'chromium.log'}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "id" in message:
            self._replies[message["id"]] = message
        else:
            self.events.append(message)

    # ---- tabs

    def open(self, url: str, *, timeout: float = 60) -> Page:
        """A new tab that records everything, loads `url` and waits for its load event.

        A dialog (`alert`) holds the load back: its opening ends the wait instead.
        """
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        mark = len(self.events)
        page.first_event = mark
        self.call("Page.navigate", {"url": url}, session=session)
        done = ("Page.loadEventFired", "Page.javascriptDialogOpening")
        self.wait_for(done, session, since=mark, timeout=timeout)
        return page


class Page:
    """One tab: what it logged, requested and shows."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.first_event = 0

    def _events(self, *methods: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.browser.events[self.first_event :]
            if event.get("sessionId") == self.session and event.get("method") in methods
        ]

    @property
    def requests(self) -> list[str]:
        """The URL of every request the page made, the page itself included."""
        return [e["params"]["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    @property
    def blocked(self) -> dict[str, str]:
        """URL -> why the browser stopped the request before it left (e.g. `csp`)."""
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self._events("Network.requestWillBeSent")
        }
        return {
            urls.get(e["params"]["requestId"], "?"): e["params"]["blockedReason"]
            for e in self._events("Network.loadingFailed")
            if e["params"].get("blockedReason")
        }

    @property
    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, browser log errors, dialogs."""
        found = []
        for event in self._events(
            "Runtime.consoleAPICalled",
            "Runtime.exceptionThrown",
            "Log.entryAdded",
            "Page.javascriptDialogOpening",
            "Network.loadingFailed",
        ):
            method, params = event["method"], event["params"]
            if method == "Runtime.consoleAPICalled":
                if params["type"] in ("error", "assert", "warning"):
                    args = params["args"]
                    texts = [str(arg.get("value", arg.get("description"))) for arg in args]
                    found.append(f"console.{params['type']}: {' '.join(texts)}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded":
                entry = params["entry"]
                if entry["level"] in ("error", "warning"):
                    found.append(f"log {entry['level']}: {entry.get('text')} {entry.get('url')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
            else:
                found.append(f"request failed: {params}")
        return found

    def evaluate(self, expression: str) -> Any:
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        result = self.browser.call(
            "Page.captureScreenshot", {"format": "png"}, session=self.session
        )
        return base64.b64decode(result["data"])

    def pdf(self) -> bytes:
        result = self.browser.call(
            "Page.printToPDF",
            {"printBackground": True, "preferCSSPageSize": True},
            session=self.session,
            timeout=120,
        )
        return base64.b64decode(result["data"])

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.browser.call("Target.closeTarget", {"targetId": self.target})


# ---- reading what the browser produced ------------------------------------------------------


def png_colours(data: bytes) -> set[tuple[int, ...]]:
    """The distinct pixel colours of an 8-bit RGB or RGBA PNG (as Chromium writes them)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(idat))
    previous = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, channels)
        pixels = bytes(line)
        colours.update(
            tuple(pixels[i : i + channels]) for i in range(0, stride, channels * 4)
        )  # every fourth pixel: plenty to tell a page from a blank one
        previous = line
    return colours


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    if kind == 0:
        return
    if kind == 2:
        for i in range(len(line)):
            line[i] = (line[i] + previous[i]) & 0xFF
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            estimate = left + up - corner
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            best = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            line[i] = (line[i] + best) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter {kind}")


def pdf_pages(data: bytes) -> int:
    """How many page objects a PDF holds (Chromium's PDFs keep them uncompressed)."""
    import re

    assert data.startswith(b"%PDF-"), "not a PDF"
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data)]
    if counts:
        assert max(counts) == pages, (counts, pages)
    return pages
