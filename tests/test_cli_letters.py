"""The commands around a campaign: init, import, password, and the letter size limit."""

from __future__ import annotations

import io
from pathlib import Path

import keyring
import pytest
from campaign_factory import GOOD_YAML, run_cli, write_campaign
from send_helpers import copy_bundled, smtp_environ
from smtp_server import SmtpServer, TlsFiles
from test_credentials import MemoryKeyring

from campaign.cli import Environment, main
from campaign.credentials import SERVICE, keyring_username
from campaign.loading import Options, load_campaign


def test_init_then_check_passes(tmp_path: Path) -> None:
    folder = tmp_path / "new-campaign"
    made = run_cli("init", folder)
    assert made.status == 0, made.stderr
    assert "created" in made.out and "check" in made.out
    checked = run_cli("--file", folder / "recipients.yaml", "check")
    assert checked.status == 0, checked.stderr
    again = run_cli("init", folder)
    assert again.status == 2 and "Traceback" not in again.stderr


MESSY_CSV = (
    "\ufeffName;E-mail;Organisation\r\n"
    '"Anna Example";anna@example.org;"Ministry of Letters, Dept. 1"\r\n'
    ";;\r\n"
    'Bob Example;"bob@example.net; bob2@example.net";Office\r\n'
)


def test_import_prints_the_recipients_section_read_back_by_the_loader(tmp_path: Path) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_bytes(MESSY_CSV.encode("utf-8"))
    run = run_cli("import", csv_file)
    assert run.status == 0, run.stderr
    assert run.stdout.startswith("recipients:\n")
    campaign = GOOD_YAML.split("recipients:")[0]
    path = write_campaign(tmp_path / "c", campaign + run.stdout)
    source = load_campaign(Options(path))
    assert [r.id for r in source.recipients] == ["anna-example", "bob-example"]
    assert source.recipients[0].data["organisation"] == "Ministry of Letters, Dept. 1"
    assert source.recipients[1].addresses == ("bob@example.net", "bob2@example.net")


def test_import_names_the_csv_line_of_a_bad_address(tmp_path: Path) -> None:
    lines = ["name,email"] + [f"Person {n},p{n}@example.org" for n in range(1, 6)]
    lines.insert(6, "Broken,not-an-address")  # line 7 of the file
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("\n".join(lines) + "\n", "utf-8")
    run = run_cli("import", csv_file)
    assert run.status == 2 and "Traceback" not in run.stderr
    assert "people.csv:7" in run.err and run.stdout == ""


def login_campaign(
    tmp_path: Path, make_smtp_server: object, smtp_tls: TlsFiles
) -> tuple[Path, dict[str, str]]:
    """The bundled campaign and the settings of a STARTTLS server where campaigner/right logs in."""
    server = make_smtp_server(  # type: ignore[operator]
        starttls_context=smtp_tls.server_context, auth={"campaigner": "right"}
    )
    environ = {
        **smtp_environ(server, CAMPAIGN_SMTP_SECURITY="starttls"),
        "CAMPAIGN_SMTP_USERNAME": "campaigner",
        "CAMPAIGN_SMTP_CA_FILE": str(smtp_tls.ca_file),
    }
    return copy_bundled(tmp_path / "c"), environ


def test_password_set_stores_it_after_a_login_and_forget_removes_it(
    tmp_path: Path, make_smtp_server: object, smtp_tls: TlsFiles
) -> None:
    file, environ = login_campaign(tmp_path, make_smtp_server, smtp_tls)
    store = MemoryKeyring()

    def campaign(*argv: str, answer: str = "right") -> tuple[int, str]:
        out = io.StringIO()
        env = Environment(
            stdout=out,
            stderr=out,
            environ=environ,
            terminal=False,
            prompt=lambda _: answer,
            keyring=store,
        )
        return main(["--file", str(file), *argv], env), out.getvalue()

    status, said = campaign("password", "set", answer="wrong")
    assert status == 2 and "login failed" in said
    assert store.get_password(SERVICE, keyring_username("campaigner", "127.0.0.1")) is None
    status, said = campaign("password", "set")
    assert status == 0, said
    assert store.get_password(SERVICE, keyring_username("campaigner", "127.0.0.1")) == "right"
    assert "right" not in said
    status, said = campaign("password", "forget")
    assert status == 0 and "Removed the password" in said
    assert store.get_password(SERVICE, keyring_username("campaigner", "127.0.0.1")) is None
    assert keyring  # the library itself is present (the dev extra installs it)


def test_password_set_takes_the_environment_and_ctrl_d_at_the_prompt_is_a_refusal(
    tmp_path: Path, make_smtp_server: object, smtp_tls: TlsFiles
) -> None:
    file, environ = login_campaign(tmp_path, make_smtp_server, smtp_tls)
    store = MemoryKeyring()

    def end_of_input(_: str) -> str:
        raise EOFError

    def campaign(extra: dict[str, str]) -> tuple[int, str]:
        out = io.StringIO()
        env = Environment(
            stdout=out,
            stderr=out,
            environ={**environ, **extra},
            terminal=False,
            prompt=end_of_input,
            keyring=store,
        )
        return main(["--file", str(file), "password", "set"], env), out.getvalue()

    status, said = campaign({})
    assert status == 2 and "no password was typed" in said and "Traceback" not in said
    assert store.get_password(SERVICE, keyring_username("campaigner", "127.0.0.1")) is None
    status, said = campaign({"CAMPAIGN_SMTP_PASSWORD": "right"})
    assert status == 0, said
    assert store.get_password(SERVICE, keyring_username("campaigner", "127.0.0.1")) == "right"


def test_a_letter_over_the_campaigns_own_size_limit_is_refused(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    yaml_text = GOOD_YAML.replace('  from: "', '  max_letter_size: 1\n  from: "')
    path = write_campaign(tmp_path, yaml_text, "{{ 'word ' * 300000 }}\n")
    run = run_cli("--file", path, "check")
    assert run.status == 2
    assert "1,048,576" in run.err and "alice" in run.err


@pytest.mark.parametrize("value", ["0", '"ten"', "2048"])
def test_a_bad_size_limit_is_refused_with_its_line(tmp_path: Path, value: str) -> None:
    yaml_text = GOOD_YAML.replace('  from: "', f'  max_letter_size: {value}\n  from: "')
    run = run_cli("--file", write_campaign(tmp_path, yaml_text), "check")
    assert run.status == 2
    assert "field 'campaign.max_letter_size'" in run.err
