"""Language tags: the simple BCP 47 forms a campaign may name, in their canonical case."""

from __future__ import annotations

import re
from functools import lru_cache

# RFC 5646 2.1: language (2-3 letters), then an optional script (4 letters), region
# (2 letters or 3 digits) and variants. Extensions and private use (`-x-...`) are left
# out: no template file needs them, and a mistyped tag should not pass as one.
_TAG = re.compile(
    r"(?P<language>[a-z]{2,3})"
    r"(?:-(?P<script>[a-z]{4}))?"
    r"(?:-(?P<region>[a-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*)\Z"
)


class LanguageError(ValueError):
    """Not a language tag campaign accepts; the message says what is expected."""


@lru_cache(maxsize=256)
def normalise_language(text: str) -> str:
    """`text` as a language tag in BCP 47's canonical case: `ru`, `kk`, `en-GB`, `sr-Latn-RS`.

    Tags are case-insensitive (RFC 5646 2.1.1); the canonical case is what names the
    template (`letter.en-GB.txt.j2`) and goes into Content-Language.
    """
    found = _TAG.match(text.lower()) if text.isascii() else None
    if found is None:
        raise LanguageError(
            f"{text!r} is not a language tag; write a code such as 'en', 'ru', 'kk' or 'en-GB'"
        )
    tag = found["language"]
    if found["script"]:
        tag += "-" + found["script"].title()
    if found["region"]:
        tag += "-" + found["region"].upper()
    return tag + found["variants"]
