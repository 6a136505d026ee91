"""A real, scriptable SMTP server for tests (aiosmtpd on 127.0.0.1, background thread).

Typical use from a plain (synchronous) pytest test::

    with SmtpServer(faults=FaultScript(rcpt={"b@example.net": [(451, "4.7.1 Greylisted")]})) as srv:
        run_cli(["send", "--port", str(srv.port)])
        srv.wait_for(2)
        assert srv.received_by("b@example.net")[0].data.endswith(b"\\r\\n")

Faults are declared per command kind.  A script is either a *list* of steps, consumed one
per matching command across all connections (then behaviour is normal again), or a single
bare step, applied to *every* matching command.  A step is:

* ``None``                -- behave normally;
* ``(code, "text")``      -- reply with that code.  A ``421`` reply also closes the
  connection (RFC 5321 §3.8), so the client has to reconnect;
* ``DROP``                -- close the TCP connection without replying;
* ``STALL``               -- never reply (the client has to time out).

For DATA, the step applies to the *final* reply, after the whole message was received.
A message is recorded in ``messages`` if the final reply is 2xx, ``DROP`` or ``STALL``
(the server did take it; the client just cannot know); otherwise it goes to ``rejected``.
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import functools
import ssl
import threading
import time
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "DROP",
    "STALL",
    "Action",
    "AuthAttempt",
    "FaultScript",
    "RateLimit",
    "Received",
    "SmtpServer",
    "TlsFiles",
    "make_tls",
    "nth",
]

HOST = "127.0.0.1"


class Action(enum.Enum):
    """Non-reply fault steps."""

    DROP = "drop"  # close the connection without a reply
    STALL = "stall"  # never reply


DROP = Action.DROP
STALL = Action.STALL

Step = tuple[int, str] | Action | None
Script = Step | Sequence[Step]


def nth(n: int, step: Step) -> list[Step]:
    """Script that behaves normally n-1 times, then applies ``step`` once (1-based)."""
    return [None] * (n - 1) + [step]


@dataclass
class FaultScript:
    """Declarative faults; see the module docstring for the step semantics.

    greeting: per connection.  mail: per MAIL FROM.  rcpt: per RCPT TO of that address
    (case-insensitive).  data: per final DATA reply.
    """

    greeting: Script = field(default_factory=list)
    mail: Script = field(default_factory=list)
    rcpt: dict[str, Script] = field(default_factory=dict)
    data: Script = field(default_factory=list)


class _Cursor:
    """Thread-unsafe iterator over one script (callers hold the server lock)."""

    def __init__(self, script: Script) -> None:
        if script is None or isinstance(script, Action) or _is_reply(script):
            self._always: Step = script  # type: ignore[assignment]
            self._steps: list[Step] | None = None
        else:
            self._always = None
            self._steps = list(script)  # type: ignore[arg-type]

    def next(self) -> Step:
        if self._steps is None:
            return self._always
        return self._steps.pop(0) if self._steps else None


def _is_reply(obj: object) -> bool:
    return isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], int)


class Received(NamedTuple):
    """One message the server took (or dropped/stalled after taking)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # message bytes as sent, CRLF line endings, dot-unstuffed, no final "."
    session_id: int  # 1-based connection number
    tls: bool  # connection was encrypted (STARTTLS or implicit) when DATA ended
    peer: Any  # (host, port) of the client
    mail_options: tuple[str, ...] = ()  # e.g. ("BODY=8BITMIME", "SIZE=123"), upper-cased
    auth_user: str | None = None  # login of the session, if it authenticated


class AuthAttempt(NamedTuple):
    """Credentials the server saw; over_tls=False means they crossed the wire in clear."""

    username: str
    password: str
    over_tls: bool


@dataclass(frozen=True)
class RateLimit:
    """A provider's limits, as real relays enforce them per client."""

    per_minute: float  # messages a minute, refilled continuously
    burst: int  # messages let through at once
    connections: int = 2  # at once; beyond: connection_reply at the greeting
    mail_reply: str = "451 4.7.1 Rate limited, try again later"
    connection_reply: str = "421 4.7.0 Too many concurrent connections"


@dataclass(frozen=True)
class TlsFiles:
    """Output of :func:`make_tls`."""

    server_context: ssl.SSLContext
    ca_file: Path  # PEM of the test CA, e.g. for CAMPAIGN_SMTP_CA_FILE

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(tmp_path: Path) -> TlsFiles:
    """Create a trustme CA and a server cert valid for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = Path(tmp_path) / "smtp-test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TlsFiles(server_context=ctx, ca_file=ca_file)


def _is_tls(proto: SMTP) -> bool:
    transport = proto.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


async def _forever() -> None:
    """Wait until cancelled (client disconnects or the server stops)."""
    await asyncio.get_running_loop().create_future()


def _abort(proto: SMTP) -> None:
    """Hang up at once, without a reply (works for plain, STARTTLS and implicit TLS)."""
    if isinstance(proto.transport, asyncio.Transport):
        proto.transport.abort()


class _Protocol(SMTP):
    """aiosmtpd SMTP with session ids, a command log, greeting faults and 421-closes."""

    def __init__(self, owner: SmtpServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner
        self.session_id = 0
        self.auth_user: str | None = None
        # Wrap every smtp_* method so each recognised command is logged.
        self._smtp_methods = {
            verb: self._logged(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _logged(self, verb: str, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapper(arg: str | None) -> None:
            shown = (arg or "").split()[0] if verb == "AUTH" and arg else arg  # no secrets
            self.owner._log(self.session_id, f"{verb} {shown}" if shown else verb)
            await method(arg)

        return wrapper

    async def _handle_client(self) -> None:
        self.session_id = self.owner._new_session(self)
        refusal = self.owner._connection_refusal()
        if refusal is not None:
            await self.push(refusal)  # 421: closes the connection
            return
        step = self.owner._next("greeting")
        if step is STALL:
            await _forever()
        elif step is DROP:
            _abort(self)
        elif isinstance(step, tuple) and step[0] >= 300:
            # Refuse at connect: send the reply and hang up (no QUIT dance).
            await self.push(f"{step[0]} {step[1]}")
            if self.transport is not None:
                self.transport.close()
        else:  # None, or a 2xx step (its text is ignored): normal session
            await super()._handle_client()

    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status.decode() if isinstance(status, bytes) else status
        if text.startswith("421") and self.transport is not None:
            self.transport.close()  # 421 = service closing transmission channel

    async def smtp_AUTH(self, arg: str) -> None:
        # aiosmtpd answers 538 to AUTH before TLS, but an initial response has already
        # crossed the wire in clear by then: record it so tests can catch the leak.
        if arg and self._auth_require_tls and not _is_tls(self):
            self.owner._record_clear_auth(arg)
        await super().smtp_AUTH(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._forget(self)
        super().connection_lost(error)


class _Handler:
    """aiosmtpd handler hooks: apply the fault script and record messages."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # a 5-arg EHLO hook must do this itself
        if self.owner.auth is None:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner._auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        refusal = self.owner._rate_refusal()
        if refusal is not None:
            return refusal
        step = self.owner._next("mail")
        if step is None or (not isinstance(step, Action) and step[0] < 300):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return await _reply(server, step)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        step = self.owner._next("rcpt", address)
        if step is None or (not isinstance(step, Action) and step[0] < 300):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return await _reply(server, step)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, _Protocol)
        step = self.owner._next("data")
        accepted = step is None or isinstance(step, Action) or step[0] < 300
        self.owner._record(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                session_id=server.session_id,
                tls=_is_tls(server),
                peer=session.peer,
                mail_options=tuple(envelope.mail_options),
                auth_user=server.auth_user,
            ),
            accepted=accepted,
        )
        return await _reply(server, step)


async def _reply(proto: SMTP, step: Step) -> str:
    """Turn a step into the status string an aiosmtpd hook returns."""
    if step is None:
        return "250 OK"
    if step is STALL:
        await _forever()
    if step is DROP:
        _abort(proto)
        await _forever()  # cancelled by connection_lost
    code, text = step  # type: ignore[misc]
    return f"{code} {text}"


class SmtpServer:
    """A real SMTP server on 127.0.0.1:<free port>, run in a background thread.

    Use as a context manager (or call start()/stop()).  All recorded state is safe to
    read from the test thread; lists returned are copies.
    """

    def __init__(
        self,
        *,
        starttls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls_context: ssl.SSLContext | None = None,
        auth: dict[str, str] | None = None,
        auth_required: bool | None = None,
        auth_require_tls: bool = True,
        auth_refusal: str | None = None,
        auth_refusal_after: int = 0,
        faults: FaultScript | None = None,
        timeout: float = 300,
        size_limit: int | None = 33_554_432,  # aiosmtpd's own default
        rate_limit: RateLimit | None = None,
    ) -> None:
        """
        starttls_context: offer STARTTLS with this server context.
        require_starttls: answer 530 to anything but EHLO/NOOP/STARTTLS/QUIT before TLS.
        implicit_tls_context: TLS from the first byte (like port 465).
        auth: username -> password; enables AUTH PLAIN/LOGIN (advertised only over TLS
            unless auth_require_tls=False).  auth_required (default: auth is not None)
            makes MAIL/RCPT/DATA answer 530 until authenticated.  auth_refusal: refuse
            every login with this reply (e.g. "454 4.7.0 Temporary authentication failure"),
            on connections after the first `auth_refusal_after` ones.
        faults: see FaultScript.  timeout: server-side idle timeout per connection.
        size_limit: announce SIZE with this many bytes (and refuse larger data).
        rate_limit: a provider's limits (a token bucket of messages, a most connections).
        """
        if starttls_context and implicit_tls_context:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        self.host = HOST
        self.port = 0
        self.auth = dict(auth) if auth is not None else None
        self._starttls_context = starttls_context
        self._require_starttls = require_starttls
        self._implicit_tls_context = implicit_tls_context
        self._auth_required = (auth is not None) if auth_required is None else auth_required
        self._auth_require_tls = auth_require_tls
        self._auth_refusal = auth_refusal
        self._auth_refusal_after = auth_refusal_after
        self._timeout = timeout
        self._size_limit = size_limit
        self.rate_limit = rate_limit
        self._tokens = float(rate_limit.burst) if rate_limit else 0.0
        self._refilled = time.monotonic()
        self._started_at: list[float] = []  # when each message was let through (MAIL 250)
        self.refused_mail = 0
        self.refused_connections = 0
        self.most_connections = 0
        faults = faults or FaultScript()
        self._cursors = {
            "greeting": _Cursor(faults.greeting),
            "mail": _Cursor(faults.mail),
            "data": _Cursor(faults.data),
        }
        self._rcpt_cursors = {addr.lower(): _Cursor(s) for addr, s in faults.rcpt.items()}

        self._lock = threading.Condition()
        self._messages: list[Received] = []
        self._rejected: list[Received] = []
        self._auth_attempts: list[AuthAttempt] = []
        self._commands: list[tuple[int, str]] = []
        self._sessions = 0
        self._live: set[_Protocol] = set()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> SmtpServer:
        assert self._thread is None, "already started"
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtp-test", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            loop.create_server(self._make_protocol, HOST, 0, ssl=self._implicit_tls_context),
            loop,
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every live connection, then end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = self._server = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for proto in list(self._live):
            _abort(proto)
        await asyncio.sleep(0)  # let connection_lost callbacks run
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_protocol(self) -> _Protocol:
        assert self._loop is not None
        return _Protocol(
            self,
            _Handler(self),
            loop=self._loop,
            hostname="smtp.test",  # avoid socket.getfqdn() (slow DNS)
            enable_SMTPUTF8=True,
            tls_context=self._starttls_context,
            require_starttls=self._require_starttls,
            timeout=self._timeout,
            # aiosmtpd announces SIZE with its limit; None: announce none at all.
            data_size_limit=self._size_limit,
            # auth_required is enforced in handle_MAIL: aiosmtpd warns (UserWarning) about
            # auth_required with auth_require_tls=False, which implicit TLS needs.
            auth_required=False,
            # aiosmtpd only counts STARTTLS as TLS; implicit TLS is encrypted anyway.
            auth_require_tls=self._auth_require_tls and self._implicit_tls_context is None,
            auth_exclude_mechanism=[] if self.auth is not None else ["PLAIN", "LOGIN"],
            authenticator=self._authenticate,
        )

    # ---- called from the server thread -----------------------------------------------

    def _new_session(self, proto: _Protocol) -> int:
        with self._lock:
            self._sessions += 1
            self._live.add(proto)
            return self._sessions

    def _connection_refusal(self) -> str | None:
        """The provider's connection limit: a 421 beyond it (the new session is counted)."""
        limit = self.rate_limit
        with self._lock:
            self.most_connections = max(self.most_connections, len(self._live))
            if limit is None or len(self._live) <= limit.connections:
                return None
            self.refused_connections += 1
            return limit.connection_reply

    def _rate_refusal(self) -> str | None:
        """The provider's message rate: a token bucket; a refusal beyond it."""
        limit = self.rate_limit
        if limit is None:
            return None
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                float(limit.burst), self._tokens + (now - self._refilled) * limit.per_minute / 60
            )
            self._refilled = now
            if self._tokens < 1:
                self.refused_mail += 1
                return limit.mail_reply
            self._tokens -= 1
            self._started_at.append(now)
            return None

    @property
    def let_through(self) -> list[float]:
        """When each message got past the rate limit (monotonic clock)."""
        with self._lock:
            return list(self._started_at)

    def _forget(self, proto: _Protocol) -> None:
        with self._lock:
            self._live.discard(proto)

    def _next(self, kind: str, address: str | None = None) -> Step:
        with self._lock:
            if kind == "rcpt":
                cursor = self._rcpt_cursors.get((address or "").lower())
                return cursor.next() if cursor else None
            return self._cursors[kind].next()

    def _log(self, session_id: int, line: str) -> None:
        with self._lock:
            self._commands.append((session_id, line))

    def _record(self, message: Received, *, accepted: bool) -> None:
        with self._lock:
            (self._messages if accepted else self._rejected).append(message)
            self._lock.notify_all()

    def _record_clear_auth(self, arg: str) -> None:
        parts = arg.split()
        if len(parts) != 2:
            return
        mechanism, blob = parts[0].upper(), parts[1]
        try:
            raw = b64decode(blob, validate=True)
        except binascii.Error:
            return
        if mechanism == "PLAIN" and raw.count(b"\x00") == 2:
            _, user, password = raw.split(b"\x00")
        elif mechanism == "LOGIN":
            user, password = raw, b""
        else:
            return
        with self._lock:
            self._auth_attempts.append(
                AuthAttempt(user.decode(errors="replace"), password.decode(errors="replace"), False)
            )

    def _authenticate(
        self, proto: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword) and isinstance(proto, _Protocol)
        user = data.login.decode(errors="replace")
        password = data.password.decode(errors="replace")
        with self._lock:
            self._auth_attempts.append(AuthAttempt(user, password, _is_tls(proto)))
        if self._auth_refusal is not None and proto.session_id > self._auth_refusal_after:
            return AuthResult(success=False, handled=False, message=self._auth_refusal)
        ok = self.auth is not None and self.auth.get(user) == password
        if ok:
            proto.auth_user = user
        return AuthResult(success=ok, handled=False, auth_data=data)

    # ---- test-facing accessors -------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        """Messages taken (2xx, DROP or STALL), in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def rejected(self) -> list[Received]:
        """Messages fully transmitted but refused at the final DATA reply."""
        with self._lock:
            return list(self._rejected)

    @property
    def sessions(self) -> int:
        """Number of connections accepted so far."""
        with self._lock:
            return self._sessions

    @property
    def commands(self) -> list[tuple[int, str]]:
        """(session_id, "VERB arg") for every recognised command; AUTH args elided."""
        with self._lock:
            return list(self._commands)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth_attempts)

    def received_by(self, address: str) -> list[Received]:
        """Taken messages whose envelope includes ``address`` (case-insensitive)."""
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m.rcpt_tos)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least ``count`` messages were taken; raise TimeoutError if not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} message(s), got {len(self._messages)}")
                self._lock.wait(remaining)
            return list(self._messages)
