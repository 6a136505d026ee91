"""`campaign send` over TLS with a login: STARTTLS and implicit TLS with a test CA, refusals.

Certificates come from trustme (a CA made for each test, trusted only through
CAMPAIGN_SMTP_CA_FILE); credentials come from the environment and must never be printed,
logged or written, nor cross the wire in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from send_helpers import (
    ALL_ADDRESSES,
    BUNDLED_IDS,
    copy_bundled,
    deliveries,
    files_in,
    log_path,
    network_watch,
    run_cli,
    send,
    smtp_environ,
    status_of,
    write_small_campaign,
)
from smtp_server import SmtpServer, TlsFiles

MakeServer = Callable[..., SmtpServer]
USER = "campaigner"
PASSWORD = "pw-Zq8!never-shown"
FAST = ("--backoff", "0", "--timeout", "5")


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    return copy_bundled(tmp_path / "campaign")


def login(tls: TlsFiles | None, security: str, password: str = PASSWORD) -> dict[str, str]:
    """The TLS and login variables (the host and port come from `smtp_environ`)."""
    environ = {
        "CAMPAIGN_SMTP_SECURITY": security,
        "CAMPAIGN_SMTP_USERNAME": USER,
        "CAMPAIGN_SMTP_PASSWORD": password,
    }
    if tls is not None:
        environ["CAMPAIGN_SMTP_CA_FILE"] = str(tls.ca_file)
    return environ


def starttls_server(make: MakeServer, tls: TlsFiles) -> SmtpServer:
    return make(starttls_context=tls.server_context, require_starttls=True, auth={USER: PASSWORD})


def test_starttls_with_a_trusted_test_ca_and_login_sends_everything(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls"))
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    assert all(message.tls and message.auth_user == USER for message in server.messages)
    attempts = server.auth_attempts
    assert attempts and all(a.over_tls and a.username == USER for a in attempts)
    assert f"(starttls, login {USER})" in run.out


def test_the_password_is_never_printed_logged_or_written(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls"))
    assert run.status == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    written = files_in(bundled.parent / "outbox")
    assert "send-log.jsonl" in written and any(name.startswith("sent/") for name in written)
    for name, data in written.items():
        assert PASSWORD.encode() not in data, name
    assert all(PASSWORD.encode() not in message.data for message in server.messages)


def test_the_password_is_not_shown_when_the_login_is_refused(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    wrong = "wrong-pw-Xy7!secret"
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls", password=wrong))
    assert run.status == 2
    assert wrong not in run.stdout + run.stderr
    for name, data in files_in(bundled.parent / "outbox").items():
        assert wrong.encode() not in data, name


def test_wrong_password_535_stops_the_run(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls", password="wrong"))
    assert run.status == 2
    assert f"refused the login for {USER}: 535" in run.err
    assert "login failed" in run.err and "nothing was sent" in run.err
    assert server.messages == []
    # One login, tried once, before the question: not one per mechanism the server offers,
    # nor one per connection of --concurrency (repeated failures can lock the account).
    assert server.sessions == 1
    assert len(server.auth_attempts) == 1
    assert all(a.over_tls and a.password == "wrong" for a in server.auth_attempts)
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)


def test_a_refused_login_ends_the_session_with_quit(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls", password="wrong"))
    assert run.status == 2
    commands = [line.split()[0].upper() for _, line in server.commands]
    assert commands[-2:] == ["AUTH", "QUIT"], commands


def test_a_temporary_login_failure_is_tried_once_and_says_to_come_back_later(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = make_smtp_server(
        starttls_context=smtp_tls.server_context,
        require_starttls=True,
        auth={USER: PASSWORD},
        auth_refusal="454 4.7.0 Temporary authentication failure",
    )
    run = send(bundled, server, "--backoff", "0.01", extra=login(smtp_tls, "starttls"))
    assert run.status == 2
    assert "454 4.7.0 Temporary authentication failure" in run.err
    assert "run `campaign send` again later" in " ".join(run.err.split())
    assert "check CAMPAIGN_SMTP_USERNAME" not in run.err
    assert len(server.auth_attempts) == 1 and server.sessions == 1
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)


def test_a_temporary_login_refusal_on_a_further_connection_means_fewer_connections(
    tmp_path: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    file = write_small_campaign(tmp_path / "c", 12)
    server = make_smtp_server(
        starttls_context=smtp_tls.server_context,
        require_starttls=True,
        auth={USER: PASSWORD},
        auth_refusal="454 4.7.0 Too many login attempts",
        auth_refusal_after=2,  # the check before the question, then one sending connection
    )
    run = send(file, server, "--concurrency", "4", *FAST, extra=login(smtp_tls, "starttls"))
    assert run.status == 0, run.stderr
    assert len(server.messages) == 12
    assert {m.session_id for m in server.messages} == {2}


def test_an_untrusted_certificate_stops_the_run_with_nothing_sent(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    run = send(bundled, server, *FAST, extra=login(None, "starttls"))
    assert run.status == 2
    assert "certificate was not accepted" in run.err
    assert "unable to get local issuer certificate" in run.err
    assert "CAMPAIGN_SMTP_CA_FILE" in run.err
    assert server.sessions == 1
    assert server.messages == []
    assert server.auth_attempts == []
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)
    assert files_in(bundled.parent / "outbox" / "sent") == {}


def test_a_certificate_for_another_name_is_refused(
    tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example.net").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = make_smtp_server(starttls_context=context, require_starttls=True)
    file = write_small_campaign(tmp_path / "campaign", count=2)
    run = send(
        file,
        server,
        *FAST,
        extra={
            "CAMPAIGN_SMTP_SECURITY": "starttls",
            "CAMPAIGN_SMTP_CA_FILE": str(ca_file),
        },
    )
    assert run.status == 2
    assert "certificate was not accepted" in run.err
    assert server.messages == []


def test_starttls_not_offered_is_refused_without_a_clear_text_login(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    # A server that offers AUTH in clear and no STARTTLS: aiosmtplib's default would log in.
    server = make_smtp_server(auth={USER: PASSWORD}, auth_require_tls=False)
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "starttls"))
    assert run.status == 2
    assert "STARTTLS" in run.err
    assert server.auth_attempts == []
    assert not [line for _, line in server.commands if line.startswith("AUTH")]
    assert server.messages == []
    assert all(status_of(bundled, rid) == "pending" for rid in BUNDLED_IDS)


def test_starttls_without_login_sends_over_tls(
    tmp_path: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = make_smtp_server(starttls_context=smtp_tls.server_context, require_starttls=True)
    file = write_small_campaign(tmp_path / "campaign", count=3)
    run = send(
        file,
        server,
        *FAST,
        extra={
            "CAMPAIGN_SMTP_SECURITY": "starttls",
            "CAMPAIGN_SMTP_CA_FILE": str(smtp_tls.ca_file),
        },
    )
    assert run.status == 0, run.stderr
    assert len(server.messages) == 3
    assert all(message.tls for message in server.messages)


def test_implicit_tls_with_login_sends_everything(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = make_smtp_server(implicit_tls_context=smtp_tls.server_context, auth={USER: PASSWORD})
    run = send(bundled, server, *FAST, extra=login(smtp_tls, "tls"))
    assert run.status == 0, run.stderr
    assert deliveries(server) == {address: 1 for address in ALL_ADDRESSES}
    assert all(message.tls and message.auth_user == USER for message in server.messages)
    assert server.auth_attempts and all(a.over_tls for a in server.auth_attempts)
    assert not [line for _, line in server.commands if line.startswith("STARTTLS")]


def test_implicit_tls_with_an_untrusted_certificate_stops_the_run(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = make_smtp_server(implicit_tls_context=smtp_tls.server_context, auth={USER: PASSWORD})
    run = send(bundled, server, *FAST, extra=login(None, "tls"))
    assert run.status == 2
    assert "certificate was not accepted" in run.err
    assert server.messages == [] and server.auth_attempts == []


# ---- refused before any connection ----------------------------------------------------------


def test_none_to_a_non_loopback_host_is_refused_before_any_connection(bundled: Path) -> None:
    environ = {"CAMPAIGN_SMTP_HOST": "smtp.example.org", "CAMPAIGN_SMTP_SECURITY": "none"}
    with network_watch() as seen:
        run = run_cli(bundled, "send", "--yes", environ=environ)
    assert run.status == 2
    assert "allowed only to a loopback host, not to smtp.example.org" in run.err
    assert seen == []  # no connect and no name lookup at all
    assert not log_path(bundled).exists()


def test_none_given_on_the_command_line_to_a_non_loopback_host_is_refused(
    bundled: Path,
) -> None:
    with network_watch() as seen:
        run = run_cli(
            bundled,
            "send",
            "--yes",
            "--smtp-host",
            "192.0.2.10",
            "--security",
            "none",
            environ={},
        )
    assert run.status == 2
    assert "not to 192.0.2.10" in run.err
    assert seen == []


def test_a_username_with_security_none_is_refused(bundled: Path, smtp_server: SmtpServer) -> None:
    environ = smtp_environ(
        smtp_server, CAMPAIGN_SMTP_USERNAME=USER, CAMPAIGN_SMTP_PASSWORD=PASSWORD
    )
    run = run_cli(bundled, "send", "--yes", environ=environ)
    assert run.status == 2
    assert "credentials never travel without TLS" in run.err
    assert PASSWORD not in run.stdout + run.stderr
    assert smtp_server.sessions == 0
    assert not log_path(bundled).exists()


def test_a_username_without_a_password_and_no_terminal_is_refused(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    environ = smtp_environ(
        server,
        CAMPAIGN_SMTP_SECURITY="starttls",
        CAMPAIGN_SMTP_USERNAME=USER,
        CAMPAIGN_SMTP_CA_FILE=str(smtp_tls.ca_file),
    )
    run = run_cli(bundled, "send", "--yes", environ=environ)
    assert run.status == 2
    assert "a username is set but no password" in run.err
    assert "CAMPAIGN_SMTP_PASSWORD" in run.err
    assert server.sessions == 0


def test_the_password_can_be_given_at_a_prompt(
    bundled: Path, make_smtp_server: MakeServer, smtp_tls: TlsFiles
) -> None:
    server = starttls_server(make_smtp_server, smtp_tls)
    environ = smtp_environ(
        server,
        CAMPAIGN_SMTP_SECURITY="starttls",
        CAMPAIGN_SMTP_USERNAME=USER,
        CAMPAIGN_SMTP_CA_FILE=str(smtp_tls.ca_file),
    )
    run = run_cli(bundled, "send", "--yes", *FAST, environ=environ, prompt=lambda _: PASSWORD)
    assert run.status == 0, run.stderr
    [question] = run.prompts
    assert USER in question and PASSWORD not in question
    assert len(server.messages) == 6
    assert PASSWORD not in run.stdout + run.stderr


def test_a_missing_ca_file_is_refused(bundled: Path, smtp_server: SmtpServer) -> None:
    environ = smtp_environ(
        smtp_server,
        CAMPAIGN_SMTP_SECURITY="starttls",
        CAMPAIGN_SMTP_CA_FILE=str(bundled.parent / "no-such-ca.pem"),
    )
    run = run_cli(bundled, "send", "--yes", environ=environ)
    assert run.status == 2
    assert "no-such-ca.pem does not exist" in run.err
    assert smtp_server.sessions == 0
