"""contracts.logging.redact skips each pattern where a string check rules a match out: whatever
the text, it masks exactly what running every pattern would."""

from hypothesis import given
from hypothesis import strategies as st

from contracts.logging import _MASKS, redact

# Letters IGNORECASE matches as ASCII ones (the long s, the dotless i, the Kelvin sign), and
# digits of other scripts, which \d matches: the checks must not rule them out.
LOOKALIKES = {"s": "\u017f", "i": "\u0131", "k": "\u212a"}
ASCII_DIGITS = "0123456789"
DIGITS = ASCII_DIGITS + "٣٤"


def spelled(word: str) -> st.SearchStrategy[str]:
    """`word` in any case, a letter sometimes swapped for its look-alike."""
    return st.tuples(
        *(st.sampled_from([c.lower(), c.upper(), LOOKALIKES.get(c.lower(), c)]) for c in word)
    ).map("".join)


def digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(ASCII_DIGITS, min_size=low, max_size=high) | st.text(
        DIGITS, min_size=low, max_size=high
    )


words = st.text("abcxyzABC-_+/'\" :=,@", max_size=8)
secret_fields = st.tuples(
    st.sampled_from(
        [
            "x-api-key",
            "api_key",
            "apikey",
            "psp-secret",
            "webhook_secret",
            "password",
            "passwd",
            "authorization",
        ]
    ).flatmap(spelled),
    st.sampled_from([":", "=", "': ", '", ', " = "]),
    st.sampled_from(["", "'", "b'", "Bearer ", "basic "]),
    words,
).map("".join)
ibans = st.tuples(
    spelled("pk"),
    digits(2, 2),
    st.sampled_from(["", " "]),
    st.text("SCBLscbl", min_size=4, max_size=4),
    *(st.tuples(st.sampled_from(["", " "]), digits(4, 4)).map("".join) for _ in range(4)),
).map("".join)
urls = st.tuples(
    st.sampled_from(["amqp", "mysql+asyncmy", "HTTP"]),
    st.just("://"),
    words,
    st.just(":"),
    words,
    st.sampled_from(["@", ""]),
    words,
).map("".join)
tokens = st.tuples(st.sampled_from(["mpk_test_", "mpk_", "whsec_", "MPK_"]), words).map("".join)
phrases = secret_fields | ibans | digits(8, 12) | urls | tokens | words | st.text(max_size=6)
texts = st.lists(phrases, max_size=6).map("".join)


def every_pattern(text: str) -> str:
    for pattern, replacement, _ in _MASKS:
        text = pattern.sub(replacement, text)
    return text


@given(phrases)
def test_redact_masks_in_a_phrase_what_every_pattern_would(text: str) -> None:
    assert redact(text) == every_pattern(text)


@given(texts)
def test_redact_masks_in_a_text_what_every_pattern_would(text: str) -> None:
    assert redact(text) == every_pattern(text)
