"""A strict YAML reader: plain data only, every value with its line, nothing coerced silently.

PyYAML's safe loader keeps the last of two equal keys, turns `no` into False, `0123`
into 83 and a bare date into a date. This reader walks the parser's events instead and
refuses all of that, so what reaches the template is what the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from campaign.errors import CampaignError, ValidationErrors

MAX_FILE_BYTES = 64 * 1024 * 1024
SHARED_VALUES_LIMIT = 10_000
# A campaign file is a few levels deep; the builder recurses once per level, so a file
# nested hundreds deep would end in a RecursionError. Refused well before that.
MAX_DEPTH = 50
# Python refuses to read integers of more than 4,300 digits (CVE-2020-10735); no campaign
# needs more than a port number.
MAX_INT_DIGITS = 100
_SHOWN_VALUE = 40

# Given a key, why the file may not hold it (message, hint), or None; see parse_yaml.
KeyCheck = Callable[[str], "tuple[str, str | None] | None"]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_ALLOWED_TAGS = {
    None,
    "!",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
# First characters of every YAML 1.1 implicit resolver (bool, int, float, null, timestamp,
# merge, value); a plain scalar starting otherwise is a string.
_RESOLVABLE_START = frozenset("yYnNtTfFoO~-+.0123456789<=!&*")
_KIND_BY_TAG = {
    "tag:yaml.org,2002:bool": "a yes/no (boolean) value",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:merge": "a merge key",
    "tag:yaml.org,2002:value": "a special value",
}


class _Shape:
    """The keys of mappings written alike, with each key's line as an offset from the first.

    A campaign of many recipients repeats the same few keys in the same layout: they
    share one shape, and each mapping holds only its line and its values. `refused`
    holds the positions of keys the file may not hold, with why (checked once per shape).
    """

    __slots__ = ("keys", "offsets", "positions", "refused")

    def __init__(self, keys: tuple[str, ...], offsets: tuple[int, ...]) -> None:
        self.keys = keys
        self.offsets = offsets
        self.positions = {key: position for position, key in enumerate(keys)}
        self.refused: tuple[tuple[int, str, str | None], ...] = ()


class YamlMapping(Mapping[str, Any]):
    """A read-only mapping that remembers the line it starts on and the line of each key."""

    __slots__ = ("_shape", "_values", "line")

    def __init__(self, line: int, shape: _Shape, values: tuple[Any, ...]) -> None:
        self.line = line
        self._shape = shape
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[self._shape.positions[key]]

    def get(self, key: str, default: Any = None) -> Any:
        position = self._shape.positions.get(key)
        return default if position is None else self._values[position]

    def __contains__(self, key: object) -> bool:
        return key in self._shape.positions

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.keys)

    def __len__(self) -> int:
        return len(self._values)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._shape.keys)

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def line_of(self, key: str) -> int:
        position = self._shape.positions.get(key)
        return self.line if position is None else self.line + self._shape.offsets[position]


class FlatList(list[Any]):
    """A list of plain values written on its key's line (`emails: [a, b]`).

    It keeps no lines of its own (its items are on the key's line, which the mapping
    knows): a campaign of many recipients holds one per recipient, and a list with lines
    costs twice as much. To a template it is the same list as any other.
    """

    __slots__ = ()


class YamlList(list[Any]):
    """A list that remembers the line it starts on and the line of each item."""

    __slots__ = ("_offsets", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self._offsets: tuple[int, ...] = ()

    def is_flat_on(self, line: int) -> bool:
        """True for a list of plain values written on `line` alone, as `[a, b]` is."""
        return (
            self.line == line
            and not any(self._offsets)
            and all(isinstance(item, (str, int)) for item in self)
        )

    def line_of_item(self, position: int) -> int:
        if position < len(self._offsets):
            return self.line + self._offsets[position]
        return self.line


def _shown(value: str) -> str:
    """A value quoted back in a message, cut short when it is long."""
    if len(value) <= _SHOWN_VALUE:
        return value
    return f"{value[: _SHOWN_VALUE // 2]}...{value[-8:]}"


def read_yaml(path: Path, *, refuse_key: KeyCheck | None = None) -> Any:
    """Read `path` strictly; every problem is a CampaignError naming the file and line.

    `refuse_key` is asked once about every distinct key; the keys it refuses are all
    reported together (ValidationErrors) once the whole file is read.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CampaignError(
            "file not found", path=path, hint="pass --file PATH to use another campaign file"
        ) from None
    except OSError as err:
        raise CampaignError(f"cannot read the file: {err.strerror}", path=path) from err
    if size > MAX_FILE_BYTES:
        raise CampaignError(
            f"the file is {size / 2**20:.0f} MiB, far larger than any campaign"
            f" (the limit is {MAX_FILE_BYTES // 2**20} MiB); is it the right file?",
            path=path,
        )
    with open(path, "rb") as handle:
        raw = handle.read(MAX_FILE_BYTES + 1)
    # The parser reads UTF-8 bytes itself: no decoded copy of a large file is ever held.
    return parse_yaml(raw, path, refuse_key=refuse_key)


def parse_yaml(text: str | bytes, path: Path, *, refuse_key: KeyCheck | None = None) -> Any:
    """Parse one YAML document made of mappings, lists and strings (and plain integers).

    Nesting deeper than MAX_DEPTH and integers longer than MAX_INT_DIGITS are refused.
    """
    events = yaml.parse(text, Loader=_Loader)
    builder = _Builder(events, path, refuse_key)
    try:
        document = builder.document()
    except yaml.reader.ReaderError as err:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        bad_line = data[: err.position].count(b"\n") + 1
        raise CampaignError(
            "the file is not valid UTF-8 (or holds a character YAML does not allow)",
            path=path,
            line=bad_line,
            hint="save it as UTF-8",
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = err.problem or err.context or "not valid YAML"
        raise CampaignError(f"not valid YAML: {problem}", path=path, line=line) from None
    except yaml.YAMLError as err:
        raise CampaignError(f"not valid YAML: {err}", path=path) from None
    if builder.refusals:
        raise ValidationErrors(builder.refusals)
    return document


class _Builder:
    def __init__(
        self, events: Iterator[yaml.Event], path: Path, refuse_key: KeyCheck | None = None
    ) -> None:
        self._events = events
        self._path = path
        self._refuse_key = refuse_key
        self._key_verdicts: dict[str, tuple[str, str | None] | None] = {}
        self.refusals: list[CampaignError] = []
        self._depth = 0
        self._shapes: dict[tuple[tuple[str, ...], tuple[int, ...]], _Shape] = {}
        # Lists written alike (one line each) share their tuple of item line offsets.
        self._offsets: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._seen_values: dict[str, dict[str, str]] = {}
        self._unshared_keys: set[str] = set()

    def _shared(self, offsets: list[int]) -> tuple[int, ...]:
        key = tuple(offsets)
        return self._offsets.setdefault(key, key)

    def _error(self, message: str, event: yaml.Event, hint: str | None = None) -> CampaignError:
        return CampaignError(message, path=self._path, line=_line(event), hint=hint)

    def document(self) -> Any:
        value: Any = None
        documents = 0
        for event in self._events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self._error("the file holds more than one YAML document", event)
                value = self._value(next(self._events))
            elif isinstance(event, (yaml.DocumentEndEvent, yaml.StreamStartEvent)):
                continue
            elif isinstance(event, yaml.StreamEndEvent):
                break
        return value

    def _check_node(self, event: yaml.NodeEvent) -> None:
        if event.anchor is not None:
            raise self._error(
                f"anchors (&{event.anchor}) are not supported", event, "write the value out"
            )
        tag = getattr(event, "tag", None)
        if tag not in _ALLOWED_TAGS:
            raise self._error(
                f"the tag {tag} is not allowed: the file holds plain data only", event
            )

    def _value(self, event: yaml.Event) -> Any:
        if type(event) is yaml.ScalarEvent and event.anchor is None and event.tag is None:
            return self._scalar(event)  # the common case, first
        if isinstance(event, yaml.AliasEvent):
            raise self._error(
                f"aliases (*{event.anchor}) are not supported", event, "write the value out"
            )
        if isinstance(event, yaml.ScalarEvent):
            self._check_node(event)
            return self._scalar(event)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._check_node(event)
            if self._depth >= MAX_DEPTH:
                raise self._error(
                    f"the data is nested more than {MAX_DEPTH} levels deep",
                    event,
                    "a campaign file needs a few levels; is this the right file?",
                )
            self._depth += 1
            try:
                if isinstance(event, yaml.MappingStartEvent):
                    return self._mapping(event)
                return self._sequence(event)
            finally:
                self._depth -= 1
        raise self._error("unexpected YAML structure", event)

    def _scalar(self, event: yaml.ScalarEvent) -> str | int:
        value: str = event.value
        if event.style or event.tag is not None or not event.implicit[0]:
            return value  # quoted, or tagged !!str (other tags were refused before)
        if value and value[0] not in _RESOLVABLE_START:
            return value  # no YAML 1.1 implicit type starts with this character
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, (True, False))  # type: ignore[no-untyped-call]
        if tag == "tag:yaml.org,2002:str":
            return str(event.value)
        if tag == "tag:yaml.org,2002:null":
            shown = f"'{event.value}'" if event.value else "nothing"
            raise self._error(f"the value is empty ({shown})", event, 'write "" for an empty text')
        if tag == "tag:yaml.org,2002:int" and _PLAIN_INT.match(event.value):
            digits = len(event.value.lstrip("-"))
            if digits > MAX_INT_DIGITS:
                raise self._error(
                    f"a number of {digits} digits is longer than the {MAX_INT_DIGITS} allowed",
                    event,
                    'if it is a text, put it in quotes: "..."',
                )
            return int(event.value)
        kind = _KIND_BY_TAG.get(tag, "something other than text")
        shown = _shown(event.value)
        raise self._error(
            f"{shown} would be read as {kind}, not as the text you wrote",
            event,
            f'put it in quotes: "{shown}"',
        )

    def _mapping(self, start: yaml.MappingStartEvent) -> YamlMapping:
        first = _line(start)
        positions: dict[str, int] = {}
        values: list[Any] = []
        offsets: list[int] = []
        for event in self._events:
            if type(event) is yaml.MappingEndEvent:
                shape = self._shape(positions, offsets)
                if shape.refused:
                    self._refuse(shape, first)
                return YamlMapping(first, shape, tuple(values))
            if not isinstance(event, yaml.ScalarEvent):
                raise self._error("a key must be a plain name", event)
            if event.anchor is not None or event.tag is not None:
                self._check_node(event)
            key = self._scalar(event)
            if not isinstance(key, str):
                raise self._error(f"the key {key} must be a name, not a number", event)
            line = _line(event)
            if key in positions:
                first_line = first + offsets[positions[key]]
                error = self._error(
                    f"the key '{key}' is given twice (first on line {first_line})",
                    event,
                    "keep one of them",
                )
                error.field = key
                raise error
            positions[key] = len(values)
            offsets.append(line - first)
            try:
                value = self._value(next(self._events))
            except CampaignError as err:
                if err.field is None:  # name the innermost key whose value was refused
                    err.field = key
                raise
            if isinstance(value, str):
                value = self._share(key, value)
            elif type(value) is YamlList and value.is_flat_on(line):
                value = FlatList(value)
            values.append(value)
        raise CampaignError("the YAML ended inside a mapping", path=self._path)

    def _shape(self, positions: dict[str, int], offsets: list[int]) -> _Shape:
        key = (tuple(positions), tuple(offsets))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = _Shape(*key)
            if self._refuse_key is not None:
                shape.refused = tuple(
                    (position, *verdict)
                    for position, name in enumerate(shape.keys)
                    if (verdict := self._verdict(name)) is not None
                )
        return shape

    def _verdict(self, key: str) -> tuple[str, str | None] | None:
        if key not in self._key_verdicts:
            assert self._refuse_key is not None
            self._key_verdicts[key] = self._refuse_key(key)
        return self._key_verdicts[key]

    def _refuse(self, shape: _Shape, first: int) -> None:
        for position, message, hint in shape.refused:
            self.refusals.append(
                CampaignError(
                    message,
                    path=self._path,
                    line=first + shape.offsets[position],
                    field=shape.keys[position],
                    hint=hint,
                )
            )

    def _share(self, key: str, value: str) -> str:
        """One string for a value repeated under the same key (a country, a salutation).

        A key whose values are mostly different (an id, an address) stops being tracked
        once it has shown SHARED_VALUES_LIMIT of them.
        """
        seen = self._seen_values.get(key)
        if seen is None:
            if key in self._unshared_keys:
                return value
            seen = self._seen_values[key] = {}
        shared = seen.setdefault(value, value)
        if shared is value and len(seen) > SHARED_VALUES_LIMIT:
            del self._seen_values[key]
            self._unshared_keys.add(key)
        return shared

    def _sequence(self, start: yaml.SequenceStartEvent) -> YamlList:
        first = _line(start)
        items = YamlList(first)
        offsets: list[int] = []
        for event in self._events:
            if isinstance(event, yaml.SequenceEndEvent):
                items._offsets = self._shared(offsets)
                return items
            offsets.append(_line(event) - first)
            items.append(self._value(event))
        raise CampaignError("the YAML ended inside a list", path=self._path)
