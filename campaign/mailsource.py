"""Read the campaign's mailbox without changing it: IMAP (EXAMINE, BODY.PEEK), Maildir, mbox.

Each source yields `RawMessage`s: the bytes of one message, or a marker saying why it was
skipped (too large, gone before it could be read), so a caller can count both. Nothing here
sets a flag, moves, deletes or expunges.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import mailbox
import re
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from campaign.errors import CampaignError
from campaign.inbound import MAX_MESSAGE_BYTES, clean_text
from campaign.models import IMAP_SECURITY_MODES, ImapFileSettings
from campaign.settings import is_loopback

IMAP_DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
IMAP_PASSWORD_VARIABLE = "CAMPAIGN_IMAP_PASSWORD"
DEFAULT_FOLDER = "INBOX"
DEFAULT_TIMEOUT = 30.0

_BATCH_BYTES = 8 * 1024 * 1024  # fetch small messages together, up to this much per command
_BATCH_COUNT = 100
_SIZE_CHUNK = 500  # UIDs per RFC822.SIZE fetch


# --- errors ---------------------------------------------------------------------------------


class ImapSettingsError(CampaignError):
    """IMAP settings are missing, contradictory or unsafe."""


class MailboxError(CampaignError):
    """The mailbox could not be read; the subclass says at which step."""


class ImapConnectError(MailboxError):
    """No IMAP conversation: refused, unreachable, timed out, not an IMAP server."""


class ImapTlsError(MailboxError):
    """TLS failed: an untrusted certificate, or TLS against a plain port (or the reverse)."""


class ImapLoginError(MailboxError):
    """The server refused the username and password."""


class ImapFolderError(MailboxError):
    """The folder does not exist or cannot be opened."""


class ImapReadError(MailboxError):
    """Reading stopped part way: the connection dropped or the folder went away."""


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: str
    username: str
    password: str | None = field(default=None, repr=False, compare=False)
    ca_file: Path | None = None
    folder: str = DEFAULT_FOLDER

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """Where and how, never the password."""
        return f"{self.source} ({self.security})"

    @property
    def source(self) -> str:
        """The folder as a URL (RFC 5092's shape), naming no password."""
        return f"imap://{quote(self.username, safe='')}@{self.host}:{self.port}/{self.folder}"

    def __repr__(self) -> str:  # keep the password out of any accidental print
        return f"ImapSettings({self.describe()!r})"


def resolve_imap_settings(
    environ: Mapping[str, str],
    file_settings: ImapFileSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    folder: str | None = None,
) -> ImapSettings:
    """Command line over environment over file; defaults: implicit TLS on 993, folder INBOX.

    The password comes only from CAMPAIGN_IMAP_PASSWORD here (None when unset): the caller
    may fill it from a keyring or a prompt with `dataclasses.replace`.
    """

    def pick(cli: str | None, variable: str, from_file: str | None) -> str | None:
        return cli or environ.get(variable) or from_file

    chosen_host = pick(host, "CAMPAIGN_IMAP_HOST", file_settings.host)
    if not chosen_host:
        raise ImapSettingsError(
            "no IMAP server is set",
            hint="set CAMPAIGN_IMAP_HOST (and CAMPAIGN_IMAP_USERNAME), or pass --imap-host;"
            " or read a local copy with --maildir or --mbox",
        )
    security = (pick(None, "CAMPAIGN_IMAP_SECURITY", file_settings.security) or "tls").lower()
    if security not in IMAP_SECURITY_MODES:
        raise ImapSettingsError(
            f"'{clean_text(security, 40)}' is not a security mode",
            field="CAMPAIGN_IMAP_SECURITY",
            hint=f"expected one of {', '.join(IMAP_SECURITY_MODES)}",
        )
    chosen_port: int
    port_text = environ.get("CAMPAIGN_IMAP_PORT")
    if port is not None:
        if not 0 < port < 65536:
            raise ImapSettingsError(f"{port} is not a port number", field="--imap-port")
        chosen_port = port
    elif port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ImapSettingsError(
                f"'{clean_text(port_text, 20)}' is not a port number", field="CAMPAIGN_IMAP_PORT"
            )
        chosen_port = int(port_text)
    else:
        chosen_port = file_settings.port or IMAP_DEFAULT_PORTS[security]
    username = environ.get("CAMPAIGN_IMAP_USERNAME") or file_settings.username
    if not username:
        raise ImapSettingsError(
            "no IMAP username is set",
            field="CAMPAIGN_IMAP_USERNAME",
            hint="set CAMPAIGN_IMAP_USERNAME to the mailbox's login",
        )
    ca_text = environ.get("CAMPAIGN_IMAP_CA_FILE") or file_settings.ca_file
    ca_file = Path(ca_text) if ca_text else None
    if ca_file is not None and not ca_file.is_file():
        raise ImapSettingsError(
            f"the CA file {ca_file} does not exist", field="CAMPAIGN_IMAP_CA_FILE"
        )
    chosen_folder = pick(folder, "CAMPAIGN_IMAP_FOLDER", file_settings.folder) or DEFAULT_FOLDER
    if clean_text(chosen_folder, 200) != chosen_folder:
        raise ImapSettingsError(
            f"the folder name {chosen_folder[:60]!r} has control characters, leading or"
            " repeated spaces, or is longer than 200 characters",
            field="CAMPAIGN_IMAP_FOLDER",
        )
    if security == "none" and not is_loopback(chosen_host):
        raise ImapSettingsError(
            f"security 'none' reads mail and sends the password in clear text; it is allowed"
            f" only to a loopback host, not to {chosen_host}",
            field="CAMPAIGN_IMAP_SECURITY",
            hint="use tls (port 993) or starttls (port 143)",
        )
    password = environ.get(IMAP_PASSWORD_VARIABLE) or None
    return ImapSettings(
        chosen_host, chosen_port, security, username, password, ca_file, chosen_folder
    )


# --- what a source yields ----------------------------------------------------------------------


class Skip(StrEnum):
    """Why a message was not read."""

    TOO_LARGE = "too-large"  # over max_bytes: not downloaded
    VANISHED = "vanished"  # gone between listing and reading (expunged, moved by a mail program)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as its source holds it, or why it was skipped (then `data` is None)."""

    source: str  # which mailbox: "imap://user@host:port/INBOX", "maildir:/path", "mbox:/path"
    key: str  # stable within the source: "<uidvalidity>:<uid>", a Maildir key, "#<n>" in an mbox
    size: int
    data: bytes | None = field(default=None, repr=False)
    skipped: Skip | None = None
    received: datetime | None = None  # delivery time, when the source knows it


# --- IMAP ---------------------------------------------------------------------------------------


def imap_messages(
    settings: ImapSettings,
    *,
    since: date | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[RawMessage]:
    """Every message of the folder (delivered on or after `since`), oldest UID first.

    A generator: it connects on the first `next()`, and logs out when exhausted or closed.
    Raises `ImapSettingsError` or a `MailboxError` subclass naming the step that failed.
    """
    if settings.password is None:
        raise ImapSettingsError(
            f"no password for {clean_text(settings.username, 100)} at {settings.host}",
            field=IMAP_PASSWORD_VARIABLE,
            hint=f"set {IMAP_PASSWORD_VARIABLE}, or let campaign ask for it",
        )
    if settings.security == "none" and not is_loopback(settings.host):
        raise ImapSettingsError(
            f"security 'none' is allowed only to a loopback host, not to {settings.host}"
        )
    client = _connect(settings, timeout)
    try:
        _login(client, settings)
        uidvalidity = _examine(client, settings)
        reader = _ImapReader(client, settings, settings.source, uidvalidity, max_bytes)
        yield from reader.read(_search(client, settings, since))
    finally:
        _logout(client)


def _context(settings: ImapSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as err:
        raise ImapSettingsError(
            f"the CA file {settings.ca_file} could not be loaded ({type(err).__name__})",
            field="CAMPAIGN_IMAP_CA_FILE",
            hint="it must hold PEM certificates",
        ) from err


def _tls_error(settings: ImapSettings, err: ssl.SSLError) -> ImapTlsError:
    where = settings.address
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = clean_text(err.verify_message or str(err), 200)
        return ImapTlsError(
            f"{where}: the server's certificate was not accepted ({reason})",
            hint="if the server uses a private CA, set CAMPAIGN_IMAP_CA_FILE to its PEM file;"
            " check that CAMPAIGN_IMAP_HOST is the name on the certificate",
        )
    reason = clean_text(getattr(err, "reason", None) or str(err), 200)
    if settings.security == "tls":
        hint = (
            "security 'tls' expects implicit TLS (port 993); if this port starts in"
            " plain text (143), set CAMPAIGN_IMAP_SECURITY=starttls"
        )
    else:
        hint = "check CAMPAIGN_IMAP_SECURITY against the port (tls: 993, starttls: 143)"
    return ImapTlsError(f"{where}: TLS failed ({reason})", hint=hint)


def _connect(settings: ImapSettings, timeout: float) -> imaplib.IMAP4:
    where = settings.address
    try:
        if settings.security == "tls":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=_context(settings), timeout=timeout
            )
        else:
            client = imaplib.IMAP4(settings.host, settings.port, timeout=timeout)
    except ssl.SSLError as err:
        raise _tls_error(settings, err) from err
    except TimeoutError as err:
        hint = "check CAMPAIGN_IMAP_HOST and CAMPAIGN_IMAP_PORT, and that the server is up"
        if settings.security != "tls":
            hint = (
                "no greeting came: if this is an implicit-TLS port (993), set"
                " CAMPAIGN_IMAP_SECURITY=tls"
            )
        raise ImapConnectError(f"{where}: no answer within {timeout:g} s", hint=hint) from err
    except (OSError, imaplib.IMAP4.error, EOFError) as err:
        raise ImapConnectError(
            f"{where}: could not connect ({_reason(err)})",
            hint="check CAMPAIGN_IMAP_HOST and CAMPAIGN_IMAP_PORT, and that the server is up",
        ) from err
    if settings.security != "starttls":
        return client
    try:
        if "STARTTLS" not in client.capabilities:
            raise ImapTlsError(
                f"{where}: the server does not offer STARTTLS",
                hint="use CAMPAIGN_IMAP_SECURITY=tls with port 993",
            )
        client.starttls(ssl_context=_context(settings))
    except ssl.SSLError as err:
        _close_quietly(client)
        raise _tls_error(settings, err) from err
    except (OSError, imaplib.IMAP4.error, EOFError) as err:
        _close_quietly(client)
        raise ImapTlsError(
            f"{where}: STARTTLS failed ({_reason(err)})",
            hint="use CAMPAIGN_IMAP_SECURITY=tls with port 993 if the server offers it",
        ) from err
    except ImapTlsError:
        _close_quietly(client)
        raise
    return client


def _login(client: imaplib.IMAP4, settings: ImapSettings) -> None:
    username, password = settings.username, settings.password or ""
    try:
        if username.isascii() and password.isascii():
            client.login(username, password)
        else:  # LOGIN is ASCII only (imaplib); SASL PLAIN carries UTF-8 (RFC 4616)
            client.authenticate(
                "PLAIN", lambda _: b"\0" + username.encode() + b"\0" + password.encode()
            )
    except imaplib.IMAP4.abort as err:
        raise ImapLoginError(
            f"{settings.address}: the connection closed during login ({_reason(err)})",
            hint="check CAMPAIGN_IMAP_USERNAME and the password",
        ) from err
    except imaplib.IMAP4.error as err:
        raise ImapLoginError(
            f"{settings.address}: the server refused the login for {clean_text(username, 100)}"
            f" ({_reason(err)})",
            hint=f"check CAMPAIGN_IMAP_USERNAME and the password ({IMAP_PASSWORD_VARIABLE})",
        ) from err
    except OSError as err:
        raise ImapLoginError(
            f"{settings.address}: the connection failed during login ({_reason(err)})",
            hint="run again; check the server",
        ) from err


def _examine(client: imaplib.IMAP4, settings: ImapSettings) -> str:
    """Open the folder read-only (EXAMINE) and return its UIDVALIDITY."""
    try:
        typ, data = client.select(quote_mailbox(settings.folder), readonly=True)
        if typ != "OK":
            known = _folder_names(client)
            hint = "check CAMPAIGN_IMAP_FOLDER (or --imap-folder)"
            if known:
                hint += f"; the server has: {', '.join(known)}"
            raise ImapFolderError(
                f"{settings.address}: cannot open the folder {settings.folder!r} ({_reason(data)})",
                field="CAMPAIGN_IMAP_FOLDER",
                hint=hint,
            )
        _typ, values = client.response("UIDVALIDITY")
    except (imaplib.IMAP4.error, OSError, EOFError) as err:
        raise ImapFolderError(
            f"{settings.address}: opening {settings.folder!r} failed ({_reason(err)})",
            hint="run again; check the server",
        ) from err
    raw = values[0] if values else None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else ""
    return text if text.isdigit() else "0"


def _search(client: imaplib.IMAP4, settings: ImapSettings, since: date | None) -> list[int]:
    # SINCE compares the server's internal date in the server's own time zone (RFC 3501
    # 6.4.4): a day's margin, as for Maildir and mbox, keeps an early bounce from a server
    # behind UTC.
    criteria = ("SINCE", imap_date(since - timedelta(days=1))) if since else ("ALL",)
    try:
        typ, data = client.uid("SEARCH", *criteria)
    except (imaplib.IMAP4.error, OSError, EOFError) as err:
        raise ImapReadError(
            f"{settings.address}: searching {settings.folder!r} failed ({_reason(err)})",
            hint="run `campaign inbox` again; nothing was changed; in a very large folder,"
            " --since DATE narrows the search",
        ) from err
    if typ != "OK":
        raise ImapReadError(
            f"{settings.address}: the server refused to search {settings.folder!r}"
            f" ({_reason(data)})",
            hint="run `campaign inbox` again; nothing was changed",
        )
    uids: set[int] = set()
    for line in data:
        if isinstance(line, bytes):
            uids.update(int(word) for word in line.split() if word.isdigit())
    return sorted(uids)


_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(
    rb'\bINTERNALDATE "\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4})"'
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


@dataclass(slots=True)
class _ImapReader:
    client: imaplib.IMAP4
    settings: ImapSettings
    source: str
    uidvalidity: str
    max_bytes: int

    def read(self, uids: Sequence[int]) -> Iterator[RawMessage]:
        """In UID order; small messages fetched together, oversize ones never fetched."""
        known = self._sizes(uids)
        pending: list[int] = []
        batch_bytes = batch_count = 0
        for uid in uids:
            size = known[uid][0] if uid in known else 0
            wanted = uid in known and size <= self.max_bytes
            full = batch_bytes + size > _BATCH_BYTES or batch_count >= _BATCH_COUNT
            if wanted and batch_count and full:
                yield from self._flush(pending, known)
                pending, batch_bytes, batch_count = [], 0, 0
            pending.append(uid)
            if wanted:
                batch_bytes += size
                batch_count += 1
        yield from self._flush(pending, known)

    def _raw(
        self,
        uid: int,
        size: int,
        data: bytes | None = None,
        skipped: Skip | None = None,
        received: datetime | None = None,
    ) -> RawMessage:
        key = f"{self.uidvalidity}:{uid}"
        return RawMessage(self.source, key, size, data, skipped, received)

    def _command(self, *args: str) -> list[object]:
        what = f"reading {self.settings.folder!r}"
        try:
            typ, data = self.client.uid("FETCH", *args)
        except (imaplib.IMAP4.abort, OSError, EOFError) as err:
            raise ImapReadError(
                f"{self.settings.address}: the connection was lost while {what} ({_reason(err)})",
                hint="run `campaign inbox` again; nothing was changed",
            ) from err
        except imaplib.IMAP4.error as err:
            raise ImapReadError(
                f"{self.settings.address}: the server failed while {what} ({_reason(err)})",
                hint="the folder may have been deleted or renamed; run `campaign inbox` again",
            ) from err
        if typ != "OK":
            raise ImapReadError(
                f"{self.settings.address}: the server stopped {what} ({_reason(data)})",
                hint="the folder may have been deleted or renamed; run `campaign inbox` again",
            )
        return list(data)

    def _sizes(self, uids: Sequence[int]) -> dict[int, tuple[int, datetime | None]]:
        known: dict[int, tuple[int, datetime | None]] = {}
        for start in range(0, len(uids), _SIZE_CHUNK):
            chunk = uids[start : start + _SIZE_CHUNK]
            wanted = set(chunk)
            items = self._command(uid_set(chunk), "(UID RFC822.SIZE INTERNALDATE)")
            for item in items:
                line = item[0] if isinstance(item, tuple) else item
                if not isinstance(line, bytes):
                    continue
                uid, size = _UID.search(line), _SIZE.search(line)
                if uid and size and int(uid.group(1)) in wanted:
                    known[int(uid.group(1))] = (int(size.group(1)), _internaldate(line))
        return known

    def _flush(
        self, pending: list[int], known: dict[int, tuple[int, datetime | None]]
    ) -> Iterator[RawMessage]:
        wanted = [uid for uid in pending if uid in known and known[uid][0] <= self.max_bytes]
        got = _bodies(self._command(uid_set(wanted), "(UID BODY.PEEK[])")) if wanted else {}
        for uid in pending:
            if uid not in known:  # expunged between SEARCH and FETCH
                yield self._raw(uid, 0, skipped=Skip.VANISHED)
                continue
            size, received = known[uid]
            data = got.get(uid)
            if size > self.max_bytes:
                yield self._raw(uid, size, skipped=Skip.TOO_LARGE, received=received)
            elif data is None:
                yield self._raw(uid, size, skipped=Skip.VANISHED, received=received)
            elif len(data) > self.max_bytes:  # the server under-stated its size
                yield self._raw(uid, len(data), skipped=Skip.TOO_LARGE, received=received)
            else:
                yield self._raw(uid, len(data), data, received=received)


def _bodies(items: Sequence[object]) -> dict[int, bytes]:
    """UID -> message bytes from a FETCH (UID BODY[]) response, whatever the item order."""
    found: dict[int, bytes] = {}
    for index, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2):
            continue
        head, literal = item
        if not (isinstance(head, bytes) and isinstance(literal, bytes)):
            continue
        if b"BODY[]" not in head.upper():
            continue
        uid = _UID.search(head)
        if uid is None and index + 1 < len(items):  # UID may follow the literal
            tail = items[index + 1]
            uid = _UID.search(tail) if isinstance(tail, bytes) else None
        if uid is not None:
            found[int(uid.group(1))] = literal
    return found


def _internaldate(line: bytes) -> datetime | None:
    found = _INTERNALDATE.search(line)
    if not found:
        return None
    day, month, year, hour, minute, second, zone = (g.decode("ascii") for g in found.groups())
    if month.lower() not in _MONTHS:
        return None
    try:
        return datetime.strptime(
            f"{year}-{_MONTHS.index(month.lower()) + 1:02d}-{int(day):02d}"
            f" {hour}:{minute}:{second} {zone}",
            "%Y-%m-%d %H:%M:%S %z",
        )
    except ValueError:
        return None


def _logout(client: imaplib.IMAP4) -> None:
    # LOGOUT, never CLOSE: CLOSE would expunge a folder opened with SELECT (not ours, EXAMINE,
    # but one command fewer to reason about).
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError, EOFError):
        _close_quietly(client)


def _close_quietly(client: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error, EOFError):
        client.shutdown()


def _folder_names(client: imaplib.IMAP4, limit: int = 12) -> list[str]:
    try:
        typ, lines = client.list()
    except (imaplib.IMAP4.error, OSError, EOFError):
        return []
    if typ != "OK":
        return []
    names: list[str] = []
    for line in lines:
        if not isinstance(line, bytes):
            continue
        text = line.decode("ascii", "replace")
        quoted = re.search(r'"((?:[^"\\]|\\.)*)"\s*$', text)
        name = quoted.group(1).replace('\\"', '"').replace("\\\\", "\\") if quoted else ""
        if not quoted:
            name = text.rsplit(" ", 1)[-1]
        names.append(clean_text(decode_mailbox(name), 60))
    return sorted(set(names))[:limit]


def _reason(err: object) -> str:
    """A server's or library's words, made safe to show."""
    if isinstance(err, list | tuple):
        err = b" ".join(x for x in err if isinstance(x, bytes))
    if isinstance(err, bytes):
        err = err.decode("utf-8", "replace")
    if isinstance(err, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(err, OSError) and err.strerror:
        return clean_text(err.strerror, 200)
    if isinstance(err, BaseException) and len(err.args) == 1 and isinstance(err.args[0], bytes):
        return clean_text(err.args[0].decode("utf-8", "replace"), 200)
    return clean_text(str(err), 200) or type(err).__name__


def imap_date(day: date) -> str:
    """An IMAP date (`4-Dec-2026`), in English whatever the locale."""
    return f"{day.day}-{_MONTHS[day.month - 1].capitalize()}-{day.year}"


def uid_set(uids: Sequence[int]) -> str:
    """`1,2,3,7` -> `1:3,7`: a compact IMAP sequence set."""
    ranges: list[str] = []
    ordered = sorted(set(uids))
    start = previous = ordered[0] if ordered else 0
    for uid in ordered[1:]:
        if uid != previous + 1:
            ranges.append(f"{start}:{previous}" if previous != start else str(start))
            start = uid
        previous = uid
    if ordered:
        ranges.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(ranges)


def quote_mailbox(name: str) -> str:
    """A folder name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded = encode_mailbox(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_mailbox(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append(
                "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"
            )
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mailbox(name: str) -> str:
    def decode(found: re.Match[str]) -> str:
        body = found.group(1)
        if not body:
            return "&"
        raw = body.replace(",", "/")
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return found.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)


# --- Maildir and mbox ------------------------------------------------------------------------

_HEADER_LIMIT = 256 * 1024
_FROM_LINE_DATE = re.compile(
    rb"\s([A-Z][a-z]{2}) ([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})\s*$"
)


def maildir_messages(
    path: Path | str,
    *,
    since: date | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[RawMessage]:
    """Every message in a Maildir's new/ and cur/ (not its subfolders), read-only."""
    folder = Path(path)
    if not folder.is_dir():
        raise MailboxError(
            f"{folder} is not a folder",
            path=folder,
            hint="--maildir takes a Maildir folder (the one holding cur/ and new/)",
        )
    if not (folder / "cur").is_dir() or not (folder / "new").is_dir():
        raise MailboxError(
            f"{folder} is not a Maildir: it has no cur/ and new/ folders",
            path=folder,
            hint="point --maildir at the folder that holds cur/ and new/",
        )
    box = mailbox.Maildir(str(folder), factory=None, create=False)
    source = f"maildir:{folder}"
    try:
        keys = sorted(box.keys())
    except OSError as err:
        raise MailboxError(f"cannot list {folder} ({_reason(err)})", path=folder) from err
    for key in keys:
        shown = clean_text(key, 200)
        received = _maildir_time(key)
        try:
            with box.get_file(key) as handle:
                handle.seek(0, 2)
                size = handle.tell()
                if size > max_bytes:
                    yield RawMessage(source, shown, size, skipped=Skip.TOO_LARGE, received=received)
                    continue
                handle.seek(0)
                data = handle.read()
        except (KeyError, FileNotFoundError):
            if not folder.is_dir():
                raise MailboxError(
                    f"the Maildir {folder} disappeared while it was read", path=folder
                ) from None
            yield RawMessage(source, shown, 0, skipped=Skip.VANISHED, received=received)
            continue
        except OSError as err:
            raise MailboxError(
                f"cannot read message {shown} in {folder} ({_reason(err)})", path=folder
            ) from err
        if since is None or _on_or_after(since, received, data):
            yield RawMessage(source, shown, len(data), data, received=received)


def mbox_messages(
    path: Path | str,
    *,
    since: date | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[RawMessage]:
    """Every message in an mbox file, read-only (nothing is locked, rewritten or flushed)."""
    file = Path(path)
    if not file.is_file():
        raise MailboxError(f"{file} is not a file", path=file, hint="--mbox takes an mbox file")
    source = f"mbox:{file}"
    try:
        box = mailbox.mbox(str(file), factory=None, create=False)
    except OSError as err:
        raise MailboxError(f"cannot open {file} ({_reason(err)})", path=file) from err
    try:
        try:
            keys = list(box.keys())
        except OSError as err:
            raise MailboxError(f"cannot read {file} ({_reason(err)})", path=file) from err
        if not keys and file.stat().st_size > 0:
            raise MailboxError(
                f"{file} holds no message: it is not an mbox file (no 'From ' line)",
                path=file,
                hint="--mbox takes an mbox file; for a folder of files use --maildir",
            )
        for index, key in enumerate(keys, start=1):
            try:
                with box.get_file(key, from_=True) as handle:
                    from_line = handle.readline()
                    handle.seek(0, 2)
                    size = handle.tell() - len(from_line)
                    received = _from_line_time(from_line)
                    if size > max_bytes:
                        yield RawMessage(
                            source, f"#{index}", size, skipped=Skip.TOO_LARGE, received=received
                        )
                        continue
                    handle.seek(len(from_line))
                    data = handle.read()
            except OSError as err:
                raise MailboxError(
                    f"cannot read message #{index} of {file} ({_reason(err)})", path=file
                ) from err
            if since is None or _on_or_after(since, received, data):
                yield RawMessage(source, f"#{index}", len(data), data, received=received)
    finally:
        box.close()  # flushes nothing: no change is pending


def _maildir_time(key: str) -> datetime | None:
    """The delivery time a Maildir file name starts with (the Maildir specification's)."""
    seconds = key.split(".", 1)[0]
    # A name a person gave a file (`10.eml`, `380501234567.eml`) is not a delivery time.
    if not (seconds.isascii() and seconds.isdigit() and len(seconds) == 10):
        return None
    moment = datetime.fromtimestamp(int(seconds), UTC)  # ten digits: 2001 to 2286
    return moment if moment <= datetime.now(UTC) + timedelta(days=1) else None


def _from_line_time(line: bytes) -> datetime | None:
    found = _FROM_LINE_DATE.search(line.rstrip(b"\r\n"))
    if not found:
        return None
    _weekday, month, day, hour, minute, second, year = (g.decode() for g in found.groups())
    if month.lower() not in _MONTHS:
        return None
    try:
        return datetime(
            int(year),
            _MONTHS.index(month.lower()) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def header_date(data: bytes) -> datetime | None:
    """The Date header of a message, timezone-aware, from its header block alone."""
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(data[:_HEADER_LIMIT])
        value = headers.get("Date")
        if value is None:
            return None
        moment = parsedate_to_datetime(str(value).strip())
    except (TypeError, ValueError, LookupError, OverflowError, UnicodeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _on_or_after(since: date, received: datetime | None, data: bytes) -> bool:
    """Kept when its delivery time or its Date is on or after `since` (a day's margin for
    time zones), or when it has neither: reading one message too many costs nothing."""
    floor = since - timedelta(days=1)
    moments = [m for m in (received, header_date(data)) if m is not None]
    return not moments or any(m.astimezone(UTC).date() >= floor for m in moments)
