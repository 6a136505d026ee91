"""The offline commands end to end: check, preview, drafts; exit statuses; `python -m campaign`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from campaign_factory import (
    BUNDLED_FILES,
    BUNDLED_IDS,
    GOOD_YAML,
    REPO,
    copy_bundled,
    draft_bundled,
    parse_eml,
    run_cli,
    snapshot,
    write_campaign,
)

# check


def test_check_passes_on_the_bundled_campaign(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert "All 6 letters render." in result.out


def test_check_lists_every_recipient_with_its_addresses(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert "kz-open-letter-2017-10: 6 recipients, 8 addresses, from campaign@example.org" in (
        result.out
    )
    for rid in BUNDLED_IDS:
        assert rid in result.stdout
    for address in ("aprk@akorda.kz", "Gp-rk@prokuror.kz", "procuror@nursat.kz", "Kense@mvd.kz"):
        assert address in result.stdout


def test_check_on_a_long_file_prints_one_plain_line_per_recipient_in_file_order(
    tmp_path: Path,
) -> None:
    head = GOOD_YAML[: GOOD_YAML.index("  - id:")]
    rows = "".join(
        f'  - {{id: "r{i:04d}", name: "Zoë {i}", emails: ["r{i}@example.net"]}}\n'
        for i in range(1, 2501)
    )
    result = run_cli("--file", write_campaign(tmp_path, head + rows), "check")
    assert result.status == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 2500
    assert lines[0] == ["1", "r0001", "ok", "Zoë", "1", "<r1@example.net>"]
    assert lines[-1] == ["2500", "r2500", "ok", "Zoë", "2500", "<r2500@example.net>"]
    assert [int(line[0]) for line in lines] == list(range(1, 2501))
    assert "All 2500 letters render." in result.out


def test_check_warns_about_the_procuror_typo(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert (
        "warning: general-prosecutor: procuror@nursat.kz: 'procuror' looks like a misspelling"
        " of 'prokuror' (as in Gp-rk@prokuror.kz); kept as written"
    ) in result.out


def test_check_warns_about_the_mbudsman_typo(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert (
        "warning: ombudsman: mbudsman@ombudsman.kz: 'mbudsman' looks like a misspelling"
        " of 'ombudsman' (as in its domain); kept as written"
    ) in result.out


def test_check_warns_about_the_kazakstan_typo(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert (
        "warning: ministry-of-justice: 'Kazakstan' looks like a misspelling of 'Kazakhstan'"
    ) in result.out


def test_check_warns_that_the_sender_is_a_placeholder(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert "warning: the sender campaign@example.org is a placeholder" in result.out
    assert "set campaign.from in recipients.yaml: `campaign send` refuses it" in result.out


def test_check_gives_exactly_four_warnings_on_the_bundled_campaign(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    assert result.out.count("warning:") == 4


def test_check_marks_warned_recipients_in_the_table(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "check")
    rows = {
        line.split("│")[2].strip(): line.split("│")[5].strip()
        for line in result.stdout.splitlines()
        if line.count("│") == 6 and line.split("│")[2].strip() in BUNDLED_IDS
    }
    assert rows == {
        "president": "ok",
        "general-prosecutor": "warning",
        "national-security-committee": "ok",
        "ministry-of-internal-affairs": "ok",
        "ministry-of-justice": "warning",
        "ombudsman": "warning",
    }


def test_check_writes_nothing(tmp_path: Path) -> None:
    copy_bundled(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert run_cli("--file", tmp_path / "recipients.yaml", "check").status == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_check_without_placeholder_sender_does_not_warn_about_it(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace("sender@example.org", "me@campaign.eu"))
    result = run_cli("--file", path, "check")
    assert result.status == 0
    assert "is a placeholder" not in result.out


def test_check_reports_a_render_error_in_the_table_and_exits_2(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML, "{{ recipient.title }}\n")
    result = run_cli("--file", path, "check")
    assert result.status == 2
    assert "error" in result.stdout  # the table's status column
    assert "field 'title': undefined variable" in result.err
    assert "(for 2 recipients: alice, bob)" in result.err
    assert "Traceback" not in result.stderr


def test_check_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML.replace('id: "bob"', 'id: "alice"'))
    result = run_cli("--file", path, "check")
    assert result.status == 2
    assert "the id 'alice' is used twice" in result.err


# drafts


def test_drafts_lists_the_files_it_wrote(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    result = run_cli("--file", path, "drafts")
    assert result.status == 0
    assert f"Wrote 6 drafts to {tmp_path / 'outbox'}:" in result.out
    for name in BUNDLED_FILES:
        assert f"  {name}\n" in result.stdout
    assert "Replaced" not in result.stdout


def test_drafts_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        outbox = draft_bundled(tmp_path)
    finally:
        os.umask(previous)
    modes = {path.stat().st_mode & 0o777 for path in outbox.glob("*.eml")}
    assert modes == {0o600}


def test_drafts_again_says_it_replaced_six(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    assert run_cli("--file", path, "drafts").status == 0
    result = run_cli("--file", path, "drafts")
    assert result.status == 0
    assert "Replaced 6 existing drafts of the same name." in result.out


def test_drafts_again_leaves_six_files_and_no_temporary_ones(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    assert run_cli("--file", tmp_path / "recipients.yaml", "drafts").status == 0
    assert sorted(p.name for p in outbox.iterdir()) == list(BUNDLED_FILES)


def test_drafts_remove_the_draft_of_a_recipient_no_longer_in_the_file(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("--file", path, "drafts").status == 0
    path.write_text(GOOD_YAML[: GOOD_YAML.index('  - id: "bob"')], encoding="utf-8")
    result = run_cli("--file", path, "drafts")
    assert result.status == 0
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["01-alice.eml"]
    assert "Removed 1 draft(s) of recipients no longer in the file: 02-bob.eml" in result.out


def edit_by_hand(path: Path) -> bytes:
    """Change a draft as a person would in an editor, later than campaign wrote it."""
    edited = path.read_bytes().replace(b"\r\n\r\n", b"\r\n\r\nP.S. A word of my own.\r\n", 1)
    path.write_bytes(edited)
    return edited


def test_each_draft_carries_its_date_as_its_modification_time(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    for name in BUNDLED_FILES:
        path = outbox / name
        dated = parse_eml(path)["Date"].datetime
        assert path.stat().st_mtime_ns // 1_000_000_000 == int(dated.timestamp()), name


def test_an_edit_that_keeps_the_drafts_time_is_still_kept(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    path = outbox / "01-president.eml"
    written = path.stat().st_mtime_ns
    edited = edit_by_hand(path)
    os.utime(path, ns=(written, written))  # as `touch -r` or a copy with `cp -p` leaves it
    assert run_cli("--file", tmp_path / "recipients.yaml", "drafts").status == 0
    [kept] = (outbox / "edited-drafts").iterdir()
    assert kept.read_bytes() == edited


def test_an_edited_draft_larger_than_a_letter_may_be_is_kept_too(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    path = outbox / "01-president.eml"
    edited = path.read_bytes() + b"x" * (11 * 2**20)
    path.write_bytes(edited)
    result = run_cli("--file", tmp_path / "recipients.yaml", "drafts")
    assert result.status == 0, result.err
    [kept] = (outbox / "edited-drafts").iterdir()
    assert kept.read_bytes() == edited
    assert len(path.read_bytes()) < len(edited)


def test_drafts_into_a_linked_outbox_are_refused_before_anything_is_kept(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    edit_by_hand(outbox / "01-president.eml")
    (tmp_path / "link").symlink_to(outbox)
    before = snapshot(outbox)
    link = tmp_path / "link"
    result = run_cli("--file", tmp_path / "recipients.yaml", "drafts", "--outbox", link)
    assert result.status == 2
    assert "is a symbolic link; campaign never writes through one" in result.err
    assert snapshot(outbox) == before


def test_drafts_again_keep_a_draft_edited_by_hand_as_it_was(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    edited = edit_by_hand(outbox / "01-president.eml")
    result = run_cli("--file", tmp_path / "recipients.yaml", "drafts")
    assert result.status == 0, result.err
    [kept] = (outbox / "edited-drafts").iterdir()
    assert kept.name.startswith("01-president.edited-") and kept.suffix == ".eml"
    assert kept.read_bytes() == edited
    assert (outbox / "01-president.eml").read_bytes() != edited
    assert "Replaced 6 existing drafts of the same name." in result.out
    assert (
        "Kept 1 draft(s) changed since campaign wrote them (by hand, or by an older version of"
        f" campaign), as they were, in {outbox / 'edited-drafts'}: {kept.name}"
    ) in result.out


def test_a_draft_written_again_unedited_is_not_kept_twice(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    edit_by_hand(outbox / "01-president.eml")
    for _ in range(2):
        assert run_cli("--file", tmp_path / "recipients.yaml", "drafts").status == 0
    assert len(list((outbox / "edited-drafts").iterdir())) == 1


def test_an_edited_draft_of_a_recipient_no_longer_in_the_file_is_kept_before_it_goes(
    tmp_path: Path,
) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("--file", path, "drafts").status == 0
    edited = edit_by_hand(tmp_path / "outbox" / "02-bob.eml")
    path.write_text(GOOD_YAML[: GOOD_YAML.index('  - id: "bob"')], encoding="utf-8")
    result = run_cli("--file", path, "drafts")
    assert result.status == 0, result.err
    assert not (tmp_path / "outbox" / "02-bob.eml").exists()
    [kept] = (tmp_path / "outbox" / "edited-drafts").iterdir()
    assert kept.read_bytes() == edited
    assert "Removed 1 draft(s) of recipients no longer in the file: 02-bob.eml" in result.out


def test_an_edited_draft_that_cannot_be_kept_stops_the_run_before_anything_is_written(
    tmp_path: Path,
) -> None:
    outbox = draft_bundled(tmp_path)
    edit_by_hand(outbox / BUNDLED_FILES[1])
    (outbox / "edited-drafts").write_text("not a folder")
    before = snapshot(outbox)
    result = run_cli("--file", tmp_path / "recipients.yaml", "drafts")
    assert result.status == 2
    assert f"{outbox / 'edited-drafts'}: is not a folder" in result.err
    assert "Traceback" not in result.stderr
    assert snapshot(outbox) == before


def test_drafts_leave_other_files_in_the_outbox_alone(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "notes.txt").write_text("mine")
    (tmp_path / "outbox" / "my-letter.eml").write_text("mine")
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("--file", path, "drafts").status == 0
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        "01-alice.eml",
        "02-bob.eml",
        "my-letter.eml",
        "notes.txt",
    ]


def test_outbox_option_after_the_command(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "campaign", GOOD_YAML)
    result = run_cli("--file", path, "drafts", "--outbox", tmp_path / "review")
    assert result.status == 0
    assert sorted(p.name for p in (tmp_path / "review").iterdir()) == [
        "01-alice.eml",
        "02-bob.eml",
    ]
    assert not (tmp_path / "campaign" / "outbox").exists()


def test_outbox_option_before_the_command(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "campaign", GOOD_YAML)
    result = run_cli("--outbox", tmp_path / "review", "--file", path, "drafts")
    assert result.status == 0
    assert (tmp_path / "review" / "02-bob.eml").is_file()


def test_file_option_after_the_command(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    assert run_cli("drafts", "--file", path).status == 0
    assert (tmp_path / "outbox" / "01-alice.eml").is_file()


def test_default_file_is_recipients_yaml_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_bundled(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("drafts")
    assert result.status == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == list(BUNDLED_FILES)


# preview


def test_preview_prints_the_headers_of_the_chosen_recipient(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview", "ombudsman")
    assert result.status == 0, result.stderr
    assert "06-ombudsman.eml" in result.stdout
    assert "From: Campaign Office <campaign@example.org>" in result.stdout
    assert (
        "To: Askar Shakirov <info@ombudsman.kz>, Askar Shakirov <mbudsman@ombudsman.kz>"
    ) in result.stdout
    assert "Subject: Open letter from Members of the European Parliament" in result.stdout
    assert "Message-ID: <kz-open-letter-2017-10.ombudsman@example.org>" in result.stdout
    assert "Date: Tue, 02 Jan 2024 03:04:05 +0000" in result.stdout
    assert (
        "Envelope: campaign@example.org -> info@ombudsman.kz, mbudsman@ombudsman.kz"
    ) in result.stdout


def test_preview_prints_the_plain_body(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview", "ombudsman")
    text = result.stdout.replace("\r\n", "\n")
    assert "\nDear Mr Shakirov,\n\nWe, Members of the European Parliament" in text
    assert "<p>" not in text


def test_preview_shows_only_the_chosen_recipients(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview", "ombudsman", "president")
    assert "01-president.eml" in result.stdout
    assert "06-ombudsman.eml" in result.stdout
    for name in BUNDLED_FILES[1:5]:
        assert name not in result.stdout
    assert "2 message(s) shown; nothing was written or sent." in result.out


def test_preview_without_ids_shows_everyone(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview")
    assert all(name in result.stdout for name in BUNDLED_FILES)
    assert "6 message(s) shown" in result.out


def test_preview_html_prints_the_html_part(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview", "--html", "president")
    assert result.status == 0
    assert "<!DOCTYPE html>" in result.stdout
    assert "<p>Dear Mr President,</p>" in result.stdout


def test_preview_html_of_a_text_only_campaign_says_there_is_none(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, GOOD_YAML)
    result = run_cli("--file", path, "preview", "--html", "alice")
    assert result.status == 0
    assert "(no such part)" in result.stdout


def test_preview_writes_nothing_not_even_the_outbox(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert run_cli("--file", path, "preview").status == 0
    assert run_cli("--file", path, "preview", "--html").status == 0
    assert not (tmp_path / "outbox").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_preview_of_an_unknown_id_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli("--file", copy_bundled(tmp_path), "preview", "president", "nobody")
    assert result.status == 2
    assert "no recipient with id 'nobody'" in result.err
    assert "'president'" not in result.err
    assert "Traceback" not in result.stderr


def test_preview_leaves_an_existing_outbox_untouched(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    before = snapshot(outbox)
    later = datetime(2031, 1, 1, tzinfo=UTC)
    assert run_cli("--file", tmp_path / "recipients.yaml", "preview", clock=later).status == 0
    assert snapshot(outbox) == before


def test_preview_shows_the_same_message_drafts_writes(tmp_path: Path) -> None:
    outbox = draft_bundled(tmp_path)
    result = run_cli("--file", tmp_path / "recipients.yaml", "preview", "president")
    body = parse_eml(outbox / BUNDLED_FILES[0]).get_body(preferencelist=("plain",))
    assert body is not None
    assert str(body.get_content()).replace("\r\n", "\n") in result.stdout.replace("\r\n", "\n")


# usage


def test_no_command_prints_the_help(tmp_path: Path) -> None:
    result = run_cli()
    assert result.status == 0
    assert "usage: campaign" in result.out
    for command in ("check", "preview", "drafts", "send", "log", "resolve", "init", "import"):
        assert command in result.out


def test_unknown_command_is_a_usage_error() -> None:
    assert run_cli("sned").status == 2


@pytest.mark.parametrize("command", ["check", "preview", "drafts"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    run = run_cli(command, "--help")
    assert run.status == 0
    help_text = run.stdout
    assert "example:" in help_text
    assert f"  campaign {command}" in help_text


def test_python_dash_m_campaign_runs_check(tmp_path: Path) -> None:
    path = copy_bundled(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "campaign", "--file", str(path), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "All 6 letters render." in " ".join(done.stdout.split())
