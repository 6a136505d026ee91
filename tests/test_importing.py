"""`campaign import`: a spreadsheet export becomes strict YAML the loader reads back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaign.errors import CampaignError, ValidationErrors
from campaign.importing import (
    check_imported,
    column_letter,
    import_csv,
    read_recipients_csv,
    yaml_string,
)
from campaign.loading import Options, load_campaign
from campaign.models import CampaignFile
from campaign.strictyaml import parse_yaml

CAMPAIGN_HEAD = """\
campaign:
  id: "imported-test"
  subject: "A letter for {{ recipient.name }}"
  from: "Test Sender <sender@example.org>"
"""

# BOM, semicolons, quoted commas (and a quoted semicolon list), an empty row, a
# multi-line cell, and a bad address on line 7.
MESSY_ROWS = [
    "Name;E-mail;Title;Postal Address",
    '"Ministry of Justice";kanc@example.org;"Minister of Justice, Kazakhstan";"Mangilik El, 8"',
    "",
    '"Zoë Ørsted";"zoe@example.net; office@example.net";"Ombudsman, Denmark";',
    ";;;",
    '"Министерство юстиции";minjust@example.com;"Министр";"ул. Мангилик Ел, 8"',
    '"Bad Address";bad@@example.org;"Nobody";',
    '"Ministry of Justice";press@example.org;"Press office, Justice";',
]


def write_csv(
    folder: Path, rows: list[str], *, bom: bool = False, name: str = "people.csv"
) -> Path:
    path = folder / name
    data = "\r\n".join(rows) + "\r\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def load_imported(folder: Path, yaml_text: str) -> CampaignFile:
    """The imported section under a campaign section, read by the project's loader."""
    path = folder / "recipients.yaml"
    path.write_text(CAMPAIGN_HEAD + yaml_text, encoding="utf-8")
    return load_campaign(Options(path))


def only_error(excinfo: pytest.ExceptionInfo[ValidationErrors]) -> CampaignError:
    errors = excinfo.value.errors
    assert len(errors) == 1, [str(error) for error in errors]
    return errors[0]


def messy_without_bad_row(folder: Path) -> Path:
    return write_csv(folder, [row for row in MESSY_ROWS if "bad@@" not in row], bom=True)


# The messy spreadsheet


def test_a_bad_address_on_line_7_is_refused_naming_the_file_line_and_column(
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path, MESSY_ROWS, bom=True)
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert (error.path, error.line, error.field) == (str(path), 7, "E-mail (column B)")
    assert "invalid address 'bad@@example.org'" in error.message
    assert f"{path}:7: field 'E-mail (column B)': invalid address" in str(excinfo.value)


def test_the_messy_spreadsheet_reads_back_as_the_same_recipients(tmp_path: Path) -> None:
    source = load_imported(tmp_path, import_csv(messy_without_bad_row(tmp_path)))
    assert [(r.id, r.name, r.addresses) for r in source.recipients] == [
        ("ministry-of-justice", "Ministry of Justice", ("kanc@example.org",)),
        ("zoe-orsted", "Zoë Ørsted", ("zoe@example.net", "office@example.net")),
        ("ministerstvo-iustitsii", "Министерство юстиции", ("minjust@example.com",)),
        ("ministry-of-justice-2", "Ministry of Justice", ("press@example.org",)),
    ]
    assert [dict(r.data) for r in source.recipients] == [
        {
            "id": "ministry-of-justice",
            "name": "Ministry of Justice",
            "emails": ["kanc@example.org"],
            "title": "Minister of Justice, Kazakhstan",
            "postal_address": "Mangilik El, 8",
        },
        {
            "id": "zoe-orsted",
            "name": "Zoë Ørsted",
            "emails": ["zoe@example.net", "office@example.net"],
            "title": "Ombudsman, Denmark",
        },
        {
            "id": "ministerstvo-iustitsii",
            "name": "Министерство юстиции",
            "emails": ["minjust@example.com"],
            "title": "Министр",
            "postal_address": "ул. Мангилик Ел, 8",
        },
        {
            "id": "ministry-of-justice-2",
            "name": "Ministry of Justice",
            "emails": ["press@example.org"],
            "title": "Press office, Justice",
        },
    ]


def test_the_yaml_is_double_quoted_with_one_line_address_lists(tmp_path: Path) -> None:
    text = import_csv(messy_without_bad_row(tmp_path))
    assert text.startswith('recipients:\n  - id: "ministry-of-justice"\n')
    assert '    emails: ["zoe@example.net", "office@example.net"]\n' in text
    assert '    name: "Министерство юстиции"\n' in text  # readable, not \u escapes


# Separators


def test_a_comma_file_with_semicolons_inside_quoted_cells_is_read_with_commas(
    tmp_path: Path,
) -> None:
    path = write_csv(
        tmp_path,
        [
            "name,emails,note",
            '"Doe; Jane","jane@example.org;j.doe@example.org","a; b; c"',
            '"Roe, John",john@example.net,plain',
        ],
    )
    source = load_imported(tmp_path, import_csv(path))
    assert [(r.name, r.addresses, r.data["note"]) for r in source.recipients] == [
        ("Doe; Jane", ("jane@example.org", "j.doe@example.org"), "a; b; c"),
        ("Roe, John", ("john@example.net",), "plain"),
    ]


def test_a_semicolon_file_whose_header_row_is_quoted_is_read_with_semicolons(
    tmp_path: Path,
) -> None:
    path = write_csv(
        tmp_path,
        [
            '"id";"name";"email"',
            '"";"Office, Main";"office@example.org"',
            '"x1";"Y, Z";"y@example.org"',
        ],
    )
    source = load_imported(tmp_path, import_csv(path))
    assert [(r.id, r.name) for r in source.recipients] == [
        ("office-main", "Office, Main"),
        ("x1", "Y, Z"),
    ]


def test_a_tab_separated_file_is_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name\temails\tcity", "Ana Example\tana@example.org\tLisbon, PT"])
    source = load_imported(tmp_path, import_csv(path))
    assert source.recipients[0].data["city"] == "Lisbon, PT"


# Line numbers


def test_a_line_number_counts_the_lines_of_a_quoted_multi_line_cell(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "name,emails,postal_address",
            'One,one@example.org,"Street 1\r\nTown\r\nCountry"',
            "Two,two@example.org,",
            "Three,three@@example.org,",
        ],
    )
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert only_error(excinfo).line == 6


def test_a_multi_line_cell_is_kept_with_its_line_breaks(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, ["name,emails,postal_address", 'One,one@example.org,"Street 1\r\nTown"']
    )
    source = load_imported(tmp_path, import_csv(path))
    assert source.recipients[0].data["postal_address"] == "Street 1\nTown"


def test_every_bad_row_is_reported_at_once_by_its_line(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "name,emails",
            "Good,good@example.org",
            ",nameless@example.org",
            "Broken,not-an-address",
            "Also good,also@example.org",
            "No address,",
        ],
    )
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert [(e.line, e.field) for e in excinfo.value.errors] == [
        (3, "name (column A)"),
        (4, "emails (column B)"),
        (6, "emails (column B)"),
    ]
    assert excinfo.value.errors[0].message == "the name is empty"


# Ids


def test_ids_are_derived_from_names_and_made_unique(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "id,name,emails",
            ",Ministry of Justice,a@example.org",
            ",Ministry of Justice,b@example.org",
            "ministry-of-justice-2,Someone Else,c@example.org",
            ",Ministry of Justice,d@example.org",
        ],
    )
    source = load_imported(tmp_path, import_csv(path))
    assert [r.id for r in source.recipients] == [
        "ministry-of-justice",
        "ministry-of-justice-3",  # -2 is the id the file gives a later row
        "ministry-of-justice-2",
        "ministry-of-justice-4",
    ]


def test_non_ascii_names_give_ascii_ids(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "name,emails",
            "Генеральная прокуратура,gp@example.org",
            "Қазақстан Республикасының Бас прокуратурасы,kz@example.org",
            "Łódź Straße Ærø,pl@example.org",
            "Υπουργείο Δικαιοσύνης,gr@example.org",
            "北京,cn@example.org",
            "東京,jp@example.org",
        ],
    )
    source = load_imported(tmp_path, import_csv(path))
    assert [r.id for r in source.recipients] == [
        "generalnaia-prokuratura",
        "qazaqstan-respublikasynyn-bas-prokuraturasy",
        "lodz-strasse-aero",
        "ypourgeio-dikaiosynis",
        "recipient",
        "recipient-2",
    ]


def test_a_very_long_name_gives_an_id_the_loader_accepts(tmp_path: Path) -> None:
    long_name = "Committee " * 20
    path = write_csv(
        tmp_path, ["name,emails", f"{long_name},a@example.org", f"{long_name},b@example.org"]
    )
    ids = [r.id for r in load_imported(tmp_path, import_csv(path)).recipients]
    assert [len(i) for i in ids] == [64, 64]
    assert ids[1] == ids[0][:62] + "-2"


def test_an_id_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, ["id,name,emails", "x,A,a@example.org", "y,B,b@example.org", "x,C,c@example.org"]
    )
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert (error.line, error.field) == (4, "id (column A)")
    assert "the id 'x' is used twice (first on line 2)" in error.message


def test_an_id_that_is_not_a_slug_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["id,name,emails", "Ministry Of Justice,A,a@example.org"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert "'Ministry Of Justice' is not a slug" in only_error(excinfo).message


# Columns


def test_headers_become_snake_case_keys(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        ["Name,Email,Post code,firstName,Должность,2nd line", "A,a@example.org,1010,Ann,Посол,x"],
    )
    data = dict(load_imported(tmp_path, import_csv(path)).recipients[0].data)
    assert data == {
        "id": "a",
        "name": "A",
        "emails": ["a@example.org"],
        "post_code": "1010",
        "first_name": "Ann",
        "dolzhnost": "Посол",
        "column_2nd_line": "x",
    }


def test_an_address_column_holds_the_emails_only_when_no_email_column_exists(
    tmp_path: Path,
) -> None:
    alone = write_csv(tmp_path, ["name,address", "A,a@example.org"], name="alone.csv")
    both = write_csv(
        tmp_path, ["name,address,e-mail", "A,Main Street 1,a@example.org"], name="both.csv"
    )
    assert load_imported(tmp_path, import_csv(alone)).recipients[0].addresses == ("a@example.org",)
    data = load_imported(tmp_path, import_csv(both)).recipients[0].data
    assert (data["address"], data["emails"]) == ("Main Street 1", ["a@example.org"])


def test_two_columns_with_the_same_key_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails,Post Code,post-code", "A,a@example.org,1,2"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert error.line == 1
    assert "'post_code': Post Code (column C) and post-code (column D)" in error.message


def test_two_address_columns_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,Email,E-mail", "A,a@example.org,b@example.org"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert "two address columns" in only_error(excinfo).message


@pytest.mark.parametrize("header", ["password", "SMTP Password", "Secret", "pass"])
def test_a_column_of_passwords_is_refused_without_showing_them(tmp_path: Path, header: str) -> None:
    path = write_csv(tmp_path, [f"name,emails,{header}", "A,a@example.org,hunter2-s3cr3t"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert "passwords or secrets" in error.message and error.line == 1
    assert "hunter2" not in str(excinfo.value)


def test_a_header_without_a_name_column_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["Full name,emails", "A,a@example.org"])
    with pytest.raises(CampaignError, match="the header row has no 'name' column"):
        import_csv(path)


def test_a_header_without_an_address_column_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,phone", "A,123"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert only_error(excinfo).message == "the header has no 'emails' column"


# Rows


def test_a_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails", "A,a@example.org", "B,b@example.org,extra"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert (error.line, error.field) == (3, "column C")
    assert "'extra' is in a column without a name" in error.message


def test_trailing_empty_cells_and_short_rows_are_accepted(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails,title,", "A,a@example.org,,,", "B,b@example.org"])
    source = load_imported(tmp_path, import_csv(path))
    assert [dict(r.data) for r in source.recipients] == [
        {"id": "a", "name": "A", "emails": ["a@example.org"]},
        {"id": "b", "name": "B", "emails": ["b@example.org"]},
    ]


@pytest.mark.parametrize(
    ("cell", "column"),
    [("A\x07B", "name (column A)"), ("Note\x1b[31m", "note (column C)")],
)
def test_a_cell_with_a_control_character_is_refused(tmp_path: Path, cell: str, column: str) -> None:
    row = f"{cell},a@example.org,x" if column.startswith("name") else f"A,a@example.org,{cell}"
    path = write_csv(tmp_path, ["name,emails,note", "Fine,f@example.org,x", row])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert (error.line, error.field) == (3, column)
    assert "\x1b" not in str(error) and "\x07" not in str(error)


def test_a_line_break_in_a_name_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails", '"Two\nLines",a@example.org'])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert "line break" in only_error(excinfo).message


def test_a_comma_between_addresses_gets_a_hint(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name;emails", "A;a@example.org, b@example.org"])
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    assert only_error(excinfo).hint == "separate several addresses with ';'"


def test_a_broken_quote_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails", "A,a@example.org", '"B"x,b@example.org'])
    with pytest.raises(CampaignError) as excinfo:
        import_csv(path)
    assert excinfo.value.line == 3
    assert excinfo.value.message.startswith("the CSV cannot be read here")


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,emails\nA,a@example.org\nZoë,z@example.org\n".encode("latin-1"))
    with pytest.raises(CampaignError) as excinfo:
        import_csv(path)
    assert (excinfo.value.line, excinfo.value.message) == (3, "the file is not UTF-8 text")


@pytest.mark.parametrize("rows", [["name,emails"], ["name,emails", "", ",", " , "]])
def test_a_file_without_recipients_is_refused(tmp_path: Path, rows: list[str]) -> None:
    with pytest.raises(CampaignError, match="no recipients"):
        import_csv(write_csv(tmp_path, rows))


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"\xef\xbb\xbf\r\n")
    with pytest.raises(CampaignError, match="the file is empty"):
        import_csv(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="file not found"):
        import_csv(tmp_path / "nowhere.csv")


# What YAML would misread, and the loader's own checks


def test_values_yaml_would_misread_come_back_as_the_text_written(tmp_path: Path) -> None:
    tricky = ["no", "010000", "2017-10-19", "yes", "~", "null", '"quoted"', "back\\slash", "#1"]
    header = "name,emails," + ",".join(f"c{i}" for i in range(len(tricky)))
    row = "A,a@example.org," + ",".join('"' + value.replace('"', '""') + '"' for value in tricky)
    data = (
        load_imported(tmp_path, import_csv(write_csv(tmp_path, [header, row]))).recipients[0].data
    )
    assert [data[f"c{i}"] for i in range(len(tricky))] == tricky


def test_keys_yaml_would_misread_come_back_as_the_header_written(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["name,emails,No,On,Null", "A,a@example.org,7,x,y"])
    data = load_imported(tmp_path, import_csv(path)).recipients[0].data
    assert (data["no"], data["on"], data["null"]) == ("7", "x", "y")


def test_an_address_under_two_recipients_is_refused_by_its_csv_line(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        ["name;E-mail", "A;shared@example.org", "B;b@example.org", "C;Shared@example.org"],
    )
    with pytest.raises(ValidationErrors) as excinfo:
        import_csv(path)
    error = only_error(excinfo)
    assert (error.path, error.line, error.field, error.recipient) == (
        str(path),
        4,
        "E-mail (column B)",
        "c",
    )
    assert "also under recipient 'a'" in error.message


def test_the_check_warns_about_a_likely_typo_by_its_csv_line(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "name,emails",
            "Prosecutor,gp@prokuror.example.org",
            "Prosecutor two,procuror@prokuror.example.org",
        ],
    )
    imported = read_recipients_csv(path)
    notices = check_imported(imported)
    assert [(n.line, n.field, n.recipient) for n in notices] == [
        (3, "emails (column B)", "prosecutor-two")
    ]
    assert "'procuror' looks like a misspelling" in notices[0].message


@given(st.text(max_size=40))
def test_yaml_string_reads_back_as_the_same_text(text: str) -> None:
    document = parse_yaml(f"key: {yaml_string(text)}\n", Path("t.yaml"))
    assert document["key"] == text


def test_column_letters_are_the_spreadsheets() -> None:
    assert [column_letter(n) for n in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"
    ]  # fmt: skip
