"""Rules for the free text merchants and operators give (names, references, titles)."""

import unicodedata


def has_control_characters(text: str) -> bool:
    """C0/C1 controls (a NUL, an escape sequence) and lone surrogates: never part of a name or a
    reference, and a surrogate cannot even be stored."""
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in text)
