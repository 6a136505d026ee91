"""A strict YAML reader: plain data only, every value with its line, nothing coerced silently.

PyYAML's safe loader keeps the last of two equal keys, turns `no` into False, `0123`
into 83 and a bare date into a date. This reader walks the parser's events instead and
refuses all of that, so what reaches the template is what the user wrote.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from campaign.errors import CampaignError

MAX_FILE_BYTES = 64 * 1024 * 1024

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


class YamlMapping(dict[str, Any]):
    """A mapping that remembers the line it starts on and the line of each key.

    Key lines are kept as small offsets from the first line: a campaign of many
    recipients holds one such mapping each, and small ints cost no memory of their own.
    """

    __slots__ = ("_offsets", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self._offsets: tuple[int, ...] = ()

    def line_of(self, key: str) -> int:
        for position, candidate in enumerate(self):
            if candidate == key and position < len(self._offsets):
                return self.line + self._offsets[position]
        return self.line


class YamlList(list[Any]):
    """A list that remembers the line it starts on and the line of each item."""

    __slots__ = ("_offsets", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self._offsets: tuple[int, ...] = ()

    @property
    def item_lines(self) -> list[int]:
        return [self.line + offset for offset in self._offsets]


def read_yaml(path: Path) -> Any:
    """Read `path` strictly; every problem is a CampaignError naming the file and line."""
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
    return parse_yaml(raw, path)


def parse_yaml(text: str | bytes, path: Path) -> Any:
    """Parse one YAML document made of mappings, lists and strings (and plain integers)."""
    events = yaml.parse(text, Loader=_Loader)
    builder = _Builder(events, path)
    try:
        return builder.document()
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


class _Builder:
    def __init__(self, events: Iterator[yaml.Event], path: Path) -> None:
        self._events = events
        self._path = path

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
        if isinstance(event, yaml.MappingStartEvent):
            self._check_node(event)
            return self._mapping(event)
        if isinstance(event, yaml.SequenceStartEvent):
            self._check_node(event)
            return self._sequence(event)
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
            return int(event.value)
        kind = _KIND_BY_TAG.get(tag, "something other than text")
        raise self._error(
            f"{event.value} would be read as {kind}, not as the text you wrote",
            event,
            f'put it in quotes: "{event.value}"',
        )

    def _mapping(self, start: yaml.MappingStartEvent) -> YamlMapping:
        first = _line(start)
        mapping = YamlMapping(first)
        offsets: list[int] = []
        for event in self._events:
            if type(event) is yaml.MappingEndEvent:
                mapping._offsets = tuple(offsets)
                return mapping
            if not isinstance(event, yaml.ScalarEvent):
                raise self._error("a key must be a plain name", event)
            if event.anchor is not None or event.tag is not None:
                self._check_node(event)
            key = self._scalar(event)
            if not isinstance(key, str):
                raise self._error(f"the key {key} must be a name, not a number", event)
            line = _line(event)
            if key in mapping:
                first_line = first + offsets[list(mapping).index(key)]
                error = self._error(
                    f"the key '{key}' is given twice (first on line {first_line})",
                    event,
                    "keep one of them",
                )
                error.field = key
                raise error
            offsets.append(line - first)
            key = sys.intern(key)  # every recipient repeats the same few keys
            try:
                mapping[key] = self._value(next(self._events))
            except CampaignError as err:
                if err.field is None:  # name the innermost key whose value was refused
                    err.field = key
                raise
        raise CampaignError("the YAML ended inside a mapping", path=self._path)

    def _sequence(self, start: yaml.SequenceStartEvent) -> YamlList:
        first = _line(start)
        items = YamlList(first)
        offsets: list[int] = []
        for event in self._events:
            if isinstance(event, yaml.SequenceEndEvent):
                items._offsets = tuple(offsets)
                return items
            offsets.append(_line(event) - first)
            items.append(self._value(event))
        raise CampaignError("the YAML ended inside a list", path=self._path)
