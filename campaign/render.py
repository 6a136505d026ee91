"""Jinja2 environments for the letter: sandboxed, strict, HTML autoescaped, text not."""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from campaign.errors import CampaignError
from campaign.headersafety import unsafe_reason
from campaign.models import Campaign, Recipient, Rendered

_UNDEFINED_NAME = re.compile(
    r"has no attribute '([^']+)'|'([^']+)' is undefined|no item named '([^']+)'"
)
SUBJECT_TEMPLATE = "<campaign.subject>"


def template_paths(campaign: Campaign) -> tuple[Path, Path]:
    """The plain-text template and the (optional) HTML template of the campaign."""
    base = campaign.templates_dir
    return base / f"{campaign.template}.txt.j2", base / f"{campaign.template}.html.j2"


def _json_default(value: object) -> object:
    """`tojson` of the file's mappings, which are read-only mappings rather than dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _environment(templates_dir: Path, *, html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}
    return env


class LetterRenderer:
    """Renders the subject, text and HTML of the letter for one recipient at a time."""

    def __init__(self, campaign: Campaign, recipients: Sequence[Recipient]) -> None:
        self._campaign = campaign
        text_path, html_path = template_paths(campaign)
        if not text_path.is_file():
            raise CampaignError(
                "the letter template is missing",
                path=text_path,
                hint=f"create it, or set campaign.template in {campaign.source.name}",
            )
        text_env = _environment(campaign.templates_dir, html=False)
        self._text = self._load(text_env, text_path)
        self._html = (
            self._load(_environment(campaign.templates_dir, html=True), html_path)
            if html_path.is_file()
            else None
        )
        try:
            self._subject = text_env.from_string(campaign.subject)
        except jinja2.TemplateSyntaxError as err:
            raise CampaignError(
                f"the subject is not a valid template: {err.message}",
                path=campaign.source,
                line=campaign.data_line("subject"),
                field="campaign.subject",
            ) from None
        self._shared: dict[str, Any] = {
            "campaign": campaign.data,
            "recipients": [recipient.data for recipient in recipients],
        }

    @staticmethod
    def _load(env: ImmutableSandboxedEnvironment, path: Path) -> jinja2.Template:
        try:
            return env.get_template(path.name)
        except jinja2.TemplateSyntaxError as err:
            raise CampaignError(
                f"template syntax error: {err.message}", path=path, line=err.lineno
            ) from None
        except UnicodeDecodeError:
            raise CampaignError("the template is not valid UTF-8", path=path) from None

    def render(self, recipient: Recipient) -> Rendered:
        context = {**self._shared, "recipient": recipient.data}
        subject = self._render(self._subject, context, recipient, SUBJECT_TEMPLATE).strip()
        reason = unsafe_reason(subject)
        if reason:
            raise CampaignError(
                f"the rendered subject {reason}",
                path=self._campaign.source,
                line=self._campaign.data_line("subject"),
                recipient=recipient.id,
                field="campaign.subject",
            )
        if not subject:
            raise CampaignError(
                "the rendered subject is empty",
                path=self._campaign.source,
                recipient=recipient.id,
                field="campaign.subject",
            )
        text = self._render(self._text, context, recipient, self._text.name or "")
        if not text.endswith("\n"):
            text += "\n"
        html = None
        if self._html is not None:
            html = self._render(self._html, context, recipient, self._html.name or "")
        return Rendered(subject=subject, text=text, html=html)

    def _render(
        self, template: jinja2.Template, context: dict[str, Any], recipient: Recipient, name: str
    ) -> str:
        try:
            return template.render(context)
        except jinja2.UndefinedError as err:
            found = _UNDEFINED_NAME.search(str(err))
            variable = next((g for g in found.groups() if g), None) if found else None
            message = f"undefined variable: {err.message}"
            raise self._error(err, name, recipient, message, variable) from None
        except jinja2.TemplateError as err:
            raise self._error(
                err, name, recipient, f"template error: {err.message}", None
            ) from None
        except Exception as err:  # a filter or test raising on this recipient's data
            raise self._error(err, name, recipient, f"template error: {err}", None) from None

    def _error(
        self, err: Exception, name: str, recipient: Recipient, message: str, variable: str | None
    ) -> CampaignError:
        if name == SUBJECT_TEMPLATE:
            return CampaignError(
                message,
                path=self._campaign.source,
                line=self._campaign.data_line("subject"),
                recipient=recipient.id,
                field=variable or "campaign.subject",
            )
        line = None
        for frame in traceback.extract_tb(err.__traceback__):
            if frame.filename and Path(frame.filename).name == name:
                line = frame.lineno
        return CampaignError(
            message,
            path=self._campaign.templates_dir / name,
            line=line,
            recipient=recipient.id,
            field=variable,
        )
