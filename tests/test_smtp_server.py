"""Self-tests for tests/smtp_server.py, using real clients over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import socket
import ssl
import time
from typing import Any

import aiosmtplib
import pytest
from smtp_server import DROP, STALL, AuthAttempt, FaultScript, SmtpServer, TlsFiles, nth

CLIENT = "client.test"  # local_hostname: avoids socket.getfqdn() in clients
MSG = (
    b"From: a@example.org\r\n"
    b"To: b@example.net\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"line one\r\n"
    b".leading dot must survive\r\n"
    b"caf\xc3\xa9\r\n"
)


def smtp(server: SmtpServer, **kw: Any) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname=CLIENT, timeout=5, **kw)


def aio_send(server: SmtpServer, recipients: list[str], **kw: Any) -> Any:
    kw.setdefault("timeout", 5)

    async def send() -> Any:
        try:
            return await aiosmtplib.send(
                MSG,
                sender="a@example.org",
                recipients=recipients,
                hostname=server.host,
                port=server.port,
                local_hostname=CLIENT,
                **kw,
            )
        finally:
            # aiosmtplib closes TLS transports asynchronously; if asyncio.run() ends at
            # once, the raw socket is left for the GC (ResourceWarning).  Let it finish.
            await asyncio.sleep(0.05)

    return asyncio.run(send())


def read_reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) SMTP reply from a raw socket."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return buf
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" ":
            return buf


# ---- recording -------------------------------------------------------------------------


def test_records_envelope_and_bytes_exactly(smtp_server: SmtpServer) -> None:
    with smtp(smtp_server) as client:
        client.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG)
    [got] = smtp_server.wait_for(1)
    assert got.mail_from == "a@example.org"
    assert got.rcpt_tos == ["b@example.net", "c@example.net"]
    assert got.data == MSG  # CRLF kept, dot-unstuffed, 8-bit intact
    assert got.session_id == 1 and got.tls is False
    assert got.peer[0] == "127.0.0.1"
    assert smtp_server.sessions == 1
    assert smtp_server.received_by("C@EXAMPLE.NET") == [got]
    assert smtp_server.received_by("nobody@example.net") == []
    verbs = [line.split()[0] for sid, line in smtp_server.commands if sid == 1]
    assert verbs == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


def test_aiosmtplib_client_and_sessions(smtp_server: SmtpServer) -> None:
    aio_send(smtp_server, ["b@example.net"])
    aio_send(smtp_server, ["c@example.net"])
    msgs = smtp_server.wait_for(2)
    assert [m.session_id for m in msgs] == [1, 2]
    assert smtp_server.sessions == 2
    assert msgs[0].data == MSG
    assert msgs[0].mail_options == (f"SIZE={len(MSG)}",)


def test_wait_for_times_out(smtp_server: SmtpServer) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        smtp_server.wait_for(1, timeout=0.2)
    assert time.monotonic() - start < 2


def test_factory_fixture_gives_independent_servers(make_smtp_server: Any) -> None:
    one, two = make_smtp_server(), make_smtp_server()
    assert one.port != two.port and one.host == "127.0.0.1"
    aio_send(two, ["b@example.net"])
    assert len(two.wait_for(1)) == 1 and one.messages == []


# ---- faults ----------------------------------------------------------------------------


def test_rcpt_greylisted_once_then_accepted(make_smtp_server: Any) -> None:
    server = make_smtp_server(
        faults=FaultScript(rcpt={"b@example.net": [(451, "4.7.1 Greylisted, try again"), None]})
    )
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        aio_send(server, ["b@example.net"])
    assert info.value.recipients[0].code == 451
    assert server.messages == []
    aio_send(server, ["b@example.net"])
    assert server.wait_for(1)[0].rcpt_tos == ["b@example.net"]


def test_rcpt_550_on_one_of_two(make_smtp_server: Any) -> None:
    server = make_smtp_server(
        faults=FaultScript(rcpt={"bad@example.net": (550, "5.1.1 No such user")})
    )
    with smtp(server) as client:
        refused = client.sendmail("a@example.org", ["bad@example.net", "ok@example.net"], MSG)
        assert refused == {"bad@example.net": (550, b"5.1.1 No such user")}
        # a bare step applies every time
        assert client.sendmail("a@example.org", ["bad@example.net", "ok@example.net"], MSG)
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.net"]] * 2


@pytest.mark.parametrize("code", [554, 451])
def test_data_final_reply_refused(make_smtp_server: Any, code: int) -> None:
    server = make_smtp_server(faults=FaultScript(data=[(code, "x.y.z Nope")]))
    with smtp(server) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.org", ["b@example.net"], MSG)
        assert info.value.smtp_code == code
        client.sendmail("a@example.org", ["b@example.net"], MSG)  # script exhausted
    assert len(server.messages) == 1
    assert [m.data for m in server.rejected] == [MSG]


def test_mail_from_refused(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(mail=[(550, "5.7.1 Sender refused")]))
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        aio_send(server, ["b@example.net"])
    assert info.value.code == 550
    assert server.messages == []


def test_greeting_refused(make_smtp_server: Any) -> None:
    refusal = (554, "5.3.2 Go away")
    server = make_smtp_server(faults=FaultScript(greeting=[refusal, refusal]))
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtp(server)
    assert info.value.smtp_code == 554
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as aio_info:
        aio_send(server, ["b@example.net"])
    assert aio_info.value.code == 554
    aio_send(server, ["b@example.net"])  # script exhausted: third connection is fine
    assert server.sessions == 3 and len(server.wait_for(1)) == 1


def test_421_on_nth_mail_closes_connection(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(mail=nth(2, (421, "4.3.2 Try later"))))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert read_reply(sock).startswith(b"220")
        for cmd in (b"EHLO c", b"MAIL FROM:<a@example.org>", b"RSET"):
            sock.sendall(cmd + b"\r\n")
            assert read_reply(sock)[:1] == b"2"
        sock.sendall(b"MAIL FROM:<a@example.org>\r\n")
        assert read_reply(sock).startswith(b"421 4.3.2")
        assert sock.recv(100) == b""  # server hung up
    aio_send(server, ["b@example.net"])  # reconnecting works
    assert len(server.wait_for(1)) == 1 and server.sessions == 2


def test_421_on_rcpt_of_an_address(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(rcpt={"b@example.net": [(421, "4.4.5 Busy")]}))
    with pytest.raises(aiosmtplib.SMTPException) as info:
        aio_send(server, ["b@example.net"])
    assert "421" in str(info.value) or getattr(info.value, "code", None) == 421
    aio_send(server, ["b@example.net"])
    assert len(server.wait_for(1)) == 1


def test_drop_after_data_records_but_client_sees_disconnect(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(data=[DROP]))
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        aio_send(server, ["b@example.net"])
    [got] = server.wait_for(1)
    assert got.data == MSG and got.rcpt_tos == ["b@example.net"]


def test_stall_after_data_client_times_out(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(data=[STALL]))
    start = time.monotonic()
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        aio_send(server, ["b@example.net"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert server.wait_for(1)[0].data == MSG


def test_stop_with_a_stalled_client_connected() -> None:
    server = SmtpServer(faults=FaultScript(greeting=STALL)).start()
    sock = socket.create_connection((server.host, server.port), timeout=5)
    try:
        time.sleep(0.1)
        server.stop()  # must not hang
        assert sock.recv(100) == b""
    finally:
        sock.close()


def test_greeting_drop(make_smtp_server: Any) -> None:
    server = make_smtp_server(faults=FaultScript(greeting=[DROP]))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp(server)
    aio_send(server, ["b@example.net"])
    assert server.sessions == 2


# ---- TLS and AUTH ----------------------------------------------------------------------


@pytest.fixture
def tls(smtp_tls: TlsFiles) -> TlsFiles:
    return smtp_tls


def test_starttls_verifies_with_trustme_ca(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, require_starttls=True)
    aio_send(server, ["b@example.net"], start_tls=True, cert_bundle=str(tls.ca_file))
    aio_send(server, ["c@example.net"], start_tls=True, tls_context=tls.client_context())
    assert [m.tls for m in server.wait_for(2)] == [True, True]
    # Without trusting the test CA, verification fails.  NB: aiosmtplib 5.1.3 lets the
    # raw ssl.SSLCertVerificationError escape from STARTTLS (not an SMTPException).
    with pytest.raises(ssl.SSLCertVerificationError):
        aio_send(
            server, ["d@example.net"], start_tls=True, tls_context=ssl.create_default_context()
        )
    assert len(server.messages) == 2


def test_require_starttls_refuses_mail_in_clear(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, require_starttls=True)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        aio_send(server, ["b@example.net"], start_tls=False)
    assert info.value.code == 530


def test_auth_over_starttls(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, auth={"u": "secret"})
    aio_send(
        server,
        ["b@example.net"],
        start_tls=True,
        tls_context=tls.client_context(),
        username="u",
        password="secret",
    )
    [got] = server.wait_for(1)
    assert got.auth_user == "u" and got.tls
    assert server.auth_attempts == [AuthAttempt("u", "secret", True)]
    assert (1, "AUTH PLAIN") in server.commands or (1, "AUTH LOGIN") in server.commands
    assert all("secret" not in line for _, line in server.commands)


def test_auth_wrong_password_535(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, auth={"u": "secret"})
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
        aio_send(
            server,
            ["b@example.net"],
            start_tls=True,
            tls_context=tls.client_context(),
            username="u",
            password="wrong",
        )
    assert info.value.code == 535
    # aiosmtplib falls back to the next mechanism after a 535, so expect 1+ attempts
    attempts = server.auth_attempts
    assert attempts and set(attempts) == {("u", "wrong", True)}
    assert server.messages == []


def test_auth_required_before_mail(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, auth={"u": "secret"})
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        aio_send(server, ["b@example.net"], start_tls=True, tls_context=tls.client_context())
    assert info.value.code == 530


def test_auth_not_offered_in_clear_but_cleartext_creds_recorded(
    make_smtp_server: Any, tls: TlsFiles
) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, auth={"u": "secret"})
    with smtp(server) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        blob = base64.b64encode(b"\0u\0secret").decode()
        code, _ = client.docmd("AUTH", "PLAIN " + blob)
        assert code == 538
        client.starttls(context=tls.client_context())
        client.ehlo()
        assert client.has_extn("auth")
    assert server.auth_attempts == [("u", "secret", False)]


def test_no_auth_configured_means_no_auth_advertised(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context)
    with smtp(server) as client:
        client.starttls(context=tls.client_context())
        client.ehlo()
        assert not client.has_extn("auth")


def test_implicit_tls_with_auth(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(implicit_tls_context=tls.server_context, auth={"u": "secret"})
    aio_send(
        server,
        ["b@example.net"],
        use_tls=True,
        tls_context=tls.client_context(),
        username="u",
        password="secret",
    )
    [got] = server.wait_for(1)
    assert got.tls and got.auth_user == "u"
    assert server.auth_attempts == [("u", "secret", True)]


def test_drop_after_data_over_starttls(make_smtp_server: Any, tls: TlsFiles) -> None:
    server = make_smtp_server(starttls_context=tls.server_context, faults=FaultScript(data=DROP))
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        aio_send(server, ["b@example.net"], start_tls=True, tls_context=tls.client_context())
    assert server.wait_for(1)[0].tls
