"""`campaign init`: a starter campaign written into a folder, never over anything there."""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

from campaign.errors import CampaignError

# The package data under campaign/starter/, written to the same paths in the folder.
STARTER_FILES = ("recipients.yaml", "templates/letter.txt.j2", "templates/letter.html.j2")
OUTBOX = "outbox"


def starter_targets(folder: Path) -> list[Path]:
    """The paths `init_campaign(folder)` creates, the empty outbox folder last."""
    return [folder / name for name in STARTER_FILES] + [folder / OUTBOX]


def init_campaign(folder: Path) -> list[Path]:
    """Write a starter campaign into `folder` (created if needed); return what was created.

    Nothing is overwritten: if any of the paths exists, nothing at all is written and
    the error names them. A path that appears while writing (another process) undoes
    what this call created.
    """
    targets = starter_targets(folder)
    existing = [path for path in targets if path.exists() or path.is_symlink()]
    if existing:
        names = ", ".join(str(path) for path in existing)
        raise CampaignError(
            f"refusing to overwrite {names}",
            path=existing[0],
            hint="choose a new or empty folder, or move these away first",
        )
    for parent in sorted({path.parent for path in targets}):
        not_folder = next(
            (p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None
        )
        if not_folder is not None:
            raise CampaignError(
                "a file is in the way: the campaign needs a folder here",
                path=not_folder,
                hint="choose another folder",
            )
    contents = [_starter_bytes(name) for name in STARTER_FILES]
    created: list[Path] = []
    try:
        for path, data in zip(targets, contents, strict=False):
            _make_folder(path.parent, created)
            with open(path, "xb") as handle:  # exclusive: never replaces a file
                created.append(path)
                handle.write(data)
        outbox = targets[-1]
        outbox.mkdir()
        created.append(outbox)
    except FileExistsError as err:
        _undo(created)
        raise CampaignError(
            "refusing to overwrite it: it appeared while the campaign was being written",
            path=err.filename,
            hint="nothing was written; run `campaign init` again in a new folder",
        ) from None
    except OSError as err:
        _undo(created)
        raise CampaignError(
            f"cannot write the starter campaign: {err.strerror}",
            path=err.filename or folder,
            hint="nothing was written",
        ) from None
    return [path for path in created if path in targets]


def _starter_bytes(name: str) -> bytes:
    try:
        return resources.files("campaign").joinpath("starter", name).read_bytes()
    except OSError as err:  # package data left out of the installation
        raise CampaignError(
            f"the starter file {name} is missing from the installation: {err.strerror}",
            hint="reinstall campaign",
        ) from None


def _make_folder(folder: Path, created: list[Path]) -> None:
    """Create `folder` and its missing parents, recording each one created."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def _undo(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):  # best effort: report the first error, not these
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
