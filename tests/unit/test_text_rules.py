"""The rules for free text (contracts.domain.text): what is refused, named as Unicode names it."""

import sys
import unicodedata

import pytest

from contracts.domain.text import invisible_character, text_problem

EVERY_CHARACTER = (chr(code) for code in range(sys.maxunicode + 1))
FORMAT_CHARACTERS = [char for char in EVERY_CHARACTER if unicodedata.category(char) == "Cf"]
NEEDED_BY_URDU = {"\u200c", "\u200d", "\u200e", "\u200f", "\u061c"}


def test_every_format_character_but_those_urdu_needs_is_refused() -> None:
    refused = {char for char in FORMAT_CHARACTERS if invisible_character(f"a{char}b")}
    assert refused == set(FORMAT_CHARACTERS) - NEEDED_BY_URDU
    assert len(refused) > 150  # the whole category, not a list of a few


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Ali \u202enahK", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("Ali\u2028Khan", "U+2028 LINE SEPARATOR"),
        ("Ali\u2029Khan", "U+2029 PARAGRAPH SEPARATOR"),
        ("\ufeffAli", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ],
)
def test_the_first_invisible_character_is_named(text: str, named: str) -> None:
    assert invisible_character(text) == named
    assert (
        text_problem(text)
        == f"must not contain {named}, an invisible character that changes how text reads"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Ali Khan",
        "\u0645\u062d\u0645\u062f\u200c\u0639\u0644\u06cc\u200f",
        "Zo\u00eb",
        "\U0001f468\u200d\U0001f469",
    ],
)
def test_names_in_any_writing_pass(text: str) -> None:
    assert text_problem(text) is None


def test_a_control_character_is_named_as_one_before_anything_invisible() -> None:
    assert text_problem("\u202eAli\x00") == "must not contain control characters"
