"""The rules for free text (contracts.domain.text): what is refused, named as Unicode names it."""

import sys
import unicodedata

import pytest

from contracts.domain.text import invisible_character, text_problem

EVERY_CHARACTER = (chr(code) for code in range(sys.maxunicode + 1))
FORMAT_CHARACTERS = [char for char in EVERY_CHARACTER if unicodedata.category(char) == "Cf"]
KEPT = {
    *"\u200c\u200d\u200e\u200f\u061c",  # what Urdu needs: joiners and marks
    *"\u202a\u202b\u202c\u2066\u2067\u2068\u2069",  # what copied right-to-left text carries
    *"\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2",  # visible signs
    *"\U000110bd\U000110cd",
}
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


def test_every_format_character_but_those_writing_needs_is_refused() -> None:
    refused = {char for char in FORMAT_CHARACTERS if invisible_character(f"a{char}b")}
    assert refused == set(FORMAT_CHARACTERS) - KEPT
    assert len(refused) > 100  # the whole category, not a list of a few
    assert {"\u202d", "\u202e", "\u200b", "\u00ad"} <= refused  # overrides, invisible spaces


def test_tag_characters_pass_only_in_a_flag_emoji() -> None:
    """England's flag is U+1F3F4 and the region in tag characters, then the cancel tag: a
    purpose with it was refused as "invisible" (found by the review of the day's diff)."""
    assert text_problem(f"Eid bonus {ENGLAND}") is None
    assert invisible_character("a\U000e0067") == "U+E0067 TAG LATIN SMALL LETTER G"
    assert invisible_character(f"{ENGLAND} a\U000e0067") == "U+E0067 TAG LATIN SMALL LETTER G"


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
        "\u2068\u0639\u0644\u06cc\u2069 \u202a+92 300 1234567\u202c",  # pasted from a phone
        "\u0600\u0661\u0662",  # ARABIC NUMBER SIGN before digits
    ],
)
def test_names_in_any_writing_pass(text: str) -> None:
    assert text_problem(text) is None


def test_a_control_character_is_named_as_one_before_anything_invisible() -> None:
    assert text_problem("\u202eAli\x00") == "must not contain control characters"


@pytest.mark.parametrize(
    "text",
    [
        "\u200f",  # a right-to-left mark alone
        "\u200c \u200c",  # joiners around a space
        "\u2067\u2069",  # an empty isolate
        "\u3164",  # HANGUL FILLER, a letter that draws nothing
        "\u2800",  # BRAILLE PATTERN BLANK
        "\u0301",  # a combining accent with no letter under it
        # Unassigned, and reserved as ignorable: drawn as nothing (diff review)
        "\u2065",
        "\ufff0\ufff8",
        "\U000e0080",
    ],
)
def test_a_text_that_draws_nothing_is_refused_as_blank(text: str) -> None:
    """Each was stored as an account title and paid to: blank on every screen that shows it."""
    assert text_problem(text) == "must contain a visible character"


def test_an_empty_text_is_left_to_its_field() -> None:
    assert text_problem("") is None


def test_a_prepended_concatenation_mark_alone_shows_something() -> None:
    """A formatting character, yet a visible sign (U+06DD ARABIC END OF AYAH)."""
    assert text_problem("\u06dd") is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("\u202b\u0639\u0644\u06cc", "U+202B RIGHT-TO-LEFT EMBEDDING"),
        ("\u2067\u0639\u0644\u06cc", "U+2067 RIGHT-TO-LEFT ISOLATE"),
        ("\u0639\u0644\u06cc\u202a", "U+202A LEFT-TO-RIGHT EMBEDDING"),  # at the very end
        ("\u202b\u2067\u0639\u2069 Ali", "U+202B RIGHT-TO-LEFT EMBEDDING"),  # the isolate closed
    ],
)
def test_an_embedding_or_isolate_left_open_is_refused(text: str, named: str) -> None:
    """Left open, it governs how the text after the value reads wherever the value has no box of
    its own (the rest of a webhook body's JSON line, a request log, a merchant's CSV), as U+202E
    does, which is refused: each was accepted (text review)."""
    assert text_problem(text) == (
        f"must close the {named} it opens (it changes how the text after it reads)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "\u2067\u202b\u0639\u0644\u06cc\u2069",  # an isolate's end closes the embeddings in it
        "Ali\u202c Khan\u2069",  # an end with nothing open changes nothing
    ],
)
def test_closed_embeddings_and_stray_ends_pass(text: str) -> None:
    assert text_problem(text) is None
