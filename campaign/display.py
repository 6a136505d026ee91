"""Text made to show: controls escaped, formulas defused, long lists of names cut short."""

from __future__ import annotations

import re
from collections.abc import Sequence

# C0 and C1 controls, DEL, and the bidirectional overrides that can reorder what is shown.
# Surrogates: a server's bytes that were not UTF-8, as aiosmtplib decodes them.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
_LAYOUT_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character written out (`\\x1b`), never emitted.

    With `keep_newlines`, line ends and tabs stay (a letter's body, a multi-line reply).
    """
    if keep_newlines:
        return _LAYOUT_CONTROL.sub(_escape, text)
    return _CONTROL.sub(_escape, text)


def listed(names: Sequence[str], limit: int = 20) -> str:
    """`a, b, c and 7 more`: the first `limit` names, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def spreadsheet_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: formulas defused (OWASP), controls escaped."""
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return visible(text)
