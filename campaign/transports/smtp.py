"""One SMTP connection through aiosmtplib's public API, kept open for many messages."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence
from functools import lru_cache

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from campaign.models import Draft
from campaign.settings import SmtpSettings
from campaign.transports.base import (
    SERVICE_CLOSING,
    BeforeData,
    ConnectFailure,
    ConnectStep,
    Delivery,
    Reply,
    Stage,
)

# One mechanism, tried once: after a refused login aiosmtplib's login() tries every
# other advertised mechanism, and repeated failed logins can lock the account.
_MECHANISMS = ("plain", "login")
_LOST = (SMTPServerDisconnected, SMTPTimeoutError, OSError)


@lru_cache(maxsize=1)
def local_hostname() -> str:
    name = socket.getfqdn()
    return name if "." in name else "localhost.localdomain"


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """Certificates verified, always; a CA file adds a trust anchor (e.g. a test server's)."""
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return context


def _ssl_error(err: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tls_failure(settings: SmtpSettings, error: ssl.SSLError) -> ConnectFailure:
    """A TLS failure with the hint its cause calls for."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"the server's certificate was not accepted: {error.verify_message}"
        hint = (
            "if the server uses a private CA, set CAMPAIGN_SMTP_CA_FILE to its certificate;"
            " certificates are always verified"
        )
    elif error.reason == "WRONG_VERSION_NUMBER":
        reason = "the server did not answer in TLS"
        hint = (
            f"port {settings.port} may expect another security mode: use tls for an"
            " implicit-TLS port (465) and starttls for a submission port (587)"
        )
    else:
        reason = f"TLS could not be set up: {error.reason or error}"
        hint = "check CAMPAIGN_SMTP_SECURITY and the port"
    return ConnectFailure(ConnectStep.TLS, reason, hint=hint)


async def connect(settings: SmtpSettings, timeout: float) -> aiosmtplib.SMTP:
    """Connect, greet, upgrade to TLS, log in: each step its own failure and hint."""
    context = tls_context(settings) if settings.security != "none" else None
    smtp = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        use_tls=settings.security == "tls",
        start_tls=False,  # done below, as its own step
        tls_context=context if settings.security == "tls" else None,
        timeout=timeout,
        local_hostname=local_hostname(),
    )
    try:
        await _greeting(smtp, settings, timeout)
        await _ehlo(smtp)
        if settings.security == "starttls":
            assert context is not None
            await _starttls(smtp, settings, context)
            await _ehlo(smtp)  # the server's extensions, AUTH among them, anew over TLS
        if settings.username:
            await _login(smtp, settings)
    except BaseException as error:
        try:
            login = isinstance(error, ConnectFailure) and error.step == ConnectStep.LOGIN
            if login and smtp.is_connected:
                # Said goodbye: the server's log shows a QUIT, not a client that vanished.
                with contextlib.suppress(SMTPException, OSError):
                    await smtp.quit(timeout=min(timeout, 5))
        finally:
            smtp.close()
        raise
    return smtp


async def _greeting(smtp: aiosmtplib.SMTP, settings: SmtpSettings, timeout: float) -> None:
    where = settings.address
    try:
        await smtp.connect()
    except SMTPConnectResponseError as err:
        raise ConnectFailure(
            ConnectStep.GREETING,
            f"{where} refused the session: {err.code} {err.message}",
            code=err.code,
        ) from None
    except SMTPConnectTimeoutError:
        hint = None
        if settings.security == "starttls":
            hint = "if this is an implicit-TLS port (465), set the security mode to tls"
        raise ConnectFailure(
            ConnectStep.CONNECT,
            f"{where} did not answer within {timeout:g} s (no connection or no greeting)",
            hint=hint,
            timed_out=True,
        ) from None
    except (SMTPConnectError, OSError) as err:
        cause = _ssl_error(err)
        if cause is not None:
            raise tls_failure(settings, cause) from None
        reason = err.__cause__ or err
        raise ConnectFailure(
            ConnectStep.CONNECT,
            f"cannot connect to {where}: {reason}",
            hint="check CAMPAIGN_SMTP_HOST and CAMPAIGN_SMTP_PORT, and that the server is up",
        ) from None


async def _ehlo(smtp: aiosmtplib.SMTP) -> None:
    try:
        try:
            await smtp.ehlo()
        except SMTPHeloError:
            await smtp.helo()
    except SMTPResponseException as err:
        raise ConnectFailure(ConnectStep.EHLO, f"{err.code} {err.message}", code=err.code) from None
    except _LOST as err:
        raise ConnectFailure(ConnectStep.EHLO, f"connection lost: {err}") from None


async def _starttls(smtp: aiosmtplib.SMTP, settings: SmtpSettings, context: ssl.SSLContext) -> None:
    if not smtp.supports_extension("starttls"):
        raise ConnectFailure(
            ConnectStep.TLS,
            f"{settings.address} does not offer STARTTLS, and campaign never sends in clear text",
            hint="use security tls if the server speaks implicit TLS (port 465)",
        )
    try:
        await smtp.starttls(tls_context=context)
    except SMTPResponseException as err:
        raise ConnectFailure(
            ConnectStep.TLS, f"STARTTLS refused: {err.code} {err.message}", code=err.code
        ) from None
    except (SMTPException, OSError) as err:
        cause = _ssl_error(err)
        if cause is not None:
            raise tls_failure(settings, cause) from None
        raise ConnectFailure(ConnectStep.TLS, f"connection lost: {err}") from None


async def _login(smtp: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    assert settings.username is not None
    offered = [m for m in _MECHANISMS if m in smtp.server_auth_methods]
    if not offered:
        raise ConnectFailure(
            ConnectStep.LOGIN,
            f"{settings.address} offers no login method campaign uses (PLAIN or LOGIN)",
        )
    login = smtp.auth_plain if offered[0] == "plain" else smtp.auth_login
    try:
        await login(settings.username, settings.password or "")
    except SMTPAuthenticationError as err:
        raise ConnectFailure(
            ConnectStep.LOGIN,
            f"{settings.address} refused the login for {settings.username}:"
            f" {err.code} {err.message}",
            code=err.code,
            hint=(
                "the server could not check the login just now (a temporary failure on its"
                " side); run `campaign send` again later"
                if 400 <= err.code < 500
                else "check CAMPAIGN_SMTP_USERNAME and the password"
            ),
        ) from None
    except _LOST as err:
        raise ConnectFailure(ConnectStep.LOGIN, f"connection lost: {err}") from None


def server_size_limit(announced: str) -> int | None:
    """The SIZE a server announced in EHLO, in bytes; None when it gave no number (or 0)."""
    text = announced.strip()
    return int(text) if text.isdigit() and 0 < len(text) < 16 and int(text) > 0 else None


class SmtpTransport:
    """Sends through one connection; `open` connects again when the server closed it."""

    def __init__(self, settings: SmtpSettings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.name = f"smtp://{settings.host}:{settings.port}"
        self._smtp: aiosmtplib.SMTP | None = None
        self.connections = 0

    @property
    def is_open(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> None:
        if self.is_open:
            return
        self._smtp = await connect(self.settings, self.timeout)
        self.connections += 1

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit(timeout=5)
            except (SMTPException, OSError):
                smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            lost = Reply(None, "not connected", Stage.MAIL)
            return Delivery(dict.fromkeys(addresses, lost))
        options: list[str] = []
        if smtp.supports_extension("size"):
            limit = server_size_limit(smtp.esmtp_extensions["size"])
            if limit and len(data) > limit:
                # Refused here rather than after the data went out (RFC 1870).
                too_big = Reply(
                    552,
                    f"not sent: the letter is {len(data):,} bytes and {self.settings.address}"
                    f" takes at most {limit:,} (its SIZE)",
                    Stage.MAIL,
                )
                return Delivery(dict.fromkeys(addresses, too_big))
            options.append(f"SIZE={len(data)}")
        try:
            await smtp.mail(draft.sender, options=options)
        except SMTPSenderRefused as err:
            await self._after_refusal(err.code)
            return Delivery(dict.fromkeys(addresses, Reply(err.code, err.message, Stage.MAIL)))
        except _LOST as err:
            self._drop()
            lost = Reply(None, f"connection lost: {err}", Stage.MAIL)
            return Delivery(dict.fromkeys(addresses, lost))
        replies: dict[str, Reply] = {}
        accepted: list[str] = []
        for position, address in enumerate(addresses):
            try:
                await smtp.rcpt(address)
            except SMTPRecipientRefused as err:
                reply = Reply(err.code, err.message, Stage.RCPT)
                replies[address] = reply
                if err.code == SERVICE_CLOSING:
                    self._drop()
                    rest = addresses[position + 1 :]
                    return Delivery({**replies, **dict.fromkeys((*accepted, *rest), reply)})
                continue
            except _LOST as err:
                self._drop()
                lost = Reply(None, f"connection lost: {err}", Stage.RCPT)
                return Delivery({**replies, **dict.fromkeys(addresses[position:], lost)})
            accepted.append(address)
        if not accepted:
            await self._reset()
            return Delivery(replies)
        if before_data is not None:
            await before_data(replies)
        # From here on the message data may be on its way: without an answer, the server
        # may or may not have taken it.
        try:
            response = await smtp.data(data)
        except SMTPDataError as err:
            await self._after_refusal(err.code)
            reply = Reply(err.code, err.message, Stage.DATA)
        except _LOST as err:
            self._drop()
            reply = Reply(None, f"no answer after the message data: {err}", Stage.DATA)
        else:
            reply = Reply(response.code, response.message, Stage.DATA)
        return Delivery({**replies, **dict.fromkeys(accepted, reply)})

    async def _after_refusal(self, code: int) -> None:
        if code == SERVICE_CLOSING:
            self._drop()
        else:
            await self._reset()

    async def _reset(self) -> None:
        smtp = self._smtp
        if smtp is None:
            return
        try:
            await smtp.rset()
        except (SMTPException, OSError):
            self._drop()


async def probe(settings: SmtpSettings, timeout: float) -> str:
    """Connect, set up TLS and log in once, then leave: what the server said, or a failure.

    Run before the user is asked to confirm, so a wrong password, port or CA file is
    known before anything is recorded against any recipient.
    """
    smtp = await connect(settings, timeout)
    try:
        size = smtp.esmtp_extensions.get("size", "")
        limit = server_size_limit(size) if size else None
        tls = "TLS" if settings.security != "none" else "no TLS (loopback)"
        login = f", logged in as {settings.username}" if settings.username else ""
        taken = f", takes letters up to {limit:,} bytes" if limit else ""
        return f"{settings.address} answered: {tls}{login}{taken}"
    finally:
        try:
            await smtp.quit(timeout=5)
        except (SMTPException, OSError):
            smtp.close()
