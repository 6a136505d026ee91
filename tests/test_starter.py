"""`campaign init`: a starter campaign that passes `check`, written over nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaign_factory import REPO, run_cli

from campaign.errors import CampaignError
from campaign.loading import Options, load_campaign
from campaign.starter import init_campaign

STARTER = REPO / "campaign" / "starter"
RESERVED_DOMAINS = {"example.org", "example.net", "example.com"}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder`, relative, with its bytes (None for a folder)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def test_init_writes_the_starter_files_and_an_empty_outbox(tmp_path: Path) -> None:
    folder = tmp_path / "new-campaign"
    created = init_campaign(folder)
    assert created == [
        folder / "recipients.yaml",
        folder / "templates" / "letter.txt.j2",
        folder / "templates" / "letter.html.j2",
        folder / "outbox",
    ]
    assert tree(folder) == {
        "outbox": None,
        "recipients.yaml": (STARTER / "recipients.yaml").read_bytes(),
        "templates": None,
        "templates/letter.html.j2": (STARTER / "templates" / "letter.html.j2").read_bytes(),
        "templates/letter.txt.j2": (STARTER / "templates" / "letter.txt.j2").read_bytes(),
    }


def test_check_passes_on_a_new_campaign(tmp_path: Path) -> None:
    init_campaign(tmp_path)
    result = run_cli("--file", tmp_path / "recipients.yaml", "check")
    assert result.status == 0, result.stderr
    assert "my-open-letter: 3 recipients, 4 addresses" in result.out
    assert "All 3 letters render." in result.out


def test_drafts_of_a_new_campaign_go_to_its_outbox(tmp_path: Path) -> None:
    init_campaign(tmp_path)
    result = run_cli("--file", tmp_path / "recipients.yaml", "drafts")
    assert result.status == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "outbox").iterdir()) == [
        "01-ministry-of-examples.eml",
        "02-sample-office.eml",
        "03-illustration-committee.eml",
    ]


def test_every_address_of_the_starter_is_at_a_reserved_domain(tmp_path: Path) -> None:
    init_campaign(tmp_path)
    source = load_campaign(Options(tmp_path / "recipients.yaml"))
    domains = {address.rpartition("@")[2] for r in source.recipients for address in r.addresses}
    assert domains <= RESERVED_DOMAINS
    assert source.campaign.sender.domain in RESERVED_DOMAINS


def test_init_twice_is_refused_and_leaves_the_first_as_it_was(tmp_path: Path) -> None:
    init_campaign(tmp_path)
    (tmp_path / "recipients.yaml").write_text("# edited by the user\n", encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(CampaignError) as excinfo:
        init_campaign(tmp_path)
    assert excinfo.value.path == str(tmp_path / "recipients.yaml")
    assert f"refusing to overwrite {tmp_path / 'recipients.yaml'}" in str(excinfo.value)
    assert tree(tmp_path) == before


def test_one_existing_target_stops_init_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "letter.html.j2").write_text("<p>mine</p>", encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(CampaignError) as excinfo:
        init_campaign(tmp_path)
    assert excinfo.value.message == (
        f"refusing to overwrite {tmp_path / 'templates' / 'letter.html.j2'}"
    )
    assert tree(tmp_path) == before


def test_an_existing_outbox_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    with pytest.raises(CampaignError) as excinfo:
        init_campaign(tmp_path)
    assert excinfo.value.message == f"refusing to overwrite {tmp_path / 'outbox'}"
    assert tree(tmp_path) == {"outbox": None}


def test_other_files_in_the_folder_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "other.txt.j2").write_text("mine", encoding="utf-8")
    init_campaign(tmp_path)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert (tmp_path / "templates" / "other.txt.j2").read_text(encoding="utf-8") == "mine"


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "campaign").write_text("a file", encoding="utf-8")
    with pytest.raises(CampaignError, match="a file is in the way"):
        init_campaign(tmp_path / "campaign" / "sub")
    assert tree(tmp_path) == {"campaign": b"a file"}
