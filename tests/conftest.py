"""Shared pytest fixtures: a real SMTP test server (see tests/smtp_server.py)."""

import pathlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from smtp_server import SmtpServer, TlsFiles, make_tls


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server on 127.0.0.1 (no TLS, no AUTH, no faults)."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def make_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Factory: ``make_smtp_server(**SmtpServer options)`` -> a started server.

    Every server it made is stopped when the test ends.
    """
    started: list[SmtpServer] = []

    def factory(**options: Any) -> SmtpServer:
        server = SmtpServer(**options).start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture
def smtp_tls(tmp_path: pathlib.Path) -> TlsFiles:
    """A fresh trustme CA + server context for 127.0.0.1/localhost; CA PEM in tmp_path."""
    return make_tls(tmp_path)
