"""Warnings about input that is valid but probably mistyped; the data is never changed."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from campaign.models import Notice, Recipient, data_line

_WORD = re.compile(r"[^\W\d_]{6,}")
_LABEL_MIN = 5


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _near(a: str, b: str) -> bool:
    """True when a and b differ by one insertion, deletion, substitution or transposition."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    return shorter in _deletions(longer)


def _texts(value: Any, field: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(item, f"{field}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item, field)


def find_notices(recipients: Sequence[Recipient]) -> tuple[Notice, ...]:
    """Likely typos: an address part one letter off its own domain, a rare near-twin word."""
    return (*_address_notices(recipients), *_word_notices(recipients))


def _address_notices(recipients: Iterable[Recipient]) -> Iterator[Notice]:
    for recipient in recipients:
        labels = {
            label: address
            for address in recipient.addresses
            for label in address.rpartition("@")[2].lower().split(".")
            if len(label) >= _LABEL_MIN
        }
        for address in recipient.addresses:
            local = address.rpartition("@")[0].lower()
            for label, source in labels.items():
                if len(local) >= _LABEL_MIN and _near(local, label):
                    where = "its domain" if source == address else source
                    yield Notice(
                        f"{address}: '{local}' looks like a misspelling of '{label}'"
                        f" (as in {where}); kept as written, check it before sending",
                        recipient=recipient.id,
                        field="emails",
                        line=recipient.line,
                    )
                    break


def _word_notices(recipients: Sequence[Recipient]) -> Iterator[Notice]:
    counts: Counter[str] = Counter()
    places: dict[str, tuple[Recipient, str, str]] = {}
    for recipient in recipients:
        for key, value in recipient.data.items():
            if key in ("id", "emails"):
                continue
            for field, text in _texts(value, key):
                for word in _WORD.findall(text):
                    folded = word.casefold()
                    counts[folded] += 1
                    places.setdefault(folded, (recipient, field, word))
    common = [word for word, count in counts.items() if count >= 3]
    index: defaultdict[str, list[str]] = defaultdict(list)
    for word in common:
        index[word].append(word)
        for variant in _deletions(word):
            index[variant].append(word)
    for word, count in counts.items():
        if count != 1:
            continue
        candidates = {c for key in (word, *_deletions(word)) for c in index.get(key, ())}
        matches = sorted(c for c in candidates if _near(word, c))
        if not matches:
            continue
        recipient, field, written = places[word]
        yield Notice(
            f"'{written}' looks like a misspelling of '{places[matches[0]][2]}'"
            f" (used {counts[matches[0]]} times); kept as written, check it before sending",
            recipient=recipient.id,
            field=field,
            line=recipient.line,
        )


def unused_key_notices(
    recipients: Sequence[Recipient],
    campaign: Mapping[str, Any],
    recipient_keys: Collection[str] | None,
    campaign_keys: Collection[str] | None,
    *,
    program_recipient_keys: Collection[str] = (),
    program_campaign_keys: Collection[str] = (),
) -> tuple[Notice, ...]:
    """A key no template uses, one edit away from a key the templates do use.

    `'salutaion' is not used; the template uses 'salutation'`: the letter would fall back
    to its default silently. `recipient_keys` / `campaign_keys` are the keys the templates
    name (None: the templates use the whole mapping, so nothing is reported); keys the
    program reads itself (`id`, `emails`, `subject`...) are never reported.
    """
    notices: list[Notice] = []
    if campaign_keys is not None:
        near = _near_keys(campaign_keys, program_campaign_keys)
        for key in campaign:
            used = near(key)
            if used is not None and used not in campaign:
                notices.append(
                    Notice(
                        f"'{key}' is not used; the template uses '{used}'",
                        field=f"campaign.{key}",
                        line=data_line(campaign, key),
                    )
                )
    if recipient_keys is not None:
        near = _near_keys(recipient_keys, program_recipient_keys)
        found: dict[tuple[str, str], list[Recipient]] = {}
        for recipient in recipients:
            for key in recipient.data:
                used = near(key)
                if used is not None and used not in recipient.data:
                    found.setdefault((key, used), []).append(recipient)
        for (key, used), who in found.items():
            first = who[0]
            others = f" (and {len(who) - 1} more recipients)" if len(who) > 1 else ""
            notices.append(
                Notice(
                    f"'{key}' is not used{others}; the template uses '{used}'",
                    recipient=first.id,
                    field=key,
                    line=data_line(first.data, key),
                )
            )
    return tuple(notices)


def _near_keys(used: Collection[str], program: Collection[str]) -> Callable[[str], str | None]:
    """For a key: the used key it is one edit away from, when it is itself unused."""
    verdicts: dict[str, str | None] = {}
    ordered = sorted(used)

    def near(key: str) -> str | None:
        if key not in verdicts:
            verdicts[key] = (
                None
                if key in used or key in program
                else next((u for u in ordered if _near(key.lower(), u.lower())), None)
            )
        return verdicts[key]

    return near
