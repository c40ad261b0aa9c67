"""Rules for the free text merchants and operators give (names, references, titles)."""

import unicodedata


def has_control_characters(text: str) -> bool:
    """C0/C1 controls (a NUL, an escape sequence) and lone surrogates: never part of a name or a
    reference, and a surrogate cannot even be stored."""
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in text)


# Unicode's White_Space, which pydantic's `str_strip_whitespace` trims. `str.strip()` trims
# U+001C-U+001F too (the information separators: control characters, not spaces), and a value
# ending in one was accepted with it cut off where a `str` field's was refused.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def trimmed(text: str) -> str:
    """The text without the white space around it, as every text value is judged."""
    return text.strip(_WHITE_SPACE)
