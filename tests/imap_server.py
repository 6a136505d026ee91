"""A real IMAP server for tests: pymap with its in-memory `dict` backend, on 127.0.0.1.

It runs in a background thread with its own event loop, on port 0, with one user. TLS is
implicit (`security="tls"`, like port 993) or offered by STARTTLS (`"starttls"`, like 143),
with a certificate from the test CA of `smtp_server.make_tls`::

    with ImapServer(tls=tls_files, messages=[bounce, reply]) as server:
        settings = server.settings(ca_file=tls_files.ca_file)
        ...
        assert server.flags() == [frozenset(), frozenset()]  # nothing marked \\Seen

Test code may look at and change the mailboxes directly (`append`, `flags`, `count`,
`delete_folder`, `drop_connections`): each call runs on the server's loop.
"""

from __future__ import annotations

import asyncio
import threading
from argparse import Namespace
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config, Login
from pymap.concurrent import Subsystem
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.parsing.specials.flag import Flag
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import BuiltinHash
from smtp_server import TlsFiles

from campaign.mailsource import ImapSettings

HOST = "127.0.0.1"
T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """One message as the server holds it."""

    uid: int
    flags: frozenset[str]
    internal_date: datetime
    recent: bool


class _QuietConfig(Config):
    @property
    def greeting(self) -> bytes:  # pymap would look up this host's FQDN for every connection
        return b"Server ready imap.example.org"


class ImapServer:
    def __init__(
        self,
        *,
        tls: TlsFiles | None,
        security: str = "tls",
        username: str = "campaigner@example.org",
        password: str = "letter-pass",
        messages: Sequence[bytes | tuple[bytes, datetime]] = (),
        folders: Sequence[str] = (),
    ) -> None:
        if security not in ("tls", "starttls", "none"):
            raise ValueError(security)
        if security != "none" and tls is None:
            raise ValueError("TLS needs tls=make_tls(tmp_path)")
        self.security = security
        self.tls = tls
        self.username = username
        self.password = password
        self.port = 0
        self._initial = list(messages)
        self._folders = list(folders)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._config: Config | None = None
        self._mailboxes: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ImapServer:
        self._thread = threading.Thread(target=self._run, name="pymap-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the pymap test server did not start within 15 s")
        if self._failure is not None:
            raise RuntimeError("the pymap test server failed to start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ImapServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, *, ca_file: Path | None = None, **changes: Any) -> ImapSettings:
        """Client settings for this server (the test CA unless `ca_file` says otherwise)."""
        values: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "security": self.security,
            "username": self.username,
            "password": self.password,
            "ca_file": ca_file if ca_file is not None else (self.tls.ca_file if self.tls else None),
            "folder": "INBOX",
        }
        values.update(changes)
        return ImapSettings(**values)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported to start(), which waits on _ready
            self._failure = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        args = Namespace(proxy_protocol=None, passlib_cfg=None)
        server_context = self.tls.server_context if self.tls else None
        config = _QuietConfig(
            args,
            host=HOST,
            port=0,
            ssl_context=server_context,
            tls_enabled=self.security == "starttls",
            hash_context=BuiltinHash(rounds=1000),  # fast logins; this is a test server
            cpu_subsystem=Subsystem.for_asyncio(),
            invalid_user_sleep=0.0,
            reject_dnsbl=False,
            demo_data=False,
            demo_user=self.username,
            demo_password=self.password,
        )
        config.apply_context()
        self._config = config
        login = Login(config)
        identity = login.demo_user_identity
        hashed = await Passwords(config).hash_password(self.password)
        await identity.set(UserMetadata(config, self.username, password=hashed))
        async with identity.new_session() as session:
            self._mailboxes = session.mailbox_set
        for name in self._folders:
            await self._mailboxes.add_mailbox(name)
        for item in self._initial:
            data, when = item if isinstance(item, tuple) else (item, None)
            await self._append("INBOX", data, when)

        imap = IMAPServer(login, config)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(imap)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # pymap's callback starts the session as a task of its own and returns at once.
            self._writers = {w for w in self._writers if not w.is_closing()} | {writer}
            await callback(reader, writer)

        self._server = await asyncio.start_server(
            on_connect, HOST, 0, ssl=server_context if self.security == "tls" else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)

    # -- looking at and changing the mailboxes -----------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None and self._config is not None
        config = self._config

        async def in_context() -> T:
            config.apply_context()  # pymap's objects look up their subsystem in a ContextVar
            return await coro

        future: Future[T] = asyncio.run_coroutine_threadsafe(in_context(), self._loop)
        return future.result(10)

    async def _append(self, folder: str, data: bytes, when: datetime | None) -> None:
        box = await self._mailboxes.get_mailbox(folder)
        # Delivered mail is \Recent until a session SELECTs the folder (EXAMINE leaves it).
        await box.append(AppendMessage(data, when or datetime.now(UTC), frozenset()), recent=True)

    def append(self, data: bytes, *, when: datetime | None = None, folder: str = "INBOX") -> None:
        self._call(self._append(folder, data, when))

    def stored(self, folder: str = "INBOX") -> list[Stored]:
        """The folder's messages as the server holds them, by UID."""

        async def read() -> list[Stored]:
            box = await self._mailboxes.get_mailbox(folder)
            found = [
                Stored(
                    msg.uid,
                    frozenset(bytes(flag).decode() for flag in msg.permanent_flags),
                    msg.internal_date,
                    msg.recent,
                )
                async for msg in box.messages()
                if not msg.expunged
            ]
            return sorted(found, key=lambda s: s.uid)

        return self._call(read())

    def flags(self, folder: str = "INBOX") -> list[frozenset[str]]:
        return [message.flags for message in self.stored(folder)]

    def count(self, folder: str = "INBOX") -> int:
        return len(self.stored(folder))

    def delete_folder(self, folder: str) -> None:
        self._call(self._mailboxes.delete_mailbox(folder))

    def drop_connections(self) -> None:
        """Close every client connection now, as a server that goes away would."""

        async def drop() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(drop())


SEEN = bytes(Flag(b"\\Seen")).decode()
