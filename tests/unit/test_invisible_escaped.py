"""The dashboard's escape of invisible characters in bodies others wrote (rendering.py)."""

from api_service.dashboard.rendering import invisible_escaped


def test_invisible_characters_are_escaped_as_json_writes_them() -> None:
    """Beyond U+FFFF as a surrogate pair: `\\ue0067` (U+E0067 TAG LATIN SMALL LETTER G, of the
    flag emojis the API accepts) read as U+E006 and a 7 (diff review)."""
    assert invisible_escaped("\U000e0067") == "\\udb40\\udc67"
    assert (
        invisible_escaped("Ali\u202eKhan \u0639\u0644\u06cc\n")
        == "Ali\\u202eKhan \u0639\u0644\u06cc\n"
    )
