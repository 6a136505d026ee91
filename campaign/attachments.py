"""Files sent with the letter: found in the campaign's folder, read once, encoded as MIME parts."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from campaign.errors import CampaignError
from campaign.headersafety import unsafe_reason
from campaign.models import Attachment
from campaign.safefiles import read_file

MAX_NAME_CHARACTERS = 255  # what a file system allows in one name
# Per-recipient files kept encoded between letters: beyond this, the cache starts afresh
# (a campaign of many recipients, each with a large file of their own, must not grow).
CACHE_BYTES = 64 * 2**20
_B64_LINE = 76  # RFC 2045 6.8: encoded lines of at most 76 characters
_LINE = 78  # RFC 5322's recommended line length, for the folded parameter lines
_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 5987 attr-char besides letters and digits: kept as they are
_FALLBACK_TYPE = "application/octet-stream"


class AttachmentError(ValueError):
    """Why a file cannot be attached (the caller knows where it is named)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def wire_size(size: int) -> int:
    """Bytes a file of `size` bytes takes in the message body: base64, 76 a line, CRLF each."""
    characters = -(-size // 3) * 4
    return characters + 2 * -(-characters // _B64_LINE)


def locate(folder: Path, written: str) -> tuple[Path, str, int]:
    """The resolved path, shown name and size of `written`, a file inside `folder`.

    The path is taken relative to `folder`, may not climb out of it with `..`, and must
    resolve inside it: a symbolic link is followed only to find where it leads. Raises
    AttachmentError saying what is wrong.
    """
    reason = unsafe_reason(written)
    if reason:
        raise AttachmentError(f"the file name {reason}")
    relative = PurePosixPath(written)
    if relative.is_absolute() or written.startswith("~") or "\\" in written:
        raise AttachmentError(
            f"{written!r} is not a path relative to the campaign file's folder",
            hint="put the file beside the campaign file (or in a folder there) and give"
            " its path from there, e.g. letter.pdf or attachments/letter.pdf",
        )
    if ".." in relative.parts:
        raise AttachmentError(
            f"{written!r} climbs out of the campaign file's folder with '..'",
            hint="copy the file into the campaign's folder and name it from there",
        )
    name = relative.name
    if not name or len(name) > MAX_NAME_CHARACTERS:
        raise AttachmentError(f"{written!r} does not name a file")
    base = folder.resolve()
    try:
        resolved = (base / relative).resolve(strict=True)
    except FileNotFoundError:
        raise AttachmentError(
            f"no file {written!r} in {base}",
            hint="check the name; paths are relative to the campaign file's folder",
        ) from None
    except (OSError, RuntimeError) as err:  # a symlink loop, no permission
        raise AttachmentError(f"{written!r} cannot be found: {_why(err)}") from None
    if not resolved.is_relative_to(base):
        raise AttachmentError(
            f"{written!r} leads outside the campaign file's folder (to {resolved})",
            hint="a symbolic link out of the folder is refused: copy the file in instead",
        )
    try:
        info = os.stat(resolved, follow_symlinks=False)
    except OSError as err:
        raise AttachmentError(f"{written!r} cannot be read: {_why(err)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise AttachmentError(
            f"{written!r} is a folder, not a file", hint="name each file to attach"
        )
    if not stat.S_ISREG(info.st_mode):
        raise AttachmentError(f"{written!r} is not a regular file")
    if info.st_size == 0:
        raise AttachmentError(
            f"{written!r} is empty", hint="an empty attachment is usually a failed export"
        )
    return resolved, name, info.st_size


def _why(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err)


def content_type_of(name: str) -> str:
    """The MIME type for a file name, from its extension; octet-stream when unknown.

    A compressed file (`.tar.gz`) is sent as what it is on the wire: octet-stream.
    """
    guessed, encoding = mimetypes.guess_type(name)
    if guessed is None or encoding is not None:
        return _FALLBACK_TYPE
    return guessed


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _extended(parameter: str, value: str) -> list[str]:
    """RFC 2231 `parameter*=utf-8''...`, split into `parameter*0*=...` lines when long.

    Each line, folded as ` parameter*N*=...;`, stays within 78 characters; split only
    between characters, so every segment holds whole ones.
    """
    pieces = [quote(char, safe=_ATTR_CHARS) for char in value]
    encoded = "".join(pieces)
    if len(f" {parameter}*=utf-8''{encoded};") <= _LINE:
        return [f"{parameter}*=utf-8''{encoded}"]
    segments: list[str] = []
    current = f"{parameter}*0*=utf-8''"
    for piece in pieces:
        if len(current) + len(piece) + 2 > _LINE and not current.endswith("*="):
            segments.append(current)
            current = f"{parameter}*{len(segments)}*="
        current += piece
    segments.append(current)
    return segments


def filename_parameters(name: str) -> list[str]:
    """`filename*=` as RFC 2231 says, preceded by a plain `filename=` when the name is ASCII.

    Readers that know RFC 2231 take the extended one; older ones the plain one.
    """
    plain = [f"filename={_quoted(name)}"] if name.isascii() else []
    return [*plain, *_extended("filename", name)]


def name_parameters(name: str) -> list[str]:
    """Content-Type's older `name` parameter: plain when ASCII, else as RFC 2231 says."""
    return [f"name={_quoted(name)}"] if name.isascii() else _extended("name", name)


def _header(start: str, params: Iterable[str]) -> str:
    """`Name: value;` and each parameter on a folded line of its own."""
    return start + "".join(";\r\n " + param for param in params) + "\r\n"


def part_head(name: str, content_type: str) -> bytes:
    """The headers of an attachment's part, up to and including the blank line."""
    return (
        _header(f"Content-Type: {content_type}", name_parameters(name))
        + _header("Content-Disposition: attachment", filename_parameters(name))
        + "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class EncodedAttachment:
    """One file as a MIME part: headers and base64 body, without boundary lines or last CRLF."""

    name: str
    content_type: str
    sha256: str
    size: int
    part: bytes


def encode(name: str, data: bytes) -> EncodedAttachment:
    """`data` as the attachment `name`: its type from the name, its body in base64."""
    content_type = content_type_of(name)
    if content_type.startswith("text/"):
        # Without a charset a reader takes text as ASCII; say UTF-8 when it is.
        try:
            data.decode("utf-8")
            content_type += '; charset="utf-8"'
        except UnicodeDecodeError:
            pass
    body = base64.encodebytes(data).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
    return EncodedAttachment(
        name=name,
        content_type=content_type.partition(";")[0],
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        part=part_head(name, content_type) + body,
    )


class AttachmentFiles:
    """Every file a run attaches, read and encoded once.

    The campaign's own files are kept for the whole run; a recipient's are kept by path
    and name while they fit in CACHE_BYTES. Pickled whole into the worker
    processes of a large build, so the campaign's files are read once per run.
    """

    def __init__(self, limit: int, *, cache_bytes: int = CACHE_BYTES) -> None:
        self._limit = limit
        self._cache_bytes = cache_bytes
        self._kept: dict[tuple[Path, str], EncodedAttachment] = {}
        self._cached: dict[tuple[Path, str], EncodedAttachment] = {}
        self._cached_bytes = 0

    def encoded(self, attachment: Attachment, *, keep: bool = False) -> EncodedAttachment:
        """The file as a MIME part; AttachmentError if it can no longer be read as found.

        `keep`: hold it for the whole run (the campaign's own files), not only while the
        cache has room.
        """
        key = (attachment.path, attachment.name)
        found = self._kept.get(key) or self._cached.get(key)
        if found is None:
            found = self._read(attachment)
            if not keep:
                if self._cached_bytes + len(found.part) > self._cache_bytes:
                    self._cached.clear()
                    self._cached_bytes = 0
                self._cached[key] = found
                self._cached_bytes += len(found.part)
        if keep:
            self._kept[key] = found
        return found

    def _read(self, attachment: Attachment) -> EncodedAttachment:
        path = attachment.path
        # Found inside the folder when the campaign file was read; still there, as a file?
        if os.path.realpath(path) != str(path):
            raise AttachmentError(
                f"{attachment.written!r} no longer leads to {path}",
                hint="it changed while campaign ran; run the command again",
            )
        try:
            data = read_file(path, self._limit)  # O_NOFOLLOW, a regular file, bounded
        except CampaignError as err:
            raise AttachmentError(f"{attachment.written!r} cannot be read: {err.message}") from None
        if not data:
            raise AttachmentError(f"{attachment.written!r} is empty")
        return encode(attachment.name, data)


@dataclass(frozen=True, slots=True)
class FoundAttachment:
    """An attachment as a reader finds it in a message: its name, type and bytes' SHA-256."""

    name: str
    content_type: str
    sha256: str


def attachments_in(message: EmailMessage) -> list[FoundAttachment]:
    """Every part of `message` marked as an attachment, in order, decoded."""
    found: list[FoundAttachment] = []
    for part in message.walk():
        if part.get_content_disposition() != "attachment":
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        found.append(
            FoundAttachment(
                name=str(part.get_filename() or ""),
                content_type=part.get_content_type(),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return found
