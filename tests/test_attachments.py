"""Attachments: files beside the campaign file, sent with every letter or one recipient's.

Sent to a real SMTP server on 127.0.0.1 and read back with the `email` package: each file
arrives byte for byte under its name and type, the sent archive and the log cover it, a
changed file after a partial send is a changed letter, and every bad path is refused by
file, line, recipient and field before anything leaves.
"""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path

import pytest
from send_helpers import (
    events,
    log_path,
    parse,
    run_cli,
    send,
    sha256,
    write_small_campaign,
)
from smtp_server import SmtpServer

from campaign.message import MAX_LETTER_BYTES

PDF = "letter-2017-10-19.pdf"
OWN = "annex/Приложение №1 — карта «Алматы».png"
# Lines of the file attach_campaign writes: 6 campaign.attachments; r001 at 8, r002 at
# 11 (its own attachments on 14), r003 at 15.
CAMPAIGN_LINE = 6
OWN_LINE = 14


def pdf_bytes(size: int = 150_000, seed: int = 1) -> bytes:
    return b"%PDF-1.4\n" + random.Random(seed).randbytes(size) + b"\n%%EOF\n"


def png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + random.Random(2).randbytes(5000)


def attach_campaign(folder: Path, *, own: str = OWN, pdf: str = PDF) -> Path:
    """Three recipients; every letter carries the PDF, r002's also carries its own file."""
    path = write_small_campaign(folder, 3)
    lines = path.read_text("utf-8").splitlines()
    lines.insert(5, f'  attachments: ["{pdf}"]')
    assert lines[12] == '    emails: ["r002@example.net"]'
    lines.insert(13, f'    attachments: "{own}"')
    path.write_text("\n".join(lines) + "\n", "utf-8")
    (folder / PDF).write_bytes(pdf_bytes())
    (folder / "annex").mkdir(exist_ok=True)
    (folder / OWN).write_bytes(png_bytes())
    return path


def attachments(data: bytes) -> list[tuple[str, str, bytes]]:
    """(file name, type, decoded bytes) of every attachment, as a mail reader finds them."""
    found = []
    for part in parse(data).iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((str(part.get_filename()), part.get_content_type(), payload))
    return found


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    return attach_campaign(tmp_path / "campaign")


def by_id(server: SmtpServer) -> dict[str, bytes]:
    received = {}
    for message in server.messages:
        [address] = message.rcpt_tos
        received[address.partition("@")[0]] = message.data
    return received


# ---- what arrives ------------------------------------------------------------------------


def test_every_letter_carries_the_campaign_pdf_byte_for_byte(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    run = send(campaign_file, smtp_server)
    assert run.status == 0, run.stderr
    received = by_id(smtp_server)
    assert sorted(received) == ["r001", "r002", "r003"]
    for data in received.values():
        assert attachments(data)[0] == (PDF, "application/pdf", pdf_bytes())


def test_a_recipients_own_file_with_a_non_ascii_name_arrives_after_the_campaigns(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    received = by_id(smtp_server)
    assert attachments(received["r002"]) == [
        (PDF, "application/pdf", pdf_bytes()),
        ("Приложение №1 — карта «Алматы».png", "image/png", png_bytes()),
    ]
    assert len(attachments(received["r001"])) == len(attachments(received["r003"])) == 1


def test_the_letter_is_multipart_mixed_with_the_text_first(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    message = parse(by_id(smtp_server)["r002"])
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/pdf", "image/png"]
    assert parts[0].get_content_disposition() is None
    assert parts[0].get_content() == "Dear Recipient 2,\r\n\r\nA short letter.\r\n"
    assert [p.get_content_disposition() for p in parts[1:]] == ["attachment", "attachment"]
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts[1:])


def test_base64_lines_are_76_columns_and_every_line_ends_in_crlf(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    data = by_id(smtp_server)["r001"]
    body = data.partition(b"Content-Transfer-Encoding: base64\r\n\r\n")[2].split(b"\r\n--")[0]
    lines = body.split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76}
    assert 0 < len(lines[-1]) <= 76
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    assert base64.b64decode(b"".join(lines)) == pdf_bytes()


def test_the_file_name_uses_rfc_2231_and_a_plain_fallback_when_ascii(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    data = by_id(smtp_server)["r002"]
    assert f"filename=\"{PDF}\";\r\n filename*=utf-8''{PDF}\r\n".encode() in data
    non_ascii = data.split(b"Content-Disposition: attachment;")[2].split(b"Content-Transfer")[0]
    assert b"filename*0*=utf-8''%D0%9F" in non_ascii and b'filename="' not in non_ascii
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))


def test_a_rebuild_is_byte_identical(campaign_file: Path) -> None:
    assert run_cli(campaign_file, "drafts").status == 0
    outbox = campaign_file.parent / "outbox"
    first = {p.name: p.read_bytes() for p in outbox.glob("*.eml")}
    assert run_cli(campaign_file, "drafts").status == 0
    assert {p.name: p.read_bytes() for p in outbox.glob("*.eml")} == first


# ---- the record ---------------------------------------------------------------------------


def test_the_archive_keeps_the_letters_with_their_attachments_under_the_logs_sha256(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server).status == 0
    received = by_id(smtp_server)
    for rid in ("r001", "r002", "r003"):
        [result] = events(campaign_file, "result", rid)
        kept = (log_path(campaign_file).parent / result["archive"]).read_bytes()
        assert sha256(kept) == result["sha256"]
        assert kept == received[rid]
        assert attachments(kept)[0][2] == pdf_bytes()


def test_the_content_hash_covers_the_attachments(tmp_path: Path, smtp_server: SmtpServer) -> None:
    with_pdf = attach_campaign(tmp_path / "a")
    without = write_small_campaign(tmp_path / "b", 3)
    assert send(with_pdf, smtp_server, "--only", "r001").status == 0
    assert send(without, smtp_server, "--only", "r001").status == 0
    [first] = events(with_pdf, "attempt", "r001")
    [second] = events(without, "attempt", "r001")
    assert first["content_hash"] != second["content_hash"]


# ---- a changed attachment -------------------------------------------------------------------


def test_an_attachment_changed_after_a_partial_send_is_refused_naming_the_recipients(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server, "--only", "r001").status == 0
    (campaign_file.parent / PDF).write_bytes(pdf_bytes(seed=99))
    sessions = smtp_server.sessions
    log_before = log_path(campaign_file).read_bytes()
    run = send(campaign_file, smtp_server)
    assert run.status == 2
    assert "the letter changed since part of the campaign was sent" in run.err
    assert "r001" in run.err and "r002" in run.err and "r003" in run.err
    assert "--allow-changes" in run.err
    assert smtp_server.sessions == sessions
    assert len(smtp_server.messages) == 1
    assert log_path(campaign_file).read_bytes() == log_before


def test_a_recipients_own_file_changed_after_a_partial_send_is_caught_for_them_alone(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server, "--only", "r001", "r002").status == 0
    (campaign_file.parent / OWN).write_bytes(png_bytes() + b"changed")
    run = send(campaign_file, smtp_server)
    assert run.status == 2
    assert "1 already sent had the earlier letter: r002" in run.err
    assert "r001" not in run.err.partition("the letter changed")[2]


def test_allow_changes_sends_the_rest_with_the_changed_attachment(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert send(campaign_file, smtp_server, "--only", "r001").status == 0
    (campaign_file.parent / PDF).write_bytes(pdf_bytes(seed=99))
    run = send(campaign_file, smtp_server, "--allow-changes")
    assert run.status == 0, run.stderr
    received = by_id(smtp_server)
    assert attachments(received["r001"])[0][2] == pdf_bytes()
    assert attachments(received["r003"])[0][2] == pdf_bytes(seed=99)


# ---- drafts ---------------------------------------------------------------------------------


def test_from_outbox_sends_the_drafts_with_their_attachments_byte_for_byte(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert run_cli(campaign_file, "drafts").status == 0
    outbox = campaign_file.parent / "outbox"
    drafts = {p.name: p.read_bytes() for p in outbox.glob("*.eml")}
    run = send(campaign_file, smtp_server, "--from-outbox")
    assert run.status == 0, run.stderr
    received = by_id(smtp_server)
    assert received["r002"] == drafts["02-r002.eml"]
    assert attachments(drafts["02-r002.eml"])[1][2] == png_bytes()


def test_an_unchanged_draft_has_the_content_hash_of_the_build(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert run_cli(campaign_file, "drafts").status == 0
    assert send(campaign_file, smtp_server, "--from-outbox", "--only", "r002").status == 0
    # Built afresh, r002's letter must hash as its draft did, or this run would refuse it
    # as a letter changed after it was sent.
    run = send(campaign_file, smtp_server)
    assert run.status == 0, run.stderr
    assert len(smtp_server.messages) == 3
    assert "changed" not in run.err


def test_a_draft_whose_attachment_was_swapped_is_refused(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert run_cli(campaign_file, "drafts").status == 0
    draft = campaign_file.parent / "outbox" / "01-r001.eml"
    original = base64.encodebytes(pdf_bytes()).replace(b"\n", b"\r\n")
    swapped = base64.encodebytes(pdf_bytes(seed=7)).replace(b"\n", b"\r\n")
    data = draft.read_bytes()
    assert original in data
    draft.write_bytes(data.replace(original, swapped))
    run = send(campaign_file, smtp_server, "--from-outbox")
    assert run.status == 2
    assert "r001" in run.err and f"the attachment '{PDF}' in the draft" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(campaign_file).exists()


def test_a_draft_that_lost_its_attachment_is_refused(
    campaign_file: Path, smtp_server: SmtpServer
) -> None:
    assert run_cli(campaign_file, "drafts").status == 0
    draft = campaign_file.parent / "outbox" / "03-r003.eml"
    data = draft.read_bytes()
    boundary = data.split(b'boundary="')[1].split(b'"')[0]
    head, _, _ = data.partition(b"\r\n--" + boundary + b"\r\nContent-Type: application/pdf")
    draft.write_bytes(head + b"\r\n--" + boundary + b"--\r\n")
    run = send(campaign_file, smtp_server, "--from-outbox")
    assert run.status == 2
    assert "r003" in run.err and "the draft's attachments are none" in run.err
    assert smtp_server.sessions == 0


# ---- refused before anything leaves ----------------------------------------------------------


def refused_check(path: Path) -> str:
    run = run_cli(path, "check")
    assert run.status == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    return run.err


def test_a_symlink_out_of_the_campaign_folder_is_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign")
    outside = tmp_path / "secret.pdf"
    outside.write_bytes(pdf_bytes())
    (path.parent / PDF).unlink()
    (path.parent / PDF).symlink_to(outside)
    err = refused_check(path)
    assert f"{path}:{CAMPAIGN_LINE}: field 'campaign.attachments':" in err
    assert "leads outside the campaign file's folder" in err


def test_a_symlinked_folder_out_of_the_campaign_folder_is_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Приложение №1 — карта «Алматы».png").write_bytes(png_bytes())
    for item in (path.parent / "annex").iterdir():
        item.unlink()
    (path.parent / "annex").rmdir()
    (path.parent / "annex").symlink_to(elsewhere)
    err = refused_check(path)
    assert f"{path}:{OWN_LINE}: recipient 'r002', field 'attachments':" in err
    assert "leads outside" in err


def test_a_symlink_that_stays_inside_the_folder_is_followed(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    path = attach_campaign(tmp_path / "campaign")
    (path.parent / "signed").mkdir()
    (path.parent / PDF).rename(path.parent / "signed" / "v3.pdf")
    (path.parent / PDF).symlink_to(Path("signed") / "v3.pdf")
    assert send(path, smtp_server, "--only", "r001").status == 0
    assert attachments(smtp_server.messages[0].data)[0][:2] == (PDF, "application/pdf")


def test_a_missing_file_is_refused_naming_the_recipient(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign")
    (path.parent / OWN).unlink()
    err = refused_check(path)
    assert f"{path}:{OWN_LINE}: recipient 'r002', field 'attachments': no file" in err
    assert "Приложение" in err


def test_a_folder_is_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign", pdf="annex")
    err = refused_check(path)
    assert f"{path}:{CAMPAIGN_LINE}: field 'campaign.attachments': 'annex' is a folder" in err


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("../letter.pdf", "climbs out of the campaign file's folder"),
        ("/etc/hostname", "is not a path relative to the campaign file's folder"),
        ("~/letter.pdf", "is not a path relative to the campaign file's folder"),
    ],
)
def test_a_path_out_of_the_folder_is_refused(tmp_path: Path, written: str, said: str) -> None:
    path = attach_campaign(tmp_path / "campaign", pdf=written)
    (tmp_path / "letter.pdf").write_bytes(pdf_bytes())
    err = refused_check(path)
    assert f"{path}:{CAMPAIGN_LINE}: field 'campaign.attachments':" in err
    assert said in err


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign")
    (path.parent / PDF).write_bytes(b"")
    assert f"'{PDF}' is empty" in refused_check(path)


def test_two_attachments_of_one_name_are_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign", own=f"annex/{PDF}")
    (path.parent / "annex" / PDF).write_bytes(pdf_bytes(seed=3))
    err = refused_check(path)
    assert f"{path}:{OWN_LINE}: recipient 'r002', field 'attachments': two attachments" in err


def test_one_file_over_the_letter_size_limit_is_refused_when_the_file_is_read(
    tmp_path: Path,
) -> None:
    path = attach_campaign(tmp_path / "campaign")
    with open(path.parent / PDF, "wb") as handle:  # sparse: the size is what counts
        handle.truncate(MAX_LETTER_BYTES * 3 // 4 + 1)
    err = refused_check(path)
    assert f"{path}:{CAMPAIGN_LINE}: field 'campaign.attachments':" in err
    assert "over the letter size limit" in err


def test_attachments_over_the_limit_together_are_refused_for_that_letter(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    path = attach_campaign(tmp_path / "campaign")
    # Each under the limit, the two together over it once base64-encoded.
    (path.parent / PDF).write_bytes(os.urandom(4 * 2**20))
    (path.parent / OWN).write_bytes(os.urandom(4 * 2**20))
    run = send(path, smtp_server)
    assert run.status == 2
    assert f"{path}:{OWN_LINE}: recipient 'r002', field 'attachments':" in run.err
    assert "bytes as sent (base64), over the limit of 10,485,760" in run.err
    assert smtp_server.sessions == 0
    assert not log_path(path).exists()


def test_a_list_holding_a_number_is_refused(tmp_path: Path) -> None:
    path = attach_campaign(tmp_path / "campaign", pdf='", 3, "x')
    err = refused_check(path)
    assert f"{path}:{CAMPAIGN_LINE}: field 'campaign.attachments': expected a file name" in err


# ---- check ---------------------------------------------------------------------------------


def test_check_lists_the_attachments_with_their_sizes(campaign_file: Path) -> None:
    run = run_cli(campaign_file, "check")
    assert run.status == 0, run.stderr
    assert f"attached to every letter: {PDF} (146.5 KiB)" in run.out
    assert "own attachments" in run.out
    assert "4.9 KiB" in run.out and "Приложение" in run.out


def test_check_of_a_long_list_shows_a_recipients_own_files_on_their_line(tmp_path: Path) -> None:
    path = write_small_campaign(tmp_path / "campaign", 201)  # past the drawn table's limit
    text = path.read_text("utf-8").replace(
        '    emails: ["r002@example.net"]\n',
        f'    emails: ["r002@example.net"]\n    attachments: ["{OWN}"]\n',
    )
    path.write_text(text, "utf-8")
    (path.parent / "annex").mkdir()
    (path.parent / OWN).write_bytes(png_bytes())
    run = run_cli(path, "check")
    assert run.status == 0, run.stderr
    [line] = [line for line in run.stdout.splitlines() if " r002 " in line]
    assert line.endswith(f"<r002@example.net>  [{OWN} (4.9 KiB)]")
    [other] = [line for line in run.stdout.splitlines() if " r003 " in line]
    assert other.endswith("<r003@example.net>")


def test_attachment_paths_can_be_checked_against_another_folder(tmp_path: Path) -> None:
    # As `campaign import` needs: its YAML is checked in a temporary file elsewhere.
    from campaign.loading import Options, load_campaign

    path = attach_campaign(tmp_path / "campaign")
    elsewhere = tmp_path / "elsewhere" / "recipients.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(path.read_bytes())
    source = load_campaign(Options(elsewhere, attachments_folder=path.parent))
    [pdf] = source.campaign.attachments
    assert pdf.path == (path.parent / PDF).resolve() and pdf.size == len(pdf_bytes())
