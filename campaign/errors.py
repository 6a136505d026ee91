"""The one exception type for the user's mistakes, and its few specialisations."""

from __future__ import annotations

from pathlib import Path


class CampaignError(Exception):
    """A problem the user can fix: bad input, bad settings, a refused run.

    It names where the problem is (file, line, recipient, field) so the message
    alone is enough to find and fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        recipient: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.recipient = recipient
        self.field = field
        self.hint = hint
        self.recipients: tuple[str, ...] = ()  # when one problem is said for many recipients

    def location(self) -> str:
        """`file:line: recipient 'x', field 'y'` with whatever parts are known."""
        parts: list[str] = []
        if self.path is not None:
            parts.append(f"{self.path}:{self.line}" if self.line else self.path)
        where: list[str] = []
        if self.recipient is not None:
            where.append(f"recipient '{self.recipient}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        if where:
            parts.append(", ".join(where))
        return ": ".join(parts)

    def __str__(self) -> str:
        location = self.location()
        text = f"{location}: {self.message}" if location else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ValidationErrors(CampaignError):
    """Several input problems found in one pass, reported together."""

    def __init__(self, errors: list[CampaignError]) -> None:
        self.errors = errors
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"{len(errors)} {noun} found; nothing was written or sent")

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  {err}" for err in self.errors)])


class UsageError(CampaignError):
    """The command line asks for something that cannot be done."""


class RunRefused(CampaignError):
    """The run will not start (no confirmation, a lock held, changed content)."""


class SmtpSettingsError(CampaignError):
    """SMTP settings are missing, contradictory or unsafe."""
