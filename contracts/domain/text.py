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


# Format characters (Unicode's Cf) are invisible, and most change how the text around them
# displays or compares: U+202E RIGHT-TO-LEFT OVERRIDE shows the rest of an account title
# backwards ("Trojan Source"), U+200B ZERO WIDTH SPACE or U+00AD SOFT HYPHEN makes two titles that
# look alike differ. A line or paragraph separator breaks a one-line value. Kept: what writing
# needs, and what text copied from a right-to-left screen (WhatsApp, Word, Android) carries.
_INVISIBLE_CATEGORIES = ("Cf", "Zl", "Zp")
# Unicode's prepended concatenation marks: visible signs drawn around the digits after them
# (U+0600 ARABIC NUMBER SIGN, U+06DD ARABIC END OF AYAH), though formatting characters (Cf).
_VISIBLE_FORMATTING = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)
_NEEDED_BY_WRITING = _VISIBLE_FORMATTING | frozenset(
    "\u200c\u200d"  # zero width non-joiner and joiner (Urdu, Persian; emoji sequences)
    "\u200e\u200f\u061c"  # left-to-right, right-to-left and Arabic letter marks
    "\u202a\u202b\u202c\u2066\u2067\u2068\u2069"  # embeddings and isolates, and their ends
)
_BLACK_FLAG = "\U0001f3f4"  # the emoji tag sequences of England's, Scotland's and Wales's flags
_TAGS = range(0xE0020, 0xE0080)  # ... spell the region after it in tag characters


# Each embedding or isolate must be closed within the value: one left open governs how the text
# after the value reads wherever the value has no box of its own (the rest of a webhook body's
# JSON line, a request log, a merchant's CSV), as U+202E would.
_OPENS_EMBEDDING = frozenset("\u202a\u202b")
_CLOSES_EMBEDDING = "\u202c"
_OPENS_ISOLATE = frozenset("\u2066\u2067\u2068")
_CLOSES_ISOLATE = "\u2069"


def unclosed_direction(text: str) -> str | None:
    """The first embedding or isolate the text opens and never closes, named; None when there
    is none. An isolate's end also closes the embeddings opened within it (Unicode's bidi
    algorithm)."""
    opened: list[str] = []
    for char in text:
        if char in _OPENS_EMBEDDING or char in _OPENS_ISOLATE:
            opened.append(char)
        elif char == _CLOSES_EMBEDDING and opened and opened[-1] in _OPENS_EMBEDDING:
            opened.pop()
        elif char == _CLOSES_ISOLATE and any(open_ in _OPENS_ISOLATE for open_ in opened):
            while opened.pop() not in _OPENS_ISOLATE:
                pass
    return f"U+{ord(opened[0]):04X} {unicodedata.name(opened[0])}" if opened else None


def invisible_character(text: str) -> str | None:
    """The first invisible formatting character in the text that nothing written needs, named
    (`U+202E RIGHT-TO-LEFT OVERRIDE`); None when there is none."""
    in_flag = False
    for char in text:
        tag = ord(char) in _TAGS
        in_flag = (in_flag and tag) or char == _BLACK_FLAG
        if (
            unicodedata.category(char) in _INVISIBLE_CATEGORIES
            and char not in _NEEDED_BY_WRITING
            and not (tag and in_flag)
        ):
            return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
    return None


# What draws nothing on its own: marks and formatting (those writing needs included), separators,
# a combining accent with no letter under it, unassigned code points (Unicode reserves some as
# ignorable, which renderers show as nothing: U+2065, U+FFF0-U+FFF8, U+E0080...), and the letters
# and symbols that are blanks.
_DRAWS_NOTHING = ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me", "Cn")
_BLANK_LETTERS = frozenset(
    "\u115f\u1160\u3164\uffa0"  # the Hangul fillers
    "\u2800"  # BRAILLE PATTERN BLANK
)


def shows_something(text: str) -> bool:
    """Whether the text draws anything: a title made of a right-to-left mark, a joiner or a
    Hangul filler is as blank on a screen as one of spaces."""
    return any(
        (unicodedata.category(char) not in _DRAWS_NOTHING and char not in _BLANK_LETTERS)
        or char in _VISIBLE_FORMATTING
        for char in text
    )


def text_problem(text: str) -> str | None:
    """Why a text value is refused (control or invisible formatting characters, or nothing to
    see in it), if it is. An empty text is judged by its field."""
    if has_control_characters(text):
        return "must not contain control characters"
    invisible = invisible_character(text)
    if invisible is not None:
        return f"must not contain {invisible}, an invisible character that changes how text reads"
    unclosed = unclosed_direction(text)
    if unclosed is not None:
        return f"must close the {unclosed} it opens (it changes how the text after it reads)"
    if text and not shows_something(text):
        return "must contain a visible character"
    return None


def on_one_line(text: str) -> str:
    """The text as a terminal shows it, on one line: what would break the line or drive the
    terminal (a newline, an escape sequence's ESC, a C1 control, a line separator, an override
    such as U+202E) written as Python writes it in a string (`\\n`, `\\x1b`, `\\u202e`). What
    writing needs stays: a ZWNJ in an Urdu name, the ZWJ of an emoji, a no-break space (diff
    review). For lines printed from what others sent: a webhook body, a path, a log line's
    fields."""
    if text.isprintable():
        return text
    return "".join(repr(char)[1:-1] if _acted_on(char) else char for char in text)


def _acted_on(char: str) -> bool:
    category = unicodedata.category(char)
    return category in ("Cc", "Cs", "Zl", "Zp") or (
        category == "Cf" and char not in _NEEDED_BY_WRITING
    )
