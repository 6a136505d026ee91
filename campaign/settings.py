"""SMTP settings: from the environment, the file's `smtp:` section and the command line, checked."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from campaign.errors import SmtpSettingsError
from campaign.models import SMTP_SECURITY_MODES, SmtpFileSettings

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
PASSWORD_VARIABLE = "CAMPAIGN_SMTP_PASSWORD"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    ca_file: Path | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """Where and how, never the password."""
        login = f"login {self.username}" if self.username else "no login"
        return f"smtp://{self.host}:{self.port} ({self.security}, {login})"

    def __repr__(self) -> str:  # keep the password out of any accidental print
        return f"SmtpSettings({self.describe()!r})"


def is_loopback(host: str) -> bool:
    """True only for loopback addresses and `localhost`, decided without any lookup."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_settings(
    environ: Mapping[str, str],
    file_settings: SmtpFileSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    security: str | None = None,
) -> SmtpSettings:
    """Command line over environment over file; defaults: port 587, STARTTLS required."""

    def pick(cli: str | None, variable: str, from_file: str | None) -> str | None:
        return cli or environ.get(variable) or from_file

    chosen_host = pick(host, "CAMPAIGN_SMTP_HOST", file_settings.host)
    if not chosen_host:
        raise SmtpSettingsError(
            "no SMTP server is set",
            hint="set CAMPAIGN_SMTP_HOST (and CAMPAIGN_SMTP_PORT), or pass --smtp-host",
        )
    chosen_security = (
        pick(security, "CAMPAIGN_SMTP_SECURITY", file_settings.security) or "starttls"
    ).lower()
    if chosen_security not in SMTP_SECURITY_MODES:
        raise SmtpSettingsError(
            f"'{chosen_security}' is not a security mode",
            field="CAMPAIGN_SMTP_SECURITY",
            hint=f"expected one of {', '.join(SMTP_SECURITY_MODES)}",
        )
    chosen_port: int
    port_text = environ.get("CAMPAIGN_SMTP_PORT")
    if port is not None:
        chosen_port = port
    elif port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SmtpSettingsError(
                f"'{port_text}' is not a port number", field="CAMPAIGN_SMTP_PORT"
            )
        chosen_port = int(port_text)
    else:
        chosen_port = file_settings.port or DEFAULT_PORTS[chosen_security]
    username = environ.get("CAMPAIGN_SMTP_USERNAME") or file_settings.username
    password = environ.get(PASSWORD_VARIABLE) or None
    ca_text = environ.get("CAMPAIGN_SMTP_CA_FILE") or file_settings.ca_file
    ca_file = Path(ca_text) if ca_text else None
    if ca_file is not None and not ca_file.is_file():
        raise SmtpSettingsError(
            f"the CA file {ca_file} does not exist", field="CAMPAIGN_SMTP_CA_FILE"
        )
    if chosen_security == "none":
        if not is_loopback(chosen_host):
            raise SmtpSettingsError(
                f"security 'none' sends in clear text; it is allowed only to a loopback"
                f" host, not to {chosen_host}",
                hint="use starttls (port 587) or tls (port 465)",
            )
        if username:
            raise SmtpSettingsError(
                "credentials never travel without TLS: security is 'none' but a username is set",
                hint="use starttls or tls, or unset CAMPAIGN_SMTP_USERNAME",
            )
    return SmtpSettings(chosen_host, chosen_port, chosen_security, username, password, ca_file)
