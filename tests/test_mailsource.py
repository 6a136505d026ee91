"""Reading the mailbox: a real pymap IMAP server over TLS and STARTTLS, Maildir and mbox files."""

from __future__ import annotations

import dataclasses
import mailbox
import os
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from imap_server import SEEN, ImapServer
from smtp_server import TlsFiles, make_tls

from campaign.errors import CampaignError
from campaign.inbound import Kind, SentLetter, classify, match
from campaign.mailsource import (
    ImapConnectError,
    ImapFolderError,
    ImapLoginError,
    ImapReadError,
    ImapSettings,
    ImapSettingsError,
    ImapTlsError,
    MailboxError,
    RawMessage,
    Skip,
    decode_mailbox,
    encode_mailbox,
    imap_date,
    imap_messages,
    maildir_messages,
    mbox_messages,
    resolve_imap_settings,
    uid_set,
)
from campaign.models import ImapFileSettings

FIXTURES = Path(__file__).parent / "fixtures" / "inbox"
BOUNCE = (FIXTURES / "postfix-bounce-full.eml").read_bytes()
REPLY = (FIXTURES / "reply-in-reply-to.eml").read_bytes()
AUTO = (FIXTURES / "autoreply-rfc3834.eml").read_bytes()
ALL = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))]


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path)


def read(messages: Iterator[RawMessage]) -> list[RawMessage]:
    return list(messages)


def datas(messages: list[RawMessage]) -> list[bytes | None]:
    return [m.data for m in messages]


# --- IMAP: reading --------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_reads_every_message_byte_for_byte(tls: TlsFiles, security: str) -> None:
    with ImapServer(tls=tls, security=security, messages=ALL) as server:
        got = read(imap_messages(server.settings(), since=None))
    assert datas(got) == ALL
    assert {m.skipped for m in got} == {None}
    assert len({m.key for m in got}) == len(ALL)
    assert all(m.source.endswith(f":{server.port}/INBOX") for m in got)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_reading_leaves_the_mailbox_unchanged(tls: TlsFiles, security: str) -> None:
    with ImapServer(tls=tls, security=security, messages=ALL) as server:
        before = server.stored()
        read(imap_messages(server.settings(), since=None))
        read(imap_messages(server.settings(), since=None))
        after = server.stored()
    assert after == before
    assert all(SEEN not in message.flags for message in after)
    assert all(message.recent for message in after)  # EXAMINE, not SELECT
    assert len(after) == len(ALL)


def test_imap_messages_classify_and_match_end_to_end(tls: TlsFiles) -> None:
    letters = [
        SentLetter(
            "ombudsman",
            "<kz-open-letter-2017-10.ombudsman@example.org>",
            ("ombudsman-typo@example.net", "ombudsman@example.com"),
        )
    ]
    with ImapServer(tls=tls, messages=[BOUNCE, REPLY, AUTO]) as server:
        found = [
            m
            for raw in imap_messages(server.settings())
            for m in match(classify(raw.data or b""), letters)
        ]
    assert [(m.kind, m.address) for m in found] == [
        (Kind.BOUNCE, "ombudsman-typo@example.net"),
        (Kind.REPLY, "ombudsman@example.com"),
    ]


def test_imap_skips_oversize_messages_by_their_size_and_counts_them(tls: TlsFiles) -> None:
    big = BOUNCE + b"\n" + b"x" * 5000 + b"\n"
    with ImapServer(tls=tls, messages=[REPLY, big, AUTO]) as server:
        got = read(imap_messages(server.settings(), max_bytes=len(BOUNCE) + 100))
    assert [m.skipped for m in got] == [None, Skip.TOO_LARGE, None]
    assert got[1].data is None and got[1].size == len(big)
    assert datas(got)[0::2] == [REPLY, AUTO]


def test_imap_since_reads_only_mail_delivered_on_or_after_the_day(tls: TlsFiles) -> None:
    old = (BOUNCE, datetime(2017, 10, 1, 12, 0, tzinfo=UTC))
    new = (REPLY, datetime(2017, 10, 25, 9, 30, tzinfo=UTC))
    with ImapServer(tls=tls, messages=[old, new]) as server:
        got = read(imap_messages(server.settings(), since=date(2017, 10, 20)))
        everything = read(imap_messages(server.settings(), since=None))
    assert datas(got) == [REPLY]
    assert got[0].received == datetime(2017, 10, 25, 9, 30, tzinfo=UTC)
    assert datas(everything) == [BOUNCE, REPLY]


def test_imap_since_keeps_mail_a_server_behind_utc_dated_the_day_before(tls: TlsFiles) -> None:
    # 01:05 UTC on the 20th is 21:05 on the 19th in New York: a server there files it on the 19th.
    new_york = timezone(timedelta(hours=-4))
    evening = (REPLY, datetime(2017, 10, 19, 21, 5, tzinfo=new_york))
    with ImapServer(tls=tls, messages=[evening]) as server:
        got = read(imap_messages(server.settings(), since=date(2017, 10, 20)))
    assert datas(got) == [REPLY]


def test_imap_reads_a_folder_with_a_non_ascii_name(tls: TlsFiles) -> None:
    with ImapServer(tls=tls, folders=["Входящие/Отказы"]) as server:
        server.append(BOUNCE, folder="Входящие/Отказы")
        server.append(REPLY)
        got = read(imap_messages(server.settings(folder="Входящие/Отказы")))
    assert datas(got) == [BOUNCE]


def test_imap_reads_many_messages_in_batches(tls: TlsFiles) -> None:
    many = [REPLY.replace(b"<7c1d2e3f4a5b@", f"<n{i}@".encode()) for i in range(250)]
    with ImapServer(tls=tls, messages=many) as server:
        got = read(imap_messages(server.settings()))
    assert datas(got) == many


def test_imap_with_an_empty_folder_yields_nothing(tls: TlsFiles) -> None:
    with ImapServer(tls=tls) as server:
        assert read(imap_messages(server.settings())) == []


# --- IMAP: failures, each at its step --------------------------------------------------------


def test_imap_login_failure_names_the_user_and_never_the_password(tls: TlsFiles) -> None:
    with ImapServer(tls=tls, messages=[BOUNCE]) as server:
        settings = server.settings(password="wrong-secret-123")
        with pytest.raises(ImapLoginError) as caught:
            read(imap_messages(settings))
        assert server.flags() == [frozenset()]
    text = str(caught.value)
    assert "campaigner@example.org" in text and "wrong-secret-123" not in text
    assert caught.value.hint is not None and "CAMPAIGN_IMAP_USERNAME" in caught.value.hint


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_untrusted_certificate_is_refused_with_a_ca_hint(
    tmp_path: Path, tls: TlsFiles, security: str
) -> None:
    (tmp_path / "other").mkdir()
    other_ca = make_tls(tmp_path / "other").ca_file
    with (
        ImapServer(tls=tls, security=security, messages=[BOUNCE]) as server,
        pytest.raises(ImapTlsError) as caught,
    ):
        read(imap_messages(server.settings(ca_file=other_ca)))
    assert "certificate" in str(caught.value)
    assert caught.value.hint is not None and "CAMPAIGN_IMAP_CA_FILE" in caught.value.hint


def test_imap_tls_against_a_starttls_port_says_to_use_starttls(tls: TlsFiles) -> None:
    with ImapServer(tls=tls, security="starttls") as server, pytest.raises(ImapTlsError) as caught:
        read(imap_messages(server.settings(security="tls")))
    assert caught.value.hint is not None and "starttls" in caught.value.hint


def test_imap_starttls_against_an_implicit_tls_port_says_to_use_tls(tls: TlsFiles) -> None:
    with ImapServer(tls=tls, security="tls") as server, pytest.raises(ImapConnectError) as caught:
        read(imap_messages(server.settings(security="starttls"), timeout=1.0))
    assert caught.value.hint is not None and "CAMPAIGN_IMAP_SECURITY=tls" in caught.value.hint


def test_imap_missing_folder_lists_the_folders_there_are(tls: TlsFiles) -> None:
    with (
        ImapServer(tls=tls, folders=["Bounces", "Sent"]) as server,
        pytest.raises(ImapFolderError) as caught,
    ):
        read(imap_messages(server.settings(folder="Bounced")))
    assert "'Bounced'" in str(caught.value)
    assert caught.value.hint is not None
    assert "Bounces" in caught.value.hint and "INBOX" in caught.value.hint


def test_imap_connection_refused_is_a_connect_error(tls: TlsFiles) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ImapSettings("127.0.0.1", port, "tls", "u", "p", tls.ca_file)
    with pytest.raises(ImapConnectError) as caught:
        read(imap_messages(settings))
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_imap_connection_lost_mid_read_is_a_clear_error(tls: TlsFiles) -> None:
    many = [REPLY] * 150  # more than one fetch batch
    with ImapServer(tls=tls, messages=many) as server:
        messages = imap_messages(server.settings())
        first = next(messages)
        server.drop_connections()
        with pytest.raises(ImapReadError) as caught:
            read(messages)
        assert server.count() == 150 and server.flags()[0] == frozenset()
    assert first.data == REPLY
    assert "lost" in str(caught.value)


def test_imap_folder_deleted_mid_read_is_a_clear_error(tls: TlsFiles) -> None:
    with ImapServer(tls=tls, folders=["Bounces"]) as server:
        for _ in range(150):
            server.append(BOUNCE, folder="Bounces")
        messages = imap_messages(server.settings(folder="Bounces"))
        next(messages)
        server.delete_folder("Bounces")
        with pytest.raises(ImapReadError) as caught:
            read(messages)
    assert "'Bounces'" in str(caught.value)
    assert caught.value.hint is not None and "deleted or renamed" in caught.value.hint


def test_imap_without_a_password_says_where_to_set_it(tls: TlsFiles) -> None:
    settings = ImapSettings("127.0.0.1", 993, "tls", "u", None, tls.ca_file)
    with pytest.raises(ImapSettingsError) as caught:
        read(imap_messages(settings))
    assert caught.value.field == "CAMPAIGN_IMAP_PASSWORD"


def test_imap_none_security_reads_from_a_loopback_server() -> None:
    with ImapServer(tls=None, security="none", messages=[BOUNCE]) as server:
        got = read(imap_messages(server.settings()))
    assert datas(got) == [BOUNCE]


# --- IMAP settings ---------------------------------------------------------------------------

ENV = {"CAMPAIGN_IMAP_HOST": "imap.example.org", "CAMPAIGN_IMAP_USERNAME": "campaigner"}


def test_settings_default_to_implicit_tls_on_993_and_inbox() -> None:
    settings = resolve_imap_settings(ENV, ImapFileSettings())
    assert (settings.host, settings.port, settings.security, settings.folder) == (
        "imap.example.org",
        993,
        "tls",
        "INBOX",
    )
    assert settings.password is None


def test_settings_starttls_defaults_to_143() -> None:
    env = {**ENV, "CAMPAIGN_IMAP_SECURITY": "STARTTLS"}
    assert resolve_imap_settings(env, ImapFileSettings()).port == 143


def test_settings_command_line_over_environment_over_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    file = ImapFileSettings(
        host="file.example.org", port=1993, username="file-user", folder="File", ca_file=str(ca)
    )
    env = {"CAMPAIGN_IMAP_HOST": "env.example.org", "CAMPAIGN_IMAP_FOLDER": "Env"}
    assert resolve_imap_settings({}, file).host == "file.example.org"
    from_env = resolve_imap_settings(env, file)
    assert (from_env.host, from_env.port, from_env.folder, from_env.username) == (
        "env.example.org",
        1993,
        "Env",
        "file-user",
    )
    assert from_env.ca_file == ca
    cli = resolve_imap_settings(env, file, host="cli.example.org", port=10993, folder="Cli")
    assert (cli.host, cli.port, cli.folder) == ("cli.example.org", 10993, "Cli")


def test_settings_password_only_from_the_environment_and_never_shown() -> None:
    env = {**ENV, "CAMPAIGN_IMAP_PASSWORD": "s3cret-imap"}
    settings = resolve_imap_settings(env, ImapFileSettings())
    assert settings.password == "s3cret-imap"
    assert "s3cret-imap" not in repr(settings) + str(settings) + settings.describe()
    assert "s3cret-imap" not in repr(dataclasses.replace(settings, folder="X"))


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({**ENV, "CAMPAIGN_IMAP_SECURITY": "ssl"}, "CAMPAIGN_IMAP_SECURITY"),
        ({**ENV, "CAMPAIGN_IMAP_PORT": "99999"}, "CAMPAIGN_IMAP_PORT"),
        ({**ENV, "CAMPAIGN_IMAP_PORT": "imaps"}, "CAMPAIGN_IMAP_PORT"),
        ({**ENV, "CAMPAIGN_IMAP_CA_FILE": "/nonexistent/ca.pem"}, "CAMPAIGN_IMAP_CA_FILE"),
        ({**ENV, "CAMPAIGN_IMAP_FOLDER": "IN\nBOX"}, "CAMPAIGN_IMAP_FOLDER"),
        ({"CAMPAIGN_IMAP_HOST": "imap.example.org"}, "CAMPAIGN_IMAP_USERNAME"),
        ({**ENV, "CAMPAIGN_IMAP_SECURITY": "none"}, "CAMPAIGN_IMAP_SECURITY"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(ImapSettingsError) as caught:
        resolve_imap_settings(env, ImapFileSettings())
    assert caught.value.field == field
    assert isinstance(caught.value, CampaignError)


def test_settings_without_a_host_say_how_to_set_one() -> None:
    with pytest.raises(ImapSettingsError) as caught:
        resolve_imap_settings({}, ImapFileSettings())
    assert caught.value.hint is not None and "CAMPAIGN_IMAP_HOST" in caught.value.hint


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_settings_allow_no_tls_only_to_loopback(host: str) -> None:
    env = {**ENV, "CAMPAIGN_IMAP_HOST": host, "CAMPAIGN_IMAP_SECURITY": "none"}
    settings = resolve_imap_settings(env, ImapFileSettings())
    assert (settings.security, settings.port) == ("none", 143)


# --- IMAP helpers ------------------------------------------------------------------------------


def test_mailbox_names_round_trip_through_modified_utf7() -> None:
    assert encode_mailbox("Входящие") == "&BBIERQQ+BDQETwRJBDgENQ-"
    assert encode_mailbox("R&D") == "R&-D"
    for name in ["Входящие/Отказы", "R&D", "Boîte", "日本語 & more", "plain"]:
        assert decode_mailbox(encode_mailbox(name)) == name


def test_imap_dates_and_uid_sets() -> None:
    assert imap_date(date(2017, 10, 4)) == "4-Oct-2017"
    assert uid_set([7, 1, 2, 3, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


# --- Maildir -----------------------------------------------------------------------------------


def make_maildir(path: Path, messages: list[bytes]) -> list[str]:
    box = mailbox.Maildir(str(path), create=True)
    keys = [box.add(data) for data in messages]
    box.close()
    return keys


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_maildir_reads_every_message_byte_for_byte(tmp_path: Path) -> None:
    make_maildir(tmp_path / "Maildir", ALL)
    got = read(maildir_messages(tmp_path / "Maildir"))
    assert sorted(datas(got)) == sorted(ALL)  # type: ignore[type-var]
    assert all(m.source == f"maildir:{tmp_path / 'Maildir'}" for m in got)


def test_maildir_reading_changes_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "Maildir"
    make_maildir(folder, ALL)
    (folder / "new" / "unread-by-a-person").write_bytes(REPLY)  # a file left in new/
    before = snapshot(folder)
    read(maildir_messages(folder))
    assert snapshot(folder) == before


def test_maildir_skips_oversize_messages(tmp_path: Path) -> None:
    make_maildir(tmp_path / "M", [REPLY, BOUNCE + b"x" * 10_000])
    got = read(maildir_messages(tmp_path / "M", max_bytes=len(BOUNCE) + 100))
    skipped = [m for m in got if m.skipped]
    assert [m.skipped for m in skipped] == [Skip.TOO_LARGE]
    assert skipped[0].size == len(BOUNCE) + 10_000 and skipped[0].data is None
    assert [m.data for m in got if not m.skipped] == [REPLY]


def test_maildir_since_uses_the_delivery_time_and_the_date_header(tmp_path: Path) -> None:
    folder = tmp_path / "M"
    make_maildir(folder, [])
    old_reply = REPLY.replace(b"Date: Wed, 1 Nov 2017", b"Date: Sun, 1 Oct 2017")
    (folder / "cur" / "1506816000.M1P1.host:2,S").write_bytes(old_reply)  # 2017-10-01
    (folder / "cur" / "1509494400.M2P2.host:2,S").write_bytes(BOUNCE)  # 2017-11-01, Date 2026
    (folder / "new" / "no-time-in-name").write_bytes(old_reply)  # Date header only: old
    got = read(maildir_messages(folder, since=date(2017, 10, 20)))
    assert datas(got) == [BOUNCE]
    assert got[0].received == datetime(2017, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", ["10.eml:2,S", "380501234567.eml:2,S", "9999999999.x:2,S"])
def test_maildir_file_named_by_a_person_is_not_taken_for_a_delivery_time(
    tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "M"
    make_maildir(folder, [])
    undated = b"\n".join(line for line in BOUNCE.split(b"\n") if not line.startswith(b"Date:"))
    assert undated != BOUNCE
    (folder / "cur" / name).write_bytes(undated)  # not 1970 nor year 14027: no time at all
    got = read(maildir_messages(folder, since=date(2017, 10, 20)))
    assert datas(got) == [undated]
    assert got[0].received is None


def test_maildir_that_is_not_one_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MailboxError) as caught:
        read(maildir_messages(tmp_path))
    assert "cur/ and new/" in str(caught.value)
    with pytest.raises(MailboxError):
        read(maildir_messages(tmp_path / "missing"))


# --- mbox --------------------------------------------------------------------------------------


def make_mbox(path: Path, messages: list[bytes]) -> None:
    box = mailbox.mbox(str(path), create=True)
    for data in messages:
        box.add(data)
    box.close()


def test_mbox_reads_every_message(tmp_path: Path) -> None:
    path = tmp_path / "inbox.mbox"
    make_mbox(path, [BOUNCE, REPLY, AUTO])
    got = read(mbox_messages(path))
    assert [m.key for m in got] == ["#1", "#2", "#3"]
    assert [classify(m.data or b"").key for m in got] == [
        classify(data).key for data in [BOUNCE, REPLY, AUTO]
    ]
    assert [m.data for m in got][1] == REPLY


def test_mbox_reading_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "inbox.mbox"
    make_mbox(path, ALL)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    os.utime(path, ns=(1, before[1]))
    read(mbox_messages(path))
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inbox.mbox"]  # no lock files


def test_mbox_skips_oversize_messages_and_filters_by_from_line_date(tmp_path: Path) -> None:
    path = tmp_path / "inbox.mbox"
    path.write_bytes(
        b"From MAILER-DAEMON Sun Oct  1 10:00:00 2017\n" + AUTO.replace(b"2017", b"2016") + b"\n"
        b"From MAILER-DAEMON Wed Nov  1 10:00:00 2017\n" + REPLY + b"\n"
        b"From MAILER-DAEMON Thu Nov  2 10:00:00 2017\n" + BOUNCE + b"x" * 5000 + b"\n"
    )
    got = read(mbox_messages(path, since=date(2017, 10, 20), max_bytes=len(BOUNCE)))
    assert [(m.key, m.skipped) for m in got] == [("#2", None), ("#3", Skip.TOO_LARGE)]
    assert got[0].received == datetime(2017, 11, 1, 10, tzinfo=UTC)


def test_a_file_that_is_not_an_mbox_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "letter.eml"
    path.write_bytes(REPLY)
    with pytest.raises(MailboxError) as caught:
        read(mbox_messages(path))
    assert "not an mbox" in str(caught.value)
    with pytest.raises(MailboxError):
        read(mbox_messages(tmp_path))
