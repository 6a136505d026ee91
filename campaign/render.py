"""The letter's templates: rendered per recipient in a bounded sandbox; read for their keys."""

from __future__ import annotations

import copy
import difflib
import os
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.utils import missing

from campaign.errors import CampaignError
from campaign.headersafety import unsafe_reason
from campaign.models import Campaign, Recipient, Rendered, data_line
from campaign.sandbox import (
    MAX_SECONDS,
    BoundedEnvironment,
    ConfinedLoader,
    TemplateLimitError,
    TemplateTimeout,
)

SUBJECT_TEMPLATE = "<campaign.subject>"
# Subject, text and HTML of one letter together, in bytes of UTF-8; a letter over it
# stops rendering (the message names the recipient).
MAX_LETTER_BYTES = 10 * 2**20
# What the templates see besides the globals: the names a "did you mean" can offer.
CONTEXT_NAMES = ("campaign", "recipient", "recipients")
_SHOWN_RECIPIENTS = 5
_SHOWN_KEYS = 12


def template_paths(campaign: Campaign, language: str | None = None) -> tuple[Path, Path]:
    """The plain-text template and the (optional) HTML template for a language.

    The campaign's own language uses `<template>.txt.j2`; another one
    `<template>.<language>.txt.j2` (and `.html.j2`).
    """
    base = campaign.templates_dir
    name = campaign.template
    if language is not None and language != campaign.language:
        name = f"{name}.{language}"
    return base / f"{name}.txt.j2", base / f"{name}.html.j2"


def subject_place(campaign: Campaign, language: str | None) -> tuple[int | None, str]:
    """The line and field of the subject a language uses (its own line in a mapping)."""
    subjects = campaign.data.get("subject") if campaign.subjects else None
    if language is not None and isinstance(subjects, Mapping):
        for key in subjects:
            if isinstance(key, str) and key.lower() == language.lower():
                return data_line(subjects, key), f"campaign.subject.{key}"
    return campaign.data_line("subject"), "campaign.subject"


@dataclass(frozen=True, slots=True)
class _Letter:
    """One language's templates: the subject, the text and, if there is one, the HTML."""

    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None


def _json_default(value: object) -> object:
    """`tojson` of the file's mappings, which are read-only mappings rather than dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class MissingName(jinja2.UndefinedError):
    """A template used a name or key that is not there; carries which, and where it looked."""

    def __init__(self, message: str, name: Any, owner: Any) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined that says which name was missing from what (for "did you mean")."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        if self._undefined_hint is None and self._undefined_exception is jinja2.UndefinedError:
            raise MissingName(self._undefined_message, self._undefined_name, self._undefined_obj)
        super()._fail_with_undefined_error(*args, **kwargs)


# Jinja binds `__str__`, `__iter__`, `__add__`... to Undefined's own function, not to the
# method by name: point them at the override.
for _base in (jinja2.Undefined, jinja2.StrictUndefined):
    for _name, _value in vars(_base).items():
        if _value is jinja2.Undefined._fail_with_undefined_error and _name.startswith("__"):
            setattr(_Undefined, _name, _Undefined._fail_with_undefined_error)


def _environment(templates_dir: Path, *, html: bool) -> BoundedEnvironment:
    env = BoundedEnvironment(
        loader=ConfinedLoader(templates_dir),
        undefined=_Undefined,
        autoescape=html,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}
    return env


def _did_you_mean(name: Any, candidates: Iterable[str]) -> str | None:
    if not isinstance(name, str):
        return None
    found = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{found[0]}'?" if found else None


def _listed(keys: Iterable[str]) -> str:
    ordered = sorted(set(keys))
    more = f" and {len(ordered) - _SHOWN_KEYS} more" if len(ordered) > _SHOWN_KEYS else ""
    return ", ".join(ordered[:_SHOWN_KEYS]) + more


class LetterRenderer:
    """Renders the subject, text and HTML of the letter for one recipient at a time.

    Every template runs in a BoundedEnvironment (campaign.sandbox), reads files only from
    the templates folder, and the three parts together may not pass `max_letter_bytes`.
    """

    def __init__(
        self,
        campaign: Campaign,
        recipients: Sequence[Recipient],
        *,
        max_letter_bytes: int = MAX_LETTER_BYTES,
        seconds: float = MAX_SECONDS,
    ) -> None:
        self._campaign = campaign
        self._recipients = recipients
        self._max_letter_bytes = max_letter_bytes
        self._seconds = seconds
        self._recipient_ids: set[int] | None = None
        self._recipient_keys: set[str] | None = None
        self._stopped: CampaignError | None = None
        self._text_env = _environment(campaign.templates_dir, html=False)
        self._html_env = _environment(campaign.templates_dir, html=True)
        # Each language's templates, loaded once when a recipient first needs them; or
        # why that language has no letter (said for each of its recipients).
        self._letters: dict[str, _Letter | CampaignError] = {}
        self._subjects: dict[str, jinja2.Template] = {}
        self._subject_places: dict[int, tuple[int | None, str]] = {}
        # "": the one subject of every language, when the file gives a single one.
        for language, source in (campaign.subjects or {"": campaign.subject}).items():
            line, field = subject_place(campaign, language or None)
            try:
                template = self._text_env.from_string(source)
            except jinja2.TemplateSyntaxError as err:
                raise CampaignError(
                    f"the subject is not a valid template: {err.message}",
                    path=campaign.source,
                    line=line,
                    field=field,
                ) from None
            self._subjects[language] = template
            self._subject_places[id(template)] = (line, field)
        text_path = template_paths(campaign)[0]
        if not text_path.is_file():
            raise CampaignError(
                "the letter template is missing",
                path=text_path,
                hint=f"create it, or set campaign.template in {campaign.source.name}",
            )
        # The campaign's own language: its templates are read now, as they always were.
        if isinstance(self._letter(campaign.language), CampaignError):
            self._load(self._text_env, text_path)  # a syntax error is said now all the same
        self._shared: dict[str, Any] = {
            "campaign": campaign.data,
            "recipients": [recipient.data for recipient in recipients],
        }

    def _letter(self, language: str) -> _Letter | CampaignError:
        """The language's templates (read once), or why the language has no letter."""
        found = self._letters.get(language)
        if found is not None:
            return found
        campaign = self._campaign
        text_path, html_path = template_paths(campaign, language)
        subject = self._subjects.get(language, self._subjects.get(""))
        letter: _Letter | CampaignError
        if not text_path.is_file():
            letter = CampaignError(
                f"no letter template for the language '{language}'",
                path=text_path,
                field="language",
                hint=f"write {text_path.name}, a translation of {campaign.template}.txt.j2,"
                " or give these recipients another language",
            )
        elif subject is None:
            letter = CampaignError(
                f"campaign.subject gives no subject for the language '{language}'",
                path=campaign.source,
                line=campaign.data_line("subject"),
                field="campaign.subject",
                hint=f'add `{language}: "..."` under campaign.subject',
            )
        else:
            try:
                text = self._load(self._text_env, text_path)
                html = self._load(self._html_env, html_path) if html_path.is_file() else None
            except CampaignError as err:
                if language == campaign.language:
                    raise
                letter = err
            else:
                letter = _Letter(subject, text, html)
        self._letters[language] = letter
        return letter

    @staticmethod
    def _load(env: BoundedEnvironment, path: Path) -> jinja2.Template:
        try:
            return env.get_template(path.name)
        except jinja2.TemplateSyntaxError as err:
            raise CampaignError(
                f"template syntax error: {err.message}", path=path, line=err.lineno
            ) from None
        except UnicodeDecodeError:
            raise CampaignError("the template is not valid UTF-8", path=path) from None
        except jinja2.TemplateNotFound:
            raise CampaignError("the template cannot be read", path=path) from None
        except jinja2.TemplateError as err:  # outside the folder, too large
            raise CampaignError(str(err.message), path=path) from None

    def render(self, recipient: Recipient) -> Rendered:
        if self._stopped is not None:
            stopped = copy.copy(self._stopped)
            stopped.recipient = recipient.id
            raise stopped
        language = self._campaign.language_of(recipient)
        letter = self._letters.get(language)
        if letter is None:
            letter = self._letter(language)
        if isinstance(letter, CampaignError):
            missing = copy.copy(letter)
            missing.recipient = recipient.id
            raise missing
        context = {**self._shared, "recipient": recipient.data}
        left = [self._max_letter_bytes]
        subject = self._render(letter.subject, self._text_env, context, recipient, left).strip()
        reason = unsafe_reason(subject)
        if reason:
            line, field = self._subject_places[id(letter.subject)]
            raise CampaignError(
                f"the rendered subject {reason}",
                path=self._campaign.source,
                line=line,
                recipient=recipient.id,
                field=field,
            )
        if not subject:
            raise CampaignError(
                "the rendered subject is empty",
                path=self._campaign.source,
                recipient=recipient.id,
                field=self._subject_places[id(letter.subject)][1],
            )
        text = self._render(letter.text, self._text_env, context, recipient, left)
        if not text.endswith("\n"):
            text += "\n"
        html = None
        if letter.html is not None:
            html = self._render(letter.html, self._html_env, context, recipient, left)
        size = len(subject) + len(text) + len(html or "")
        if size * 4 > self._max_letter_bytes:  # only then can the UTF-8 bytes be too many
            size = sum(len(part.encode("utf-8", "surrogatepass")) for part in (subject, text))
            size += len((html or "").encode("utf-8", "surrogatepass"))
            if size > self._max_letter_bytes:
                raise self._too_large(recipient, letter.text.filename)
        return Rendered(subject=subject, text=text, html=html)

    def _too_large(self, recipient: Recipient, filename: str | None) -> CampaignError:
        limit = self._max_letter_bytes
        return CampaignError(
            f"the letter is larger than {limit:,} bytes (subject, text and HTML together)",
            path=filename,
            recipient=recipient.id,
            hint="shorten the template or the data it shows",
        )

    def _render(
        self,
        template: jinja2.Template,
        env: BoundedEnvironment,
        context: dict[str, Any],
        recipient: Recipient,
        left: list[int],
    ) -> str:
        """Render, stopping as soon as the letter's characters pass its byte limit."""
        env.start(self._seconds)
        parts: list[str] = []
        try:
            try:
                # Template.render's own steps, with the parts counted as they come.
                for part in template.root_render_func(template.new_context(context)):
                    left[0] -= len(part)
                    if left[0] < 0:
                        raise self._too_large(recipient, template.filename)
                    parts.append(part)
            except CampaignError:
                raise
            except Exception:
                env.handle_exception()  # re-raised with the template's lines in the traceback
        except MissingName as err:
            message, hint = self._describe_missing(err, recipient)
            field = err.name if isinstance(err.name, str) else None
            raise self._error(err, template, recipient, message, field, hint) from None
        except jinja2.UndefinedError as err:
            message = f"undefined variable: {err.message}"
            raise self._error(err, template, recipient, message, None, None) from None
        except TemplateLimitError as err:
            error = self._error(
                err,
                template,
                recipient,
                f"template error: {err.message}",
                None,
                "the sandbox bounds what a template may make and how long it may take",
            )
            if isinstance(err, TemplateTimeout):
                self._stopped = error
            raise error from None
        except jinja2.TemplateNotFound as err:
            message = f"template error: no template '{err.name}' in the templates folder"
            raise self._error(err, template, recipient, message, None, None) from None
        except jinja2.TemplateError as err:
            raise self._error(
                err, template, recipient, f"template error: {err.message}", None, None
            ) from None
        except CampaignError:
            raise
        except Exception as err:  # a filter or test raising on this recipient's data
            raise self._error(
                err, template, recipient, f"template error: {err}", None, None
            ) from None
        return "".join(parts)

    def _describe_missing(self, err: MissingName, recipient: Recipient) -> tuple[str, str | None]:
        """`undefined variable: ...` and a hint, the same for every recipient it concerns."""
        name, owner = err.name, err.owner
        if owner is missing:
            known = (*CONTEXT_NAMES, *self._text_env.globals)
            return f"undefined variable: '{name}' is undefined", _did_you_mean(name, known)
        if owner is recipient.data or self._is_recipient_data(owner):
            if self._recipient_keys is None:
                self._recipient_keys = {key for other in self._recipients for key in other.data}
            keys = self._recipient_keys
            if name in keys:
                return (
                    f"undefined variable: recipient has no '{name}'",
                    f"other recipients have it: give it to this one too, or write"
                    f" {{{{ recipient.{name} | default('') }}}}",
                )
            hint = _did_you_mean(name, keys) or f"the recipients have {_listed(keys)}"
            return f"undefined variable: recipient has no '{name}'", hint
        if owner is self._campaign.data:
            keys = set(self._campaign.data)
            hint = _did_you_mean(name, keys) or f"the campaign section has {_listed(keys)}"
            return f"undefined variable: campaign has no '{name}'", hint
        if isinstance(owner, Mapping):
            keys = {key for key in owner if isinstance(key, str)}
            guess = _did_you_mean(name, keys) or (f"it has {_listed(keys)}" if keys else None)
            return f"undefined variable: no key '{name}'", guess
        return f"undefined variable: {err.message}", None

    def _is_recipient_data(self, owner: Any) -> bool:
        if self._recipient_ids is None:
            self._recipient_ids = {id(other.data) for other in self._recipients}
        return id(owner) in self._recipient_ids

    def _error(
        self,
        err: BaseException,
        template: jinja2.Template,
        recipient: Recipient,
        message: str,
        field: str | None,
        hint: str | None,
    ) -> CampaignError:
        place = self._subject_places.get(id(template))
        if place is not None:
            return CampaignError(
                message,
                path=self._campaign.source,
                line=place[0],
                recipient=recipient.id,
                field=field or place[1],
                hint=hint,
            )
        path, line = Path(template.filename or ""), None
        folder = os.path.join(self._campaign.templates_dir, "")
        for frame in traceback.extract_tb(err.__traceback__):
            # The innermost frame in a template file (an included one, if it failed there).
            if frame.filename and frame.filename.startswith(folder):
                path, line = Path(frame.filename), frame.lineno
        return CampaignError(
            message, path=path, line=line, recipient=recipient.id, field=field, hint=hint
        )


def collapse_template_errors(errors: Sequence[CampaignError]) -> list[CampaignError]:
    """The same problem for many recipients, said once: "... (for 6 recipients: a, b, ...)".

    Errors equal in everything but their recipient (a template line, the subject, a
    limit) become one error without a recipient, in the place of the first; the others
    are kept as they are, in order.
    """
    groups: dict[tuple[Any, ...], list[CampaignError]] = {}
    order: list[tuple[Any, ...]] = []
    for number, error in enumerate(errors):
        if error.recipient is None:
            key: tuple[Any, ...] = (number,)
        else:
            key = (type(error), error.message, error.path, error.line, error.field, error.hint)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(error)
    collapsed: list[CampaignError] = []
    for key in order:
        group = groups[key]
        if len(group) == 1:
            collapsed.append(group[0])
            continue
        ids = [str(error.recipient) for error in group]
        shown = ", ".join(ids[:_SHOWN_RECIPIENTS])
        more = f" and {len(ids) - _SHOWN_RECIPIENTS} more" if len(ids) > _SHOWN_RECIPIENTS else ""
        merged = copy.copy(group[0])
        merged.recipient = None
        merged.recipients = tuple(ids)
        merged.message = f"{group[0].message} (for {len(ids)} recipients: {shown}{more})"
        merged.args = (merged.message,)
        collapsed.append(merged)
    return collapsed


# Reading the templates for the keys they use (for `check`'s "not used" warnings).

_KEY_FILTERS = frozenset(
    {"map", "selectattr", "rejectattr", "sort", "groupby", "unique", "min", "max", "sum", "join"}
)
_WHOLE_MAPPING = frozenset({"items", "keys", "values"})


@dataclass(frozen=True, slots=True)
class TemplateKeys:
    """The keys of `recipient` and `campaign` that the templates name.

    None for one of them when a template uses it whole (`recipient|tojson`, a macro given
    `recipient`, `recipient[name]`): then any of its keys may be used.
    """

    recipient: frozenset[str] | None
    campaign: frozenset[str] | None


def template_keys(campaign: Campaign, languages: Iterable[str] = ()) -> TemplateKeys | None:
    """The keys the subjects and templates (and what they include) name; None if unreadable.

    The templates of the campaign's language, and of each of `languages` that has them.
    """
    env = _environment(campaign.templates_dir, html=False)
    loader = ConfinedLoader(campaign.templates_dir)
    waiting: list[str] = []
    for language in sorted({campaign.language, *languages}):
        text_path, html_path = template_paths(campaign, language)
        if language == campaign.language or text_path.is_file():
            waiting.append(text_path.name)
        if html_path.is_file():
            waiting.append(html_path.name)
    try:
        trees = [env.parse(subject) for subject in campaign.subjects.values()]
        trees = trees or [env.parse(campaign.subject)]
        seen: set[str] = set()
        while waiting:
            name = waiting.pop()
            if name in seen:
                continue
            seen.add(name)
            source, filename, _ = loader.get_source(env, name)
            tree = env.parse(source, name, filename)
            trees.append(tree)
            for node in tree.find_all(
                (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)
            ):
                named = getattr(node, "template", None)
                if not isinstance(named, nodes.Const) or not isinstance(named.value, str):
                    return TemplateKeys(None, None)  # a name known only when rendering
                waiting.append(named.value)
    except (jinja2.TemplateError, OSError, UnicodeDecodeError):
        return None
    reader = _KeyReader()
    for tree in trees:
        reader.aliases(tree)
    for tree in trees:
        reader.visit(tree, None)
    return TemplateKeys(
        None if reader.recipient_whole else frozenset(reader.recipient),
        None if reader.campaign_whole else frozenset(reader.campaign),
    )


class _KeyReader:
    """Walks template trees, collecting `recipient.x`, `recipient['x']`, `campaign.x`."""

    def __init__(self) -> None:
        self.recipient_names = {"recipient"}
        self.campaign_names = {"campaign"}
        self.recipient: set[str] = set()
        self.campaign: set[str] = set()
        self.recipient_whole = False
        self.campaign_whole = False

    def aliases(self, tree: nodes.Node) -> None:
        """Loop variables over `recipients` and names set to `recipient` read like it."""
        for loop in tree.find_all(nodes.For):
            source = loop.iter
            while isinstance(source, nodes.Filter) and source.node is not None:
                source = source.node
            if isinstance(source, nodes.Name) and source.name == "recipients":
                self.recipient_names.update(_target_names(loop.target))
        for assign in tree.find_all(nodes.Assign):
            if isinstance(assign.node, nodes.Name) and isinstance(assign.target, nodes.Name):
                if assign.node.name in self.recipient_names:
                    self.recipient_names.add(assign.target.name)
                elif assign.node.name in self.campaign_names:
                    self.campaign_names.add(assign.target.name)

    def visit(self, node: nodes.Node, parent: nodes.Node | None) -> None:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            self._get_call(node, node.node)
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name in self.recipient_names:
                if not self._use(node, parent, self.recipient):
                    self.recipient_whole = True
            elif node.name in self.campaign_names:
                if not self._use(node, parent, self.campaign):
                    self.campaign_whole = True
            elif node.name == "recipients" and isinstance(parent, nodes.Filter):
                self._filter_keys(parent)
        if isinstance(node, nodes.Filter) and node.name in _KEY_FILTERS:
            source = node.node
            while isinstance(source, nodes.Filter) and source.node is not None:
                source = source.node
            if isinstance(source, nodes.Name) and source.name == "recipients":
                self._filter_keys(node)
        for child in node.iter_child_nodes():
            self.visit(child, node)

    def _get_call(self, call: nodes.Call, method: nodes.Getattr) -> None:
        """`recipient.get('title')` names the key 'title'; `recipient.get(name)` any key."""
        owner = method.node
        if method.attr != "get" or not isinstance(owner, nodes.Name):
            return
        if owner.name in self.recipient_names:
            used = self.recipient
        elif owner.name in self.campaign_names:
            used = self.campaign
        else:
            return
        first = call.args[0] if call.args else None
        if isinstance(first, nodes.Const) and isinstance(first.value, str):
            used.add(first.value)
        elif used is self.recipient:
            self.recipient_whole = True
        else:
            self.campaign_whole = True

    def _filter_keys(self, node: nodes.Filter) -> None:
        if node.name not in _KEY_FILTERS:
            return
        for arg in (*node.args, *(kw.value for kw in node.kwargs)):
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                self.recipient.add(arg.value.split(".")[0])

    @staticmethod
    def _use(node: nodes.Name, parent: nodes.Node | None, used: set[str]) -> bool:
        """Record the key `parent` takes from `node`; False when it takes them all."""
        if isinstance(parent, nodes.Getattr) and parent.node is node:
            if parent.attr in _WHOLE_MAPPING:
                return False
            if parent.attr != "get":
                used.add(parent.attr)
            return True
        if isinstance(parent, nodes.Getitem) and parent.node is node:
            if isinstance(parent.arg, nodes.Const) and isinstance(parent.arg.value, str):
                used.add(parent.arg.value)
                return True
            return False
        if isinstance(parent, (nodes.Test, nodes.Assign, nodes.For)):
            return not isinstance(parent, nodes.For) or parent.iter is not node
        return False


def _target_names(target: nodes.Node) -> Iterator[str]:
    if isinstance(target, nodes.Name):
        yield target.name
