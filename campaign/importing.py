"""A spreadsheet export (CSV) -> the `recipients:` section of a campaign file, checked.

Every problem names the CSV file, the line the row starts on (physical lines, a
quoted line break counted) and the column, so it can be fixed in the spreadsheet.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from campaign.addresses import AddressError, normalise, split_mailbox
from campaign.errors import CampaignError, ValidationErrors
from campaign.headersafety import unsafe_reason
from campaign.loading import Options, load_campaign
from campaign.models import Notice
from campaign.slugs import snake_key, unique_slugs

MAX_CSV_BYTES = 64 * 1024 * 1024
MAX_REPORTED_ERRORS = 50
DELIMITERS = (",", ";", "\t")
ADDRESS_SEPARATOR = ";"
# Header names (as snake_case keys) taken for the `emails` column. `address` and
# `addresses` count only when no other is present: they are as often postal addresses.
EMAIL_KEYS = frozenset(
    {
        "emails",
        "email",
        "e_mail",
        "e_mails",
        "email_address",
        "email_addresses",
        "e_mail_address",
        "e_mail_addresses",
        "mail",
    }
)
FALLBACK_EMAIL_KEYS = ("address", "addresses")
# Columns whose cell holds several values separated by `;`, written as a one-line list.
LIST_KEYS = frozenset({"emails", "attachments"})
# The loader refuses such keys anywhere in the file; a column holding passwords or
# secrets is refused here, before its values are copied anywhere.
_SECRET_KEY = re.compile(r"(?:^|_)(?:pass|passwd|password|secret|secrets)(?:_|$)")
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?\Z")  # as campaign.loading's
# Controls other than tab and line feed: a cell may hold a multi-line postal address.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
# YAML 1.1 words that a plain key would be read as (yes/no, on/off, null).
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
_PLAIN_KEY = re.compile(r"[a-z][a-z0-9_]*\Z")
# The campaign section the imported recipients are checked under: only its lines count.
_CHECK_HEADER = (
    "campaign:\n"
    '  id: "csv-import"\n'
    '  subject: "Imported recipients"\n'
    '  from: "Campaign Office <campaign@example.org>"\n'
)
_CHECK_HEADER_LINES = _CHECK_HEADER.count("\n")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the spreadsheet: where it is, its header as written, its key."""

    position: int
    header: str
    key: str

    @property
    def letter(self) -> str:
        """The spreadsheet's name for the column: A, B, ... Z, AA, AB, ..."""
        return column_letter(self.position)

    @property
    def label(self) -> str:
        """`E-mail (column C)`: the header as the spreadsheet shows it, and where."""
        where = f"column {self.letter}"
        return f"{self.header} ({where})" if self.header else where


@dataclass(frozen=True)
class ImportedRecipients:
    """The recipients read from a CSV file, as YAML text, with each YAML line's origin."""

    source: Path
    yaml: str
    count: int
    columns: tuple[Column, ...]
    # YAML line (1-based, in `yaml`) -> the CSV line of the row and the column it came from.
    origins: Mapping[int, tuple[int, Column | None]]

    def locate(self, error: CampaignError, yaml_line: int | None) -> CampaignError:
        """`error`, found at `yaml_line` of the YAML, as the same error in the CSV file."""
        csv_line, column = self.origin(yaml_line, error.field)
        if csv_line is None:
            return error
        return CampaignError(
            error.message,
            path=self.source,
            line=csv_line,
            recipient=error.recipient,
            field=column.label if column is not None else error.field,
            hint=error.hint,
        )

    def origin(self, yaml_line: int | None, key: str | None) -> tuple[int | None, Column | None]:
        """The CSV line of the row written at `yaml_line`, and the column of `key` (or the
        line's own column when no column holds `key`, as for a derived id)."""
        origin = self.origins.get(yaml_line) if yaml_line is not None else None
        if origin is None:
            return None, None
        csv_line, line_column = origin
        by_key = next((column for column in self.columns if column.key == key), None)
        return csv_line, by_key or line_column


def column_letter(position: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    position += 1
    while position:
        position, remainder = divmod(position - 1, 26)
        letters = string.ascii_uppercase[remainder] + letters
    return letters


def yaml_string(text: str) -> str:
    """`text` as a double-quoted YAML scalar that reads back exactly, whatever it holds.

    Printable text is written as it is (Cyrillic stays readable); quotes, backslashes,
    controls and the characters YAML folds or refuses are escaped.
    """
    out: list[str] = ['"']
    for char in text:
        code = ord(char)
        if char == '"' or char == "\\":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or code in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
            or 0xD800 <= code <= 0xDFFF
        ):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def yaml_key(key: str) -> str:
    """The key plain when YAML reads it back as the same text, quoted otherwise."""
    return key if _PLAIN_KEY.match(key) and key not in _YAML_WORDS else yaml_string(key)


def import_csv(path: Path, *, check_dns: bool = False) -> str:
    """The `recipients:` section for the rows of `path`, checked as `campaign check` would.

    Raises ValidationErrors naming the CSV file, line and column of every problem.
    """
    imported = read_recipients_csv(path)
    check_imported(imported, check_dns=check_dns)
    return imported.yaml


def read_recipients_csv(path: Path) -> ImportedRecipients:
    """Read and convert the spreadsheet; every bad row is reported, nothing half-converted."""
    text = _read_text(path)
    delimiter = _sniff(text, path)
    records = _records(text, delimiter, path)
    header_line, header = next(records, (1, []))
    errors: list[CampaignError] = []
    columns = _columns(header, header_line, path, errors)
    rows: list[_Row] = []
    if not errors:
        for line, cells in records:
            row = _row(cells, line, columns, path, errors)
            if row is not None:
                rows.append(row)
    if not errors:
        _check_given_ids(rows, columns, path, errors)
    if errors:
        raise ValidationErrors(errors[:MAX_REPORTED_ERRORS])
    if not rows:
        raise CampaignError(
            "the file has a header but no recipients",
            path=path,
            hint="add one row per recipient below the header",
        )
    ids = unique_slugs((row.given_id for row in rows), (row.name for row in rows))
    return _emit(path, rows, ids, columns)


def check_imported(
    imported: ImportedRecipients, *, check_dns: bool = False, folder: Path | None = None
) -> tuple[Notice, ...]:
    """Load the recipients as `campaign check` does, under a placeholder campaign section.

    `folder` is where the campaign file will live: recipients' attachments are found there.

    Problems and warnings come back named by the CSV line and column they came from.
    Returns the warnings (likely typos); raises ValidationErrors for the problems.
    """
    with tempfile.TemporaryDirectory(prefix="campaign-import-") as scratch:
        checked = Path(scratch) / "recipients.yaml"
        checked.write_text(_CHECK_HEADER + imported.yaml, encoding="utf-8")
        try:
            source = load_campaign(
                Options(checked, check_dns=check_dns, attachments_folder=folder or Path.cwd())
            )
        except ValidationErrors as err:
            raise ValidationErrors(
                [imported.locate(problem, _yaml_line(problem.line)) for problem in err.errors]
            ) from None
        except CampaignError as err:  # not valid YAML: a bug of the writer, said where
            raise imported.locate(err, _yaml_line(err.line)) from None
    notices: list[Notice] = []
    for notice in source.notices:
        csv_line, column = imported.origin(_yaml_line(notice.line), notice.field)
        if csv_line is None:
            notices.append(notice)
            continue
        field = column.label if column is not None else notice.field
        notices.append(Notice(notice.message, notice.recipient, field, csv_line))
    return tuple(notices)


def _yaml_line(checked_line: int | None) -> int | None:
    """A line of the checked file as the line of the imported YAML."""
    return checked_line - _CHECK_HEADER_LINES if checked_line else None


# Reading


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise CampaignError(
                f"the file is {size / 2**20:.0f} MiB, far larger than any list of recipients"
                f" (the limit is {MAX_CSV_BYTES // 2**20} MiB); is it the right file?",
                path=path,
            )
        with open(path, "rb") as handle:
            data = handle.read(MAX_CSV_BYTES + 1)
    except FileNotFoundError:
        raise CampaignError("file not found", path=path) from None
    except IsADirectoryError:
        raise CampaignError("a folder, not a CSV file", path=path) from None
    except OSError as err:
        raise CampaignError(f"cannot read the file: {err.strerror}", path=path) from None
    try:
        return data.decode("utf-8-sig")  # a byte order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as err:
        raise CampaignError(
            "the file is not UTF-8 text",
            path=path,
            line=data[: err.start].count(b"\n") + 1,
            hint="save it from the spreadsheet as 'CSV UTF-8' (Excel) or with the"
            " character set UTF-8 (LibreOffice)",
        ) from None


def _records(text: str, delimiter: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on; quoted line breaks count as lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise CampaignError(
                f"the CSV cannot be read here: {err}",
                path=path,
                line=line,
                hint="a quoted cell must end with a quote followed by the separator;"
                " write a quote inside a cell as two quotes",
            ) from None
        yield line, cells


def _sniff(text: str, path: Path) -> str:
    """The separator that gives a header with a name column and rows of its width.

    csv.Sniffer guesses from character counts, and a semicolon file whose cells hold
    commas (or the reverse) fools it: each candidate is parsed instead, and scored.
    """
    best: tuple[tuple[int, ...], str, list[str]] | None = None
    for delimiter in DELIMITERS:
        sample = _sample(text, delimiter)
        if not sample:
            continue
        header = [snake_key(cell) for cell in sample[0]]
        widths = [len(row) for row in sample[1:] if any(cell.strip() for cell in row)]
        score = (
            int("name" in header),
            int(any(key in EMAIL_KEYS or key in FALLBACK_EMAIL_KEYS for key in header)),
            sum(width == len(header) for width in widths),
            len(header),
        )
        if best is None or score > best[0]:
            best = (score, delimiter, sample[0])
    if not text.strip():
        raise CampaignError("the file is empty", path=path, hint="export the sheet again")
    if best is None:
        return DELIMITERS[0]  # no separator reads the header: reading says where it fails
    best_score, delimiter, header = best
    if not best_score[0]:
        shown = ", ".join(repr(cell) for cell in header[:10]) or "nothing"
        raise CampaignError(
            f"the header row has no 'name' column (it reads {shown})",
            path=path,
            line=1,
            hint="the first row names the columns: name, emails, optionally id, and any"
            " others you want as template data",
        )
    return delimiter


def _sample(text: str, delimiter: str, limit: int = 200) -> list[list[str]]:
    """The first records as `delimiter` splits them, up to the first that it cannot read."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    sample: list[list[str]] = []
    try:
        for cells in itertools.islice(reader, limit):
            sample.append(cells)
    except csv.Error:
        pass  # the rows before it still tell how well this separator fits
    return sample


# Columns and rows


def _columns(
    header: Sequence[str], line: int, path: Path, errors: list[CampaignError]
) -> tuple[Column, ...]:
    def refuse(message: str, column: Column | str, hint: str | None = None) -> None:
        field = column.label if isinstance(column, Column) else column
        errors.append(CampaignError(message, path=path, line=line, field=field, hint=hint))

    columns: list[Column] = []
    for position, header_text in enumerate(header):
        if not header_text.strip():
            columns.append(Column(position, "", ""))  # kept only while its cells are empty
            continue
        column = Column(position, header_text.strip(), snake_key(header_text))
        reason = unsafe_reason(header_text)
        if reason:
            refuse(f"the column name {header_text!r} {reason}", f"column {column.letter}")
        elif not column.key:
            refuse(
                f"no key can be made from the column name {header_text!r}",
                column,
                "name the column with letters, e.g. title or postal_address",
            )
        elif _SECRET_KEY.search(column.key):
            refuse(
                "a column of passwords or secrets does not belong in a campaign file",
                column,
                "delete the column from the export; the SMTP password comes from the"
                " environment, the keyring or a prompt",
            )
        else:
            columns.append(column)
    named = [column for column in columns if column.key]
    email_columns = [column for column in named if column.key in EMAIL_KEYS]
    if not email_columns:
        email_columns = [column for column in named if column.key in FALLBACK_EMAIL_KEYS]
    for column in email_columns:
        columns[columns.index(column)] = Column(column.position, column.header, "emails")
    seen: dict[str, Column] = {}
    for column in columns:
        if not column.key:
            continue
        other = seen.setdefault(column.key, column)
        if other is not column:
            what = "address columns" if column.key == "emails" else "columns with the key"
            refuse(
                f"two {what} '{column.key}': {other.label} and {column.label}",
                column,
                "rename or remove one of them (several addresses go in one cell, separated by ';')"
                if column.key == "emails"
                else "rename one of them",
            )
    for required in ("name", "emails"):
        if required not in seen and not errors:
            refuse(
                f"the header has no '{required}' column",
                "header",
                "name the column 'emails' (or email, e-mail)" if required == "emails" else None,
            )
    return tuple(columns)


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    given_id: str | None
    name: str
    values: tuple[tuple[Column, str | list[str]], ...]  # in column order, id and name included


def _cell_error(
    message: str, path: Path, line: int, column: Column, hint: str | None = None
) -> CampaignError:
    return CampaignError(message, path=path, line=line, field=column.label, hint=hint)


def _row(
    cells: list[str],
    line: int,
    columns: tuple[Column, ...],
    path: Path,
    errors: list[CampaignError],
) -> _Row | None:
    if not any(cell.strip() for cell in cells):
        return None  # an empty row (or one of separators only)
    errors_before = len(errors)
    for position in range(len(columns), len(cells)):
        if cells[position].strip():
            errors.append(
                CampaignError(
                    f"the row has {len(cells)} cells but the header names {len(columns)}:"
                    f" {cells[position]!r} is in a column without a name",
                    path=path,
                    line=line,
                    field=f"column {column_letter(position)}",
                    hint="name the column in the header row, or check the quotes of the"
                    " cells before it",
                )
            )
            break
    values: list[tuple[Column, str | list[str]]] = []
    for column in columns:
        raw = cells[column.position] if column.position < len(cells) else ""
        value = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not column.key:
            if value:
                errors.append(
                    _cell_error(
                        f"{value!r} is in a column without a name",
                        path,
                        line,
                        column,
                        "name the column in the header row",
                    )
                )
            continue
        checked = _cell(value, column, path, line, errors)
        if checked is not None:
            values.append((column, checked))
    found = dict((column.key, value) for column, value in values)
    name_column = next(column for column in columns if column.key == "name")
    name = found.get("name")
    if not name and len(errors) == errors_before:
        errors.append(_cell_error("the name is empty", path, line, name_column))
    email_column = next(column for column in columns if column.key == "emails")
    if "emails" not in found and len(errors) == errors_before:
        errors.append(
            _cell_error("no address", path, line, email_column, "every recipient needs an address")
        )
    if len(errors) > errors_before:
        return None
    given_id = found.get("id")
    assert isinstance(name, str) and (given_id is None or isinstance(given_id, str))
    return _Row(line, given_id, name, tuple(values))


def _cell(
    value: str, column: Column, path: Path, line: int, errors: list[CampaignError]
) -> str | list[str] | None:
    """The cell's value for the YAML, or None when empty or refused (the error is added)."""
    if not value:
        return None
    if column.key in ("id", "name"):
        reason = unsafe_reason(value)
        if reason:
            errors.append(_cell_error(f"the value {reason}", path, line, column))
            return None
    else:
        found = _CONTROL.search(value)
        if found:
            errors.append(
                _cell_error(
                    f"the value {value!r} contains the control character"
                    f" U+{ord(found.group()):04X}",
                    path,
                    line,
                    column,
                    "delete it in the spreadsheet",
                )
            )
            return None
    if column.key == "id" and not _SLUG.match(value):
        errors.append(
            _cell_error(
                f"'{value}' is not a slug",
                path,
                line,
                column,
                "use lowercase letters, digits and hyphens, e.g. ministry-of-justice,"
                " or leave the cell empty to derive the id from the name",
            )
        )
        return None
    if column.key not in LIST_KEYS:
        return value
    items = [item.strip() for item in value.split(ADDRESS_SEPARATOR)]
    items = [item for item in items if item]
    if column.key == "emails" and not _valid_addresses(items, path, line, column, errors):
        return None
    return items or None


def _valid_addresses(
    items: list[str], path: Path, line: int, column: Column, errors: list[CampaignError]
) -> bool:
    valid = True
    for item in items:
        try:
            normalise(split_mailbox(item).address)
        except AddressError as err:
            hint = "separate several addresses with ';'" if "," in item else None
            errors.append(_cell_error(f"invalid address {item!r}: {err}", path, line, column, hint))
            valid = False
    return valid


def _check_given_ids(
    rows: list[_Row], columns: tuple[Column, ...], path: Path, errors: list[CampaignError]
) -> None:
    id_column = next((column for column in columns if column.key == "id"), None)
    if id_column is None:
        return
    first_line: dict[str, int] = {}
    for row in rows:
        if row.given_id is None:
            continue
        first = first_line.setdefault(row.given_id, row.line)
        if first != row.line:
            errors.append(
                _cell_error(
                    f"the id '{row.given_id}' is used twice (first on line {first})",
                    path,
                    row.line,
                    id_column,
                    "every recipient needs its own id; leave the cell empty to derive one",
                )
            )


# Writing


def _emit(
    path: Path, rows: list[_Row], ids: list[str], columns: tuple[Column, ...]
) -> ImportedRecipients:
    name_column = next(column for column in columns if column.key == "name")
    lines = ["recipients:"]
    origins: dict[int, tuple[int, Column | None]] = {}
    for row, recipient_id in zip(rows, ids, strict=True):
        origins[len(lines) + 1] = (row.line, _column_of(row, "id") or name_column)
        lines.append(f"  - id: {yaml_string(recipient_id)}")
        ordered = sorted(row.values, key=lambda item: _ORDER.get(item[0].key, len(_ORDER)))
        for column, value in ordered:
            if column.key == "id":
                continue
            origins[len(lines) + 1] = (row.line, column)
            if isinstance(value, list):
                shown = "[" + ", ".join(yaml_string(item) for item in value) + "]"
            else:
                shown = yaml_string(value)
            lines.append(f"    {yaml_key(column.key)}: {shown}")
    return ImportedRecipients(
        source=path,
        yaml="\n".join(lines) + "\n",
        count=len(rows),
        columns=tuple(column for column in columns if column.key),
        origins=origins,
    )


_ORDER = {"id": 0, "name": 1, "emails": 2}


def _column_of(row: _Row, key: str) -> Column | None:
    return next((column for column, _ in row.values if column.key == key), None)
