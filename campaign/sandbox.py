"""The Jinja2 sandbox for letters: bounded in size and time, reading only inside its folder.

Jinja's own sandbox stops a template from reaching Python internals, but not from making
huge values: `{{ ('x' * 2000000000)|length }}` allocates 2 GB before anything can object.
Here every operation that can multiply a value (`*`, `**`, `%`, `+`, `~`, padding and
replacing methods and filters, `str.format` widths, `join`) is checked *before* it runs,
against MAX_TEXT characters, MAX_ITEMS items and MAX_INT_BITS bits; loops, calls and
operators count towards a time limit per letter. A template that goes over gets a
`TemplateLimitError` naming the limit, which the renderer reports with file and line.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import update_wrapper
from pathlib import Path
from types import BuiltinMethodType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

MAX_TEXT = 10 * 2**20  # characters in any one value a template makes (a letter's size)
MAX_ITEMS = 100_000  # items in a list or range a template makes (Jinja's MAX_RANGE)
MAX_INT_BITS = 4096  # an integer of about 1,200 digits
MAX_SECONDS = 5.0  # to render one template for one recipient
MAX_TEMPLATE_BYTES = 2**20  # one template file
_MAX_FORMAT_WIDTH = 10_000  # a `%`/format width or precision
_MEASURED_NODES = 1_000_000  # values looked at to size one list before it becomes text
_TICKS_PER_CLOCK = 1024  # operations between two looks at the clock


class TemplateLimitError(SecurityError):
    """A template tried to make a value, or take a time, over the sandbox's limits."""


class TemplateTimeout(TemplateLimitError):
    """A render that took longer than its time limit."""


class TemplateOutsideFolder(SecurityError):
    """A template name that resolves outside the templates folder (through a link)."""


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _over(what: str, size: float, limit: int, unit: str) -> TemplateLimitError:
    return TemplateLimitError(
        f"{what} would make {_number(size)} {unit}; the limit is {_number(limit)}"
    )


class _TooBig(Exception):
    """Internal: stop measuring, the value is over the limit."""


def text_size(value: Any, limit: int = MAX_TEXT) -> int:
    """About how many characters `str(value)` has: exact for text, generous for the rest.

    Stops (returning more than `limit`) as soon as the count passes `limit`, or when the
    value holds more than a million parts; a list repeated inside another is walked once.
    """
    if isinstance(value, str):
        return len(value)
    memo: dict[int, int] = {}
    budget = [_MEASURED_NODES, limit]

    def size(item: Any, depth: int) -> int:
        if isinstance(item, (str, bytes)):
            return len(item) + 4
        if item is None or isinstance(item, (bool, float)):
            return 24
        if isinstance(item, int):
            return item.bit_length() // 3 + 2
        key = id(item)
        known = memo.get(key)
        if known is not None:
            return known
        budget[0] -= 1
        if budget[0] < 0 or depth > 200:
            raise _TooBig
        total = 2
        if isinstance(item, Mapping):
            for name, inner in item.items():
                total += size(name, depth + 1) + size(inner, depth + 1) + 2
                if total > budget[1]:
                    raise _TooBig
        elif isinstance(item, (list, tuple, set, frozenset)):
            for inner in item:
                total += size(inner, depth + 1) + 2
                if total > budget[1]:
                    raise _TooBig
        else:
            total = 64  # an object shown by its name (an Undefined, a macro, a cycler)
        memo[key] = total
        return total

    try:
        return size(value, 0)
    except (_TooBig, RecursionError):
        return limit + 1


def check_text(value: Any, what: str) -> None:
    """Refuse `value` when its text would be over MAX_TEXT characters."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _over(what, len(value), MAX_TEXT, "characters")
        return
    size = text_size(value)
    if size > MAX_TEXT:
        raise TemplateLimitError(
            f"{what} would make a text of more than {_number(MAX_TEXT)} characters"
        )


def refuse_none(value: Any, what: str) -> None:
    """A letter reading "Dear None" is half rendered: `.get()` of a missing key and `none`
    get past the undefined check, but not into a letter's text."""
    if value is None:
        raise jinja2.TemplateRuntimeError(
            f"{what} would write None (a missing value) into the letter: give it a value, or"
            " write {{ ... | default('', true) }} where nothing is meant"
        )


def _check_result(value: Any, what: str) -> Any:
    """The cheap checks of a result already made: a text's length, a list's items."""
    if isinstance(value, (str, bytes)):
        if len(value) > MAX_TEXT:
            raise _over(what, len(value), MAX_TEXT, "characters")
    elif isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        raise _over(what, len(value), MAX_ITEMS, "items")
    return value


def _check_int_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise _over(what, bits, MAX_INT_BITS, "bits of integer")


def _width(value: Any, what: str) -> int:
    """A width or count argument, refused when it would pad past MAX_TEXT."""
    width = len(value) if isinstance(value, str) else value
    if isinstance(width, int) and width > MAX_TEXT:
        raise _over(what, width, MAX_TEXT, "characters")
    return width if isinstance(width, int) else 0


# `%` conversions: flags, width (or *), precision (or *), length modifier, type.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def check_printf(fmt: str, args: Any) -> None:
    """Refuse `fmt % args` when its widths, or its conversions times its values, are too big."""
    values: Iterable[Any]
    if isinstance(args, tuple):
        values = args
    elif isinstance(args, Mapping):
        values = args.values()
    else:
        values = (args,)
    values = list(values)
    for value in values:
        refuse_none(value, "a % format")
    star_widths = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    conversions = 0
    widest = 0
    for match in _PRINTF.finditer(fmt):
        if match.group(3) == "%":
            continue
        conversions += 1
        for number in (match.group(1), match.group(2)):
            if number == "*":
                widest = max([widest, *star_widths])
            elif number:
                widest = max(widest, int(number[:18]))
    if widest > _MAX_FORMAT_WIDTH:
        raise _over("a % format width", widest, _MAX_FORMAT_WIDTH, "characters")
    largest = max((text_size(v) for v in values), default=0)
    estimate = len(fmt) + conversions * (largest + widest)
    if estimate > MAX_TEXT:
        raise _over("this % format", estimate, MAX_TEXT, "characters")


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


class _BoundedFormatting:
    """str.format in the sandbox: each field's width bounded, the whole result too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._made = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        refuse_none(value, "a format field")
        if conversion is not None:
            check_text(value, "a format field")
        return super().convert_field(value, conversion)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        match = _FORMAT_SPEC.match(format_spec)
        if match:
            for number in match.groups():
                if number and (len(number) > 9 or int(number) > _MAX_FORMAT_WIDTH):
                    raise _over("a format width", int(number[:18]), _MAX_FORMAT_WIDTH, "characters")
        if not isinstance(value, (str, int, float)):
            check_text(value, "a format field")
        made = super().format_field(value, format_spec)  # type: ignore[misc]
        self._made += len(made)
        if self._made > MAX_TEXT:
            raise _over("str.format", self._made, MAX_TEXT, "characters")
        return made


class _BoundedFormatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    pass


def _check_text_method(owner: str | bytes, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Before a str (or bytes) method runs: will its result stay under MAX_TEXT?

    Returns the arguments to call it with: an iterator given to `join` is made a list
    (it had to be walked to be sized).
    """
    what = f"{type(owner).__name__}.{name}()"
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill"):
        _width(first, what)
    elif name == "expandtabs":
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        size = len(owner) + tabs * (first if isinstance(first, int) else 8)
        if size > MAX_TEXT:
            raise _over(what, size, MAX_TEXT, "characters")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = owner.count(old) if old else len(owner) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        size = len(owner) + count * len(new)
        if size > MAX_TEXT:
            raise _over(what, size, MAX_TEXT, "characters")
    elif name == "join" and first is not None:
        items = first if isinstance(first, (list, tuple)) else list(first)
        _check_join(len(owner), items, what)
        return (items, *args[1:])
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((text_size(v) for v in first.values()), default=1)
        if len(owner) * longest > MAX_TEXT:
            raise _over(what, len(owner) * longest, MAX_TEXT, "characters")
    return args


def _check_join(separator: int, items: list[Any] | tuple[Any, ...], what: str) -> None:
    _check_result(items, what)
    for item in items:
        refuse_none(item, what)
    size = sum(text_size(item) for item in items) + separator * len(items)
    if size > MAX_TEXT:
        raise _over(what, size, MAX_TEXT, "characters")


class _Clock:
    """The time one render may take, checked every _TICKS_PER_CLOCK operations."""

    def __init__(self) -> None:
        self.limit = MAX_SECONDS
        self.deadline = float("inf")
        self.ticks = 0

    def start(self, seconds: float) -> None:
        self.limit = seconds
        self.deadline = time.monotonic() + seconds
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % _TICKS_PER_CLOCK == 0 and time.monotonic() > self.deadline:
            raise TemplateTimeout(
                f"rendering took more than {self.limit:g} seconds; is there a loop"
                " that never ends, or loops inside loops?"
            )


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with `~` and every `for` loop going through the sandbox."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.bounded_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None
        )
        super().visit_For(node, frame)


class ConfinedLoader(jinja2.BaseLoader):
    """Templates from one folder only, each of at most MAX_TEMPLATE_BYTES.

    A name that resolves outside the folder (`..`, or a link to a file elsewhere) is
    refused; links that stay inside it, and a linked folder itself, are followed.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def resolve(self, name: str) -> Path:
        """The file `name` stands for, checked to be inside the folder."""
        pieces = split_template_path(name)
        try:
            root = self.folder.resolve(strict=True)
            resolved = self.folder.joinpath(*pieces).resolve(strict=True)
        except (OSError, RuntimeError):
            raise jinja2.TemplateNotFound(name) from None
        if not resolved.is_relative_to(root):
            raise TemplateOutsideFolder(
                f"the template '{name}' resolves to {resolved}, outside the templates"
                f" folder {root}; copy the file into the folder instead of linking to it"
            )
        return resolved

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        resolved = self.resolve(template)
        try:
            # O_NOFOLLOW: the resolved path has no link left; one put there since is refused.
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise jinja2.TemplateNotFound(template) from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise jinja2.TemplateNotFound(template)
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
        if len(data) > MAX_TEMPLATE_BYTES:
            raise TemplateLimitError(
                f"the template '{template}' is larger than {_number(MAX_TEMPLATE_BYTES)} bytes"
            )
        return (
            data.decode("utf-8"),
            str(self.folder.joinpath(*split_template_path(template))),
            (lambda: True),
        )


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_ITEMS:
        raise _over("range()", len(numbers), MAX_ITEMS, "numbers")
    return numbers


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 100 or max > 1000:
        raise TemplateLimitError("lipsum() makes at most 100 paragraphs of 1,000 words")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# What a filter check may return: other arguments to call the filter with (e.g. an
# iterator it walked, as a list), or None to call it with its own.
Arguments = tuple[tuple[Any, ...], dict[str, Any]] | None


def _guard(name: str, func: Callable[..., Any], before: Callable[..., Arguments] | None) -> Any:
    """The filter `func` with `before(*args, **kwargs)` run first and its result checked.

    Jinja passes a context first to filters marked with pass_context & co. (the mark is
    the `jinja_pass_arg` attribute, which update_wrapper copies); `before` gets the same.
    """
    what = f"the {name} filter"

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            changed = before(*args, **kwargs)
            if changed is not None:
                args, kwargs = changed
        return _check_result(func(*args, **kwargs), what)

    return update_wrapper(guarded, func)


def _value_arg(func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    return args[skip] if len(args) > skip else None


# Filters that turn their value into text: the value is sized before it is.
_TEXT_FILTERS = (
    "capitalize", "e", "escape", "forceescape", "lower", "pprint", "safe", "string",
    "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize",
    "wordcount", "xmlattr",
)  # fmt: skip


def _filter_checks() -> dict[str, Callable[..., Arguments]]:
    def center(value: Any, width: int = 80) -> None:
        refuse_none(value, "the center filter")
        check_text(value, "the center filter")
        _width(width, "the center filter")

    def indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> None:
        refuse_none(value, "the indent filter")
        check_text(value, "the indent filter")
        text = str(value)
        size = len(text) + (text.count("\n") + 1) * _width(width, "the indent filter")
        if size > MAX_TEXT:
            raise _over("the indent filter", size, MAX_TEXT, "characters")

    def wordwrap(
        environment: Any,
        value: Any,
        width: int = 79,
        break_long_words: bool = True,
        wrapstring: str | None = None,
        break_on_hyphens: bool = True,
    ) -> None:
        refuse_none(value, "the wordwrap filter")
        check_text(value, "the wordwrap filter")
        text = str(value)
        lines = len(text) // max(1, width) + text.count("\n") + 1
        size = len(text) + lines * len(wrapstring or "\n")
        if size > MAX_TEXT:
            raise _over("the wordwrap filter", size, MAX_TEXT, "characters")

    def replace(
        eval_ctx: Any, value: Any, old: str = "", new: str = "", count: int | None = None
    ) -> None:
        refuse_none(value, "the replace filter")
        check_text(value, "the replace filter")
        args = (str(old), str(new)) if count is None else (str(old), str(new), count)
        _check_text_method(str(value), "replace", args)

    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Arguments:
        if attribute is not None:
            return None
        items = value if isinstance(value, (list, tuple)) else list(value)
        _check_join(len(str(d)), items, "the join filter")
        return (eval_ctx, items, d), {}

    def format_(value: Any, *args: Any, **kwargs: Any) -> None:
        check_printf(str(value), kwargs or args)

    def batch(value: Any, linecount: int = 1, fill_with: Any = None) -> None:
        if linecount > MAX_ITEMS:
            raise _over("the batch filter", linecount, MAX_ITEMS, "items")

    def slice_(eval_ctx: Any, value: Any, slices: int = 1, fill_with: Any = None) -> None:
        if slices > MAX_ITEMS:
            raise _over("the slice filter", slices, MAX_ITEMS, "lists")

    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
        if isinstance(start, (list, tuple, str)) and isinstance(iterable, (list, tuple)):
            size = len(start) + sum(len(item) for item in iterable if hasattr(item, "__len__"))
            if size > MAX_ITEMS:
                raise _over("the sum filter", size, MAX_ITEMS, "items")

    def round_(value: Any, precision: int = 0, method: str = "common") -> None:
        if abs(precision) > 1000:
            raise _over("the round filter", abs(precision), 1000, "digits")

    def list_(eval_ctx: Any, value: Any) -> None:
        if isinstance(value, str) and len(value) > MAX_ITEMS:
            raise _over("the list filter", len(value), MAX_ITEMS, "items")

    def tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> None:
        size = text_size(value) * (1 + (indent or 0))
        if size > MAX_TEXT:
            raise _over("the tojson filter", size, MAX_TEXT, "characters")

    return {
        "center": center,
        "indent": indent,
        "wordwrap": wordwrap,
        "replace": replace,
        "join": join,
        "format": format_,
        "batch": batch,
        "slice": slice_,
        "sum": sum_,
        "round": round_,
        "list": list_,
        "tojson": tojson,
    }


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, bounded in the sizes it makes and the time it takes.

    Call `start()` before each render: it sets that render's time limit.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, finalize=self._finalize, **kwargs)
        self.clock = _Clock()
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        checks = _filter_checks()
        for name in _TEXT_FILTERS:
            checks.setdefault(name, self._text_check(self.filters[name]))
        for name, func in list(self.filters.items()):
            self.filters[name] = _guard(name, func, checks.get(name))

    @staticmethod
    def _text_check(func: Callable[..., Any]) -> Callable[..., Arguments]:
        def check(*args: Any, **kwargs: Any) -> Arguments:
            value = _value_arg(func, args)
            refuse_none(value, "this filter")
            check_text(value, "this filter")
            return None

        return check

    def start(self, seconds: float = MAX_SECONDS) -> None:
        """Start the clock for one render."""
        self.clock.start(seconds)

    @staticmethod
    def _finalize(value: Any) -> Any:
        if not isinstance(value, str):
            refuse_none(value, "this {{ ... }}")
            check_text(value, "this {{ ... }}")
        return value

    def bounded_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of `~`, checked before they are joined."""
        self.clock.tick()
        for part in parts:
            refuse_none(part, "~")
        size = sum(text_size(part) for part in parts)
        if size > MAX_TEXT:
            raise _over("~", size, MAX_TEXT, "characters")
        return parts

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What a `for` loop walks, one clock tick per item."""
        tick = self.clock.tick
        for item in iterable:
            tick()
            yield item

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.clock.tick()
        if operator == "*":
            self._check_multiply(left, right)
        elif operator == "**":
            self._check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            check_printf(left, right)
        elif operator == "+":
            self._check_add(left, right)
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _check_multiply(left: Any, right: Any) -> None:
        if isinstance(left, int) and not isinstance(right, int):
            left, right = right, left
        if not isinstance(right, int):
            return
        if isinstance(left, (str, bytes)):
            if len(left) * right > MAX_TEXT:
                raise _over("*", len(left) * right, MAX_TEXT, "characters")
        elif isinstance(left, (list, tuple)):
            if len(left) * right > MAX_ITEMS:
                raise _over("*", len(left) * right, MAX_ITEMS, "items")
            if right > 1 and text_size(left) * right > MAX_TEXT:
                raise TemplateLimitError(
                    f"* would make a list of more than {_number(MAX_TEXT)} characters"
                )
        elif isinstance(left, int):
            _check_int_bits(left.bit_length() + right.bit_length(), "*")

    @staticmethod
    def _check_add(left: Any, right: Any) -> None:
        if isinstance(left, str) and isinstance(right, str):
            size, limit, unit = len(left) + len(right), MAX_TEXT, "characters"
        elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            size, limit, unit = len(left) + len(right), MAX_ITEMS, "items"
        else:
            return
        if size > limit:
            raise _over("+", size, limit, unit)

    @staticmethod
    def _check_power(base: Any, exponent: Any) -> None:
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            _check_int_bits(exponent * base.bit_length(), "**")

    def call(self, __context: Context, __obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.clock.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, BuiltinMethodType):
            if isinstance(owner, (str, bytes)):
                args = _check_text_method(owner, __obj.__name__, args)
            elif isinstance(owner, int) and __obj.__name__ == "to_bytes" and args:
                _width(args[0], "int.to_bytes()")
        return _check_result(super().call(__context, __obj, *args, **kwargs), "this call")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own str.format sandboxing, with a formatter that bounds the result."""
        if not isinstance(value, BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        is_format_map = value.__name__ == "format_map"
        kind = type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            formatter: SandboxedFormatter
            if isinstance(owner, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
            else:
                formatter = _BoundedFormatter(self)
            return kind(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)
