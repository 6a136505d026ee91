"""One SMTP connection through aiosmtplib, kept open for many messages, outcomes per address."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Sequence
from functools import lru_cache

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
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
    BeforeData,
    Delivery,
    Reply,
    RunStopped,
    TemporaryFailure,
    UnknownOutcome,
)

_LEADING_DOT = re.compile(rb"(?m)^\.")
_SERVICE_CLOSING = 421


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


def _ssl_cause(err: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class SmtpTransport:
    """Sends through one connection; reconnects when the server closed it."""

    def __init__(self, settings: SmtpSettings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.name = f"smtp://{settings.host}:{settings.port}"
        self._smtp: aiosmtplib.SMTP | None = None
        self.connections = 0

    async def open(self) -> None:
        if self._smtp is None or not self._smtp.is_connected:
            await self._connect()

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

    async def _connect(self) -> None:
        settings = self.settings
        where = settings.address
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.security == "tls",
            # True: upgrade or fail. aiosmtplib's default (None) would carry on in clear
            # text when the server does not offer STARTTLS, and then log in in clear.
            start_tls=settings.security == "starttls",
            tls_context=tls_context(settings) if settings.security != "none" else None,
            timeout=self.timeout,
            local_hostname=local_hostname(),
        )
        try:
            await smtp.connect(username=settings.username, password=settings.password)
        except SMTPConnectResponseError as err:
            if err.code >= 500:
                raise RunStopped(
                    f"{where} refused the session: {err.code} {err.message}",
                    Reply(err.code, err.message),
                ) from None
            raise TemporaryFailure(Reply(err.code, err.message)) from None
        except SMTPAuthenticationError as err:
            if 400 <= err.code < 500:
                raise TemporaryFailure(Reply(err.code, err.message)) from None
            raise RunStopped(
                f"{where} refused the login for {settings.username}: {err.code} {err.message}",
                Reply(err.code, err.message),
            ) from None
        except (SMTPException, OSError, ssl.SSLError) as err:
            cause = _ssl_cause(err)
            if cause is not None:
                raise RunStopped(
                    f"{where}: TLS could not be set up: {cause.__class__.__name__}:"
                    f" {getattr(cause, 'verify_message', None) or cause.reason or cause}",
                ) from None
            text = str(err)
            if "STARTTLS" in text or "authentication" in text.lower() or "AUTH" in text:
                raise RunStopped(f"{where}: {text}") from None
            if isinstance(err, SMTPResponseException):
                if err.code >= 500:
                    raise RunStopped(f"{where}: {err.code} {err.message}") from None
                raise TemporaryFailure(Reply(err.code, err.message)) from None
            raise TemporaryFailure(Reply(None, f"cannot connect to {where}: {text}")) from None
        try:
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except SMTPHeloError:
                    await smtp.helo()
        except SMTPResponseException as err:
            smtp.close()
            raise TemporaryFailure(Reply(err.code, err.message)) from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as err:
            smtp.close()
            raise TemporaryFailure(Reply(None, f"connection lost: {err}")) from None
        self._smtp = smtp
        self.connections += 1

    async def send(
        self,
        draft: Draft,
        data: bytes,
        addresses: Sequence[str],
        before_data: BeforeData | None = None,
    ) -> Delivery:
        await self.open()
        smtp = self._smtp
        assert smtp is not None
        replies: dict[str, Reply] = {}
        try:
            # The addresses are email-validator's ASCII forms: no quoting or parsing needed
            # (aiosmtplib's mail()/rcpt() re-parse each one with email.utils).
            response = await smtp.execute_command(b"MAIL", b"FROM:<%s>" % draft.sender.encode())
            if response.code != 250:
                raise SMTPSenderRefused(response.code, response.message, draft.sender)
            accepted: list[str] = []
            for address in addresses:
                response = await smtp.execute_command(b"RCPT", b"TO:<%s>" % address.encode())
                if response.code in (250, 251):
                    accepted.append(address)
                elif response.code == _SERVICE_CLOSING:
                    raise SMTPRecipientRefused(response.code, response.message, address)
                else:
                    replies[address] = Reply(response.code, response.message)
            if not accepted:
                await self._reset()
                return Delivery(replies)
            if before_data is not None:
                await before_data()
            start = await smtp.execute_command(b"DATA")
        except SMTPSenderRefused as err:
            if err.code >= 500:
                raise RunStopped(
                    f"{self.settings.address} refused the sender {draft.sender}:"
                    f" {err.code} {err.message}",
                    Reply(err.code, err.message),
                ) from None
            await self._after_refusal(err.code)
            raise TemporaryFailure(Reply(err.code, err.message), replies) from None
        except SMTPResponseException as err:
            await self._after_refusal(err.code)
            raise TemporaryFailure(Reply(err.code, err.message), replies) from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as err:
            self._drop()
            raise TemporaryFailure(Reply(None, f"connection lost: {err}"), replies) from None
        if start.code != 354:
            await self._after_refusal(start.code)
            reply = Reply(start.code, start.message)
            return Delivery({**replies, **{address: reply for address in accepted}})
        # From here on the message data is on its way: without an answer, the server may
        # or may not have taken it.
        try:
            protocol = smtp.protocol
            if protocol is None:
                raise SMTPServerDisconnected("connection lost")
            if data.startswith(b".") or b"\n." in data:
                data = _LEADING_DOT.sub(b"..", data)
            protocol.write(data + b".\r\n")
            final = await protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as err:
            self._drop()
            raise UnknownOutcome(
                f"no answer after the message data: {err}", accepted, replies
            ) from None
        if final.code == _SERVICE_CLOSING:
            self._drop()
        reply = Reply(final.code, final.message)
        return Delivery({**replies, **{address: reply for address in accepted}})

    async def _after_refusal(self, code: int) -> None:
        if code == _SERVICE_CLOSING:
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
