"""ASCII slugs and snake_case keys from names in any script, for ids and column keys."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

SLUG_MAX = 64  # the loader's slug pattern allows at most 64 characters

# Cyrillic as ICAO Doc 9303 transliterates it in passports (so a name comes out as its
# bearer's documents spell it), with the Kazakh, Ukrainian, Belarusian and Serbian
# letters; Greek after ELOT 743; Latin letters that Unicode does not decompose.
# Letters with diacritics (é, ő, ё, й, ά) are first decomposed, then their marks dropped.
_TRANSLITERATION = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ж": "zh", "з": "z",
        "и": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
        "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
        "щ": "shch", "ъ": "ie", "ы": "y", "ь": "", "э": "e", "ю": "iu", "я": "ia",
        "є": "ie", "і": "i", "ґ": "g", "ў": "u",
        "ә": "a", "ғ": "g", "қ": "q", "ң": "n", "ө": "o", "ұ": "u", "ү": "u", "һ": "h",
        "ђ": "d", "ј": "j", "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz", "ѕ": "dz",
        "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th",
        "ι": "i", "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p",
        "ρ": "r", "σ": "s", "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps",
        "ω": "o",
        "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
        "ı": "i", "ŋ": "n", "ŀ": "l",
    }
)  # fmt: skip
_GREEK_DIGRAPHS = (("ου", "ou"), ("αυ", "av"), ("ευ", "ev"))
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def transliterate(text: str) -> str:
    """`text` lowercased, with the letters the table knows in ASCII; other text stays."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    for digraph, latin in _GREEK_DIGRAPHS:
        bare = bare.replace(digraph, latin)
    return bare.translate(_TRANSLITERATION)


def slugify(text: str) -> str:
    """`Ministry of Justice` -> `ministry-of-justice`; empty when nothing ASCII remains."""
    words = _NOT_ALNUM.sub("-", transliterate(text)).strip("-")
    return words[:SLUG_MAX].rstrip("-")


def snake_key(header: str) -> str:
    """`E-mail`, `firstName`, `Post code` -> `e_mail`, `first_name`, `post_code`."""
    key = _NOT_ALNUM.sub("_", transliterate(_CAMEL.sub("_", header.strip()))).strip("_")
    if key[:1].isdigit():
        key = f"column_{key}"  # templates reach a key as recipient.key: it must be a name
    return key


def unique_slugs(wanted: Iterable[str | None], names: Iterable[str]) -> list[str]:
    """One id per row: the wanted one, or one derived from the name, made unique.

    Wanted ids are kept as they are (a duplicate among them is for the caller to
    refuse); derived ones never take an id that is wanted or already derived:
    `ministry`, `ministry-2`, `ministry-3`. A name with nothing ASCII left becomes
    `recipient`.
    """
    wanted = list(wanted)
    taken = {slug for slug in wanted if slug}
    result: list[str] = []
    for slug, name in zip(wanted, names, strict=True):
        if slug:
            result.append(slug)
            continue
        base = slugify(name) or "recipient"
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            suffix = f"-{number}"
            candidate = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        taken.add(candidate)
        result.append(candidate)
    return result
