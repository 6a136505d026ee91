"""The Russian translation of the bundled letter renders for every bundled recipient."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from campaign_factory import BUNDLED_IDS, REPO, copy_bundled

from campaign.loading import Options, load_campaign
from campaign.models import CampaignFile
from campaign.render import LetterRenderer

RUSSIAN = REPO / "templates" / "letter.ru.txt.j2"
ENGLISH = REPO / "templates" / "letter.txt.j2"
MARKER = (
    "Неофициальный перевод. Оригинал письма составлен на английском языке;\n"
    "в случае расхождений преимущественную силу имеет английский текст.\n"
)


def russian_campaign(folder: Path) -> CampaignFile:
    """A copy of the bundled campaign whose template is letter.ru."""
    path = copy_bundled(folder)
    text = path.read_text(encoding="utf-8")
    assert text.count('  template: "letter"\n') == 1
    path.write_text(text.replace('  template: "letter"\n', '  template: "letter.ru"\n'))
    return load_campaign(Options(path))


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    source = russian_campaign(tmp_path_factory.mktemp("ru"))
    renderer = LetterRenderer(source.campaign, source.recipients)
    return {r.id: renderer.render(r).text for r in source.recipients}


def texts(value: Any) -> Iterator[str]:
    """Every string in the file's data, nested ones too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def test_the_loader_accepts_the_russian_template_name(tmp_path: Path) -> None:
    source = russian_campaign(tmp_path)
    assert source.campaign.template == "letter.ru"


def test_the_letter_renders_for_every_bundled_recipient(letters: dict[str, str]) -> None:
    assert tuple(letters) == BUNDLED_IDS
    assert all(len(text) > 5000 for text in letters.values())


def test_its_first_lines_mark_it_as_an_unofficial_translation(letters: dict[str, str]) -> None:
    for text in letters.values():
        assert text.startswith(MARKER)


def test_salutations_stay_as_the_file_writes_them(tmp_path: Path) -> None:
    source = russian_campaign(tmp_path)
    renderer = LetterRenderer(source.campaign, source.recipients)
    for recipient in source.recipients:
        text = renderer.render(recipient).text
        assert f"\n\n{recipient.data['salutation']}\n\n" in text


def test_no_english_is_left_but_the_data_from_the_file(tmp_path: Path) -> None:
    source = russian_campaign(tmp_path)
    renderer = LetterRenderer(source.campaign, source.recipients)
    data = set(texts(source.campaign.data))
    for recipient in source.recipients:
        data.update(texts(recipient.data))
        data.add(", ".join(recipient.data["emails"]))
    for recipient in source.recipients:
        text = " ".join(renderer.render(recipient).text.split())  # a wrapped title joined
        for value in sorted((" ".join(value.split()) for value in data), key=len, reverse=True):
            text = text.replace(value, " ")
        assert re.findall(r"[A-Za-z]{2,}", text) == [], recipient.id


def test_no_paragraph_of_the_english_letter_is_left(letters: dict[str, str]) -> None:
    english = ENGLISH.read_text(encoding="utf-8")
    paragraphs = [
        " ".join(block.split())
        for block in english.split("\n\n")
        if "{" not in block and "}" not in block and len(block) > 40
    ]
    assert len(paragraphs) == 11
    for text in letters.values():
        flat = " ".join(text.split())
        for paragraph in paragraphs:
            assert paragraph[:30] not in flat


def test_the_translation_uses_the_same_template_variables() -> None:
    def used(path: Path) -> set[str]:
        names = r"(?:campaign|recipient|recipients|addressee|cc|note|line|name)"
        return set(re.findall(rf"\b{names}\.\w+", path.read_text(encoding="utf-8")))

    assert used(RUSSIAN) == used(ENGLISH)


def test_both_footnote_markers_are_kept(letters: dict[str, str]) -> None:
    for text in letters.values():
        assert text.count("[1]") == 2 and text.count("[2]") == 2
