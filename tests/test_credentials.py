"""The password chain: environment, then a keyring backend set up for the test, else None."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import keyring
import keyring.errors
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from campaign.credentials import (
    SERVICE,
    forget_password,
    keyring_username,
    lookup_password,
    store_password,
)
from campaign.errors import CampaignError

VARIABLE = "CAMPAIGN_SMTP_PASSWORD"
SECRET = "correct horse battery staple"
USER = "sender@example.org"
HOST = "smtp.example.net"


class MemoryKeyring(KeyringBackend):
    """A keyring held in a dict, for one test; never chosen by keyring's own detection."""

    priority = -10  # below keyring's fail backend (0)

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.entries:
            raise keyring.errors.PasswordDeleteError("not found")
        del self.entries[(service, username)]


class LockedKeyring(KeyringBackend):
    """A keyring whose every operation fails, quoting what it was given."""

    priority = -10

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked(f"locked while reading {username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError(f"cannot store {password!r} for {username}")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.KeyringLocked("locked")


class ForgetfulKeyring(MemoryKeyring):
    """Accepts every password and keeps none (as keyring's chainer does with no backends)."""

    def set_password(self, service: str, username: str, password: str) -> None:
        pass


class BrokenKeyring(MemoryKeyring):
    """Fails with an error that keyring does not wrap, as a D-Bus backend may."""

    def get_password(self, service: str, username: str) -> str | None:
        raise OSError("the session bus went away")


Install = Callable[[type[KeyringBackend]], KeyringBackend]


@pytest.fixture
def use_keyring() -> Iterator[Install]:
    """Set keyring's backend for this test only; the one in place before comes back after."""
    previous = keyring.get_keyring()

    def install(kind: type[KeyringBackend]) -> KeyringBackend:
        backend = kind()
        keyring.set_keyring(backend)
        return backend

    yield install
    keyring.set_keyring(previous)


@pytest.fixture
def memory(use_keyring: Install) -> MemoryKeyring:
    backend = use_keyring(MemoryKeyring)
    assert isinstance(backend, MemoryKeyring)
    return backend


def test_the_environment_variable_wins_over_the_keyring(memory: MemoryKeyring) -> None:
    store_password(USER, HOST, "from the keyring")
    assert lookup_password(USER, HOST, {VARIABLE: SECRET}, variable=VARIABLE) == SECRET


def test_the_keyring_is_used_when_the_variable_is_unset_or_empty(memory: MemoryKeyring) -> None:
    store_password(USER, HOST, SECRET)
    assert lookup_password(USER, HOST, {}, variable=VARIABLE) == SECRET
    assert lookup_password(USER, HOST, {VARIABLE: ""}, variable=VARIABLE) == SECRET


def test_the_entry_is_kept_under_campaign_as_user_at_host(memory: MemoryKeyring) -> None:
    store_password(USER, "SMTP.Example.NET.", SECRET)
    assert memory.entries == {("campaign", "sender@example.org@smtp.example.net"): SECRET}
    assert SERVICE == "campaign"
    assert keyring_username(USER, HOST) == "sender@example.org@smtp.example.net"


def test_another_server_or_user_does_not_get_the_password(memory: MemoryKeyring) -> None:
    store_password(USER, HOST, SECRET)
    assert lookup_password(USER, "smtp.example.com", {}, variable=VARIABLE) is None
    assert lookup_password("other@example.org", HOST, {}, variable=VARIABLE) is None


def test_store_returns_the_keyring_name(memory: MemoryKeyring) -> None:
    assert store_password(USER, HOST, SECRET) == MemoryKeyring.name


def test_forget_removes_the_password(memory: MemoryKeyring) -> None:
    store_password(USER, HOST, SECRET)
    assert forget_password(USER, HOST) is True
    assert memory.entries == {}
    assert lookup_password(USER, HOST, {}, variable=VARIABLE) is None


def test_forget_without_a_stored_password_says_so(memory: MemoryKeyring) -> None:
    assert forget_password(USER, HOST) is False


def test_an_explicit_backend_is_used_instead_of_the_configured_one(
    memory: MemoryKeyring,
) -> None:
    own = MemoryKeyring()
    store_password(USER, HOST, SECRET, backend=own)
    assert memory.entries == {}
    assert lookup_password(USER, HOST, {}, variable=VARIABLE, backend=own) == SECRET


@pytest.mark.parametrize("kind", [LockedKeyring, BrokenKeyring, fail.Keyring])
def test_a_failing_keyring_means_no_password_and_a_prompt(
    use_keyring: Install, kind: type[KeyringBackend]
) -> None:
    use_keyring(kind)
    assert lookup_password(USER, HOST, {}, variable=VARIABLE) is None


def test_storing_into_a_locked_keyring_is_refused_without_the_password(
    use_keyring: Install,
) -> None:
    use_keyring(LockedKeyring)
    with pytest.raises(CampaignError) as excinfo:
        store_password(USER, HOST, SECRET)
    error = excinfo.value
    assert "did not take the password (PasswordSetError)" in str(error)
    assert SECRET not in f"{error} {error!r} {error.args} {error.hint}"
    assert error.__cause__ is None and error.__suppress_context__


def test_storing_without_a_keyring_is_refused_with_a_hint(
    use_keyring: Install,
) -> None:
    use_keyring(fail.Keyring)
    with pytest.raises(CampaignError, match="no keyring is available on this system"):
        store_password(USER, HOST, SECRET)


def test_a_keyring_that_keeps_nothing_is_caught(use_keyring: Install) -> None:
    use_keyring(ForgetfulKeyring)
    with pytest.raises(CampaignError, match="did not keep the password"):
        store_password(USER, HOST, SECRET)


def test_forgetting_in_a_locked_keyring_is_refused(use_keyring: Install) -> None:
    use_keyring(LockedKeyring)
    with pytest.raises(CampaignError, match="could not remove the password"):
        forget_password(USER, HOST)


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_keyring_is_not_imported_when_the_environment_has_the_password() -> None:
    out = run_python(
        "import sys\n"
        "from campaign.credentials import lookup_password\n"
        "print(lookup_password('u', 'h', {'V': 'x'}, variable='V'), 'keyring' in sys.modules)"
    )
    assert out == "x False"


def test_without_the_keyring_library_lookup_is_none_and_store_says_what_to_install() -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['keyring'] = None  # as if it were not installed\n"
        "from campaign.credentials import lookup_password, store_password\n"
        "from campaign.errors import CampaignError\n"
        "print(lookup_password('u', 'h', {}, variable='V'))\n"
        "try:\n"
        "    store_password('u', 'h', 'pw')\n"
        "except CampaignError as err:\n"
        "    print(err)\n"
    )
    assert out.splitlines() == [
        "None",
        "the keyring library is not installed (install it into campaign's environment:"
        " pip install keyring)",
    ]
