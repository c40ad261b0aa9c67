"""A request body is read in the encoding JSON allows that its first bytes tell, strictly: one it
cannot decode is refused naming that encoding."""

import pytest

from api_service.errors import ValidationFailed
from api_service.request_body import parse_json

UTF_16_WITH_A_LONE_SURROGATE = (
    '\ufeff{"a":"'.encode("utf-16-le") + b"\x00\xd8" + '"}'.encode("utf-16-le")
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a":"\xff"}', "is not valid UTF-8 text"),
        (b'\xef\xbb\xbf{"a":"\xed\xa0\xbd\xed\xb8\x80"}', "is not valid UTF-8 text"),  # CESU-8
        # UTF-8 was never asked of it (diff review)
        (UTF_16_WITH_A_LONE_SURROGATE, "is not valid UTF-16-LE text"),
    ],
)
def test_a_body_its_encoding_cannot_read_is_refused_naming_it(body: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_json(body)

    assert refused.value.details == [{"field": "body", "message": message}]


def test_a_utf_16_body_reads_as_its_utf_8_twin() -> None:
    document = '{"accountTitle":"\u0639\u0644\u06cc \U0001f600"}'
    assert parse_json(document.encode("utf-16")) == parse_json(document.encode())
