"""Header injection guards: control characters, and RFC 2047 encoded words that hide them.

Python 3.11.7's `email` package does not refuse an encoded newline (CVE-2024-6923): a
subject holding `=?utf-8?q?a=0AX-Injected:_1?=` comes out as an extra header line. So
every value is checked before it reaches a header, and the serialised header block after.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from email.header import decode_header

# As lenient as the `email` parser's own matcher (whitespace inside a word is decoded too),
# so nothing it would decode can slip past.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[qQbB]\?.*?\?=")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def unsafe_reason(value: str) -> str | None:
    """Why `value` may not go into a header, or None when it is safe."""
    found = _CONTROL.search(value)
    if found:
        char = found.group()
        kind = "a line break" if char in "\r\n\u2028\u2029\u0085" else "a control character"
        return f"contains {kind} ({_describe(char)}), which could forge extra headers"
    words = _ENCODED_WORD.findall(value)
    for word in words:
        found = _CONTROL.search(_decode_word(word))
        if found:
            return (
                f"contains an encoded word {word!r} that decodes to"
                f" {_describe(found.group())}, which could forge extra headers"
            )
    if words:
        # Even a harmless encoded word is not sent as written: the `email` package
        # decodes it when it refolds the header, and mail programs show it decoded.
        return (
            f"contains an RFC 2047 encoded word {words[0]!r}, which would not be shown"
            " as written; write the text itself"
        )
    return None


def _decode_word(word: str) -> str:
    """The text an encoded word stands for, decoded as leniently as mail programs do."""
    try:
        parts = decode_header(word)
    except Exception:  # undecodable: refused anyway, as an encoded word
        return ""
    decoded: list[str] = []
    for payload, charset in parts:
        if isinstance(payload, str):
            decoded.append(payload)
            continue
        try:
            decoded.append(payload.decode(charset or "ascii", errors="replace"))
        except LookupError:  # an unknown charset: the `email` parser falls back likewise
            decoded.append(payload.decode("latin-1"))
    return "".join(decoded)


class HeaderBlockError(ValueError):
    """The serialised header block is not the one that was meant."""


def check_header_block(message: bytes, expected_names: Iterable[str]) -> None:
    """Check that the header block holds exactly `expected_names`, once each, well formed.

    Run on the bytes that will be sent, so nothing the `email` package did on the way
    (folding, encoding, a library bug) can add a header that was not asked for.
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise HeaderBlockError("the message has no end of headers")
    block = message[:end]
    if b"\n" in block.replace(b"\r\n", b"") or b"\r" in block.replace(b"\r\n", b""):
        raise HeaderBlockError("a bare CR or LF in the header block")
    names: list[str] = []
    for line in block.split(b"\r\n"):
        if len(line) > 998:
            raise HeaderBlockError("a header line is longer than 998 octets")
        if not line.isascii():
            raise HeaderBlockError("a header line is not 7-bit ASCII")
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the previous header
        name, colon, _ = line.partition(b":")
        if not colon or not name or not re.fullmatch(rb"[!-9;-~]+", name):
            raise HeaderBlockError(f"a malformed header line: {line[:60]!r}")
        names.append(name.decode("ascii").lower())
    wanted = sorted(name.lower() for name in expected_names)
    if sorted(names) != wanted:
        extra = sorted(set(names) - set(wanted)) or [n for n in names if names.count(n) > 1]
        raise HeaderBlockError(f"unexpected headers {sorted(set(extra))} in the serialised message")
