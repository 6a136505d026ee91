"""Passwords for the mail servers: the environment first, then the OS keyring, else nothing.

The keyring library is a dependency, imported only when a password is not in the
environment; a machine without a usable keyring backend falls back to the prompt. Entries
live under the service name `campaign`, with `<username>@<host>` as the keyring's user name
(the host lowercased, without a trailing dot), so one login on two servers keeps two
entries. No function here prints, logs or puts a password into an error.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

from campaign.errors import CampaignError

SERVICE = "campaign"
MAX_PASSWORD_LENGTH = 4096  # longer is not a password a server would take: treat as unusable
INSTALL_HINT = "install it into campaign's environment: pip install keyring"


class PasswordBackend(Protocol):
    """What is used of a keyring backend (every `keyring.backend.KeyringBackend` is one)."""

    def get_password(self, service: str, username: str) -> str | None: ...

    def set_password(self, service: str, username: str, password: str) -> None: ...

    def delete_password(self, service: str, username: str) -> None: ...


def keyring_username(username: str, host: str) -> str:
    """The keyring's user name for a login on a server: `me@example.org@smtp.example.org`."""
    return f"{username}@{host.lower().rstrip('.')}"


def lookup_password(
    username: str,
    host: str,
    environ: Mapping[str, str],
    *,
    variable: str,
    backend: PasswordBackend | None = None,
) -> str | None:
    """The password from `environ[variable]`, else from the keyring, else None.

    `backend` defaults to the keyring library's configured backend. No keyring
    library, no usable backend, a locked or failing keyring: None, and the caller
    asks for the password as it would without a keyring.
    """
    from_environment = environ.get(variable)
    if from_environment:
        return from_environment
    store = backend if backend is not None else _configured_backend()
    if store is None:
        return None
    try:
        password = store.get_password(SERVICE, keyring_username(username, host))
    # A keyring backend talks to OS services (D-Bus, Keychain) and may fail in ways
    # keyring does not wrap; any failure here means "ask", never a lost run.
    except Exception:
        return None
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
        return None
    return password


def store_password(
    username: str, host: str, password: str, *, backend: PasswordBackend | None = None
) -> str:
    """Keep `password` in the keyring for `username` at `host`; return the keyring's name.

    The password is read back to make sure it was kept. Raises CampaignError (without
    the password in it) when no keyring can take it.
    """
    store = backend if backend is not None else _required_backend()
    key = keyring_username(username, host)
    try:
        store.set_password(SERVICE, key, password)
        kept = store.get_password(SERVICE, key)
    except Exception as err:
        raise CampaignError(
            # The kind of error only: a backend's message may quote what it was given.
            f"the keyring {_name(store)} did not take the password ({type(err).__name__})",
            hint="unlock the keyring and try again, or keep using CAMPAIGN_SMTP_PASSWORD"
            " or the prompt",
        ) from None
    if kept != password:
        raise CampaignError(
            f"the keyring {_name(store)} did not keep the password",
            hint="configure a keyring that stores passwords, or keep using"
            " CAMPAIGN_SMTP_PASSWORD or the prompt",
        )
    return _name(store)


def forget_password(username: str, host: str, *, backend: PasswordBackend | None = None) -> bool:
    """Remove the password for `username` at `host`; False when none was stored."""
    store = backend if backend is not None else _required_backend()
    key = keyring_username(username, host)
    try:
        if store.get_password(SERVICE, key) is None:
            return False
        store.delete_password(SERVICE, key)
    except Exception as err:
        raise CampaignError(
            f"the keyring {_name(store)} could not remove the password: {_describe(err)}",
            hint="unlock the keyring and try again",
        ) from None
    return True


def _configured_backend() -> PasswordBackend | None:
    try:
        return _required_backend()
    except CampaignError:
        return None


def _required_backend() -> PasswordBackend:
    """keyring's configured backend, or a CampaignError saying why there is none."""
    try:
        keyring = importlib.import_module("keyring")
        fail = importlib.import_module("keyring.backends.fail")
        null = importlib.import_module("keyring.backends.null")
    except ImportError:
        raise CampaignError("the keyring library is not installed", hint=INSTALL_HINT) from None
    try:
        backend: PasswordBackend = keyring.get_keyring()
    except Exception as err:  # a keyring configuration naming a backend that fails to load
        raise CampaignError(
            f"the keyring is misconfigured: {_describe(err)}",
            hint="check PYTHON_KEYRING_BACKEND and keyringrc.cfg (`keyring diagnose`)",
        ) from None
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        raise CampaignError(
            "no keyring is available on this system",
            hint="a desktop session provides one (GNOME Keyring, KWallet, macOS Keychain,"
            " Windows Credential Manager); without it, use CAMPAIGN_SMTP_PASSWORD or the prompt",
        )
    return backend


def _name(backend: PasswordBackend) -> str:
    name = getattr(backend, "name", None)  # keyring backends have a display name
    return name if isinstance(name, str) else type(backend).__name__


def _describe(err: Exception) -> str:
    """The error in one printable line."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    printable = "".join(char if char.isprintable() else " " for char in text)
    return printable[:200]
