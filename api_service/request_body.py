"""JSON request bodies, parsed by the endpoint itself rather than by FastAPI: `application/json`
(or `+json`) only, no key twice.

FastAPI would parse a declared body before running any dependency, so a malformed body got a
400 before the API key was even checked, and outside the idempotency boundary (not stored).
Parsed here, inside the operation, auth comes first and a 400 is stored like any other 4xx.
Every JSON number arrives as Decimal: no float rounding, no 4300-digit int limit.
"""

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from api_service.errors import UnsupportedMediaType, ValidationFailed

Model = TypeVar("Model", bound=BaseModel)


def nameable(key: str) -> str:
    """A key as an answer can name it: a lone surrogate (a JSON escape allows one, UTF-8 does
    not) as its `\\ud800` escape. Raw, it made the error itself unencodable: a 500, for a key
    given twice, or a number out of range under such a key (json review)."""
    return key.encode("utf-8", "backslashreplace").decode()


class RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = nameable(key)
        super().__init__(f"{self.key} given twice")


class NumberOutOfRange(ValueError):
    """A number whose exponent Decimal cannot hold (1e9999999999999999999)."""


def each_key_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads: two values for one key (which one is meant?) are
    refused rather than guessed."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise RepeatedKey(key)
        document[key] = value
    return document


class FlawedObject(dict[str, Any]):
    """An object of a lenient parse (parse_items_leniently) that gave `repeated` twice (the
    later value kept): its item is refused on that key, not the whole document."""

    def __init__(self, pairs: list[tuple[str, Any]], repeated: str) -> None:
        super().__init__(pairs)
        self.repeated = repeated


class OutOfRangeNumber:
    """A number of a lenient parse whose exponent Decimal cannot hold: its field is refused."""


def each_key_noted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` of a lenient parse: each_key_once's judgement, kept on the object."""
    try:
        return each_key_once(pairs)
    except RepeatedKey as repeated:
        return FlawedObject(pairs, repeated.key)


def given_twice(key: str) -> ValidationFailed:
    """The refusal of a key given twice (RepeatedKey.key: escaped as an answer can name it)."""
    return ValidationFailed.on(key, "appears more than once in the body")


def _decimal_or_out_of_range(text: str) -> Decimal | OutOfRangeNumber:
    try:
        return Decimal(text)
    except ArithmeticError:
        return OutOfRangeNumber()


class NotJsonConstant(ValueError):
    """NaN, Infinity or -Infinity: Python's, not JSON (RFC 8259), and json.loads read them
    unless told not to (`"note": NaN` in a payout body was a 201)."""

    def __init__(self, constant: str) -> None:
        super().__init__(f"{constant} is not JSON")
        self.constant = constant


def _not_json(constant: str) -> Any:
    """`parse_constant` of every decoder here."""
    raise NotJsonConstant(constant)


def _not_json_refusal(exc: NotJsonConstant) -> ValidationFailed:
    return ValidationFailed.on("body", f"holds {exc.constant}, which is not JSON")


# Built once: json.loads builds a decoder on every call that passes hooks.
_LENIENT_DECODER = json.JSONDecoder(
    parse_float=_decimal_or_out_of_range,
    parse_int=_decimal_or_out_of_range,
    parse_constant=_not_json,
    object_pairs_hook=each_key_noted,
)
_FINGERPRINT_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_not_json, object_pairs_hook=each_key_once
)


def json_document(raw: bytes) -> Any:
    """`json.loads(raw)` with every number with a fraction a Decimal (integers stay ints),
    refusing a key given twice (RepeatedKey): what a request's fingerprint reads. Any body it
    cannot read is a ValueError, so that its callers need catch nothing else."""
    text = _text_of(raw)
    try:
        return _FINGERPRINT_DECODER.decode(text)
    except ArithmeticError as exc:  # decimal.InvalidOperation: not a ValueError
        raise NumberOutOfRange("a number is out of range") from exc
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _text_of(raw: bytes) -> str:
    """The body's text, in the encoding JSON allows that its first bytes tell (UTF-8 unless
    UTF-16 or UTF-32). Strictly: json.loads's `surrogatepass` read an emoji's two surrogates
    encoded one by one (CESU-8, not UTF-8) as the emoji, so two bodies, one refused and one
    valid, had one fingerprint, and each was answered with the other's stored answer under one
    idempotency key (json review)."""
    return raw.decode(json.detect_encoding(raw))


def parse_json(raw: bytes) -> Any:
    """The decoded JSON document, or ValidationFailed naming the body, or the path of a key given
    twice or of a number out of range (`meta.a`: named `body`, or the bare key, a single create
    named less than a payroll's item with the same flaw)."""
    document = _lenient_document(raw)
    flaw = first_flaw(document)
    if flaw is not None:
        raise flaw
    return document


def _lenient_document(raw: bytes) -> Any:
    """The document as the lenient decoder reads it (its flaws kept for first_flaw), or
    ValidationFailed naming the body when it is no JSON at all."""
    try:
        text = _text_of(raw)
    except UnicodeDecodeError as exc:  # in the encoding its first bytes tell: UTF-16 too
        encoding = exc.encoding.upper().removesuffix("-SIG")
        raise ValidationFailed.on("body", f"is not valid {encoding} text") from exc
    try:
        return _LENIENT_DECODER.decode(text)
    except NotJsonConstant as exc:
        raise _not_json_refusal(exc) from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, nesting too deep
        raise ValidationFailed.on("body", "is not valid JSON") from exc


def is_json_media_type(content_type: str | None) -> bool:
    """application/json or any application/<something>+json, parameters ignored."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def require_json(request: Request, raw: bytes) -> None:
    """A body that says it is something else, or encoded (gzip: RFC 9110 §15.5.16), is not read
    as JSON; nor one that says two things, whichever comes first (an empty body says nothing)."""
    if not raw:
        return
    content_types = request.headers.getlist("content-type")
    if len(content_types) > 1:
        raise ValidationFailed.on("Content-Type", "is given more than once")
    codings = request.headers.getlist("content-encoding")
    if any(coding.strip().lower() not in ("", "identity") for coding in codings):
        raise UnsupportedMediaType(
            "Send the body as it is, with no Content-Encoding",
            headers={"Accept-Encoding": "identity"},
        )
    if not is_json_media_type(content_types[0] if content_types else None):
        raise UnsupportedMediaType


def parse_items_leniently(raw: bytes, *, items: str) -> Any:
    """A document whose list `items` holds items judged one by one (a payroll): an object that
    gives a key twice is a FlawedObject and a number out of range an OutOfRangeNumber, for its
    item to be refused on its own (first_flaw); such a flaw anywhere outside the items is a
    ValidationFailed, as parse_json's (the rest of the payroll was created)."""
    document = _lenient_document(raw)
    if isinstance(document, FlawedObject):
        raise given_twice(document.repeated)
    if isinstance(document, dict):
        outside = {k: v for k, v in document.items() if k != items or not isinstance(v, list)}
        flaw = first_flaw(outside)
        if flaw is not None:
            raise flaw
    return document


def first_flaw(value: Any) -> ValidationFailed | None:
    """The refusal of the first flaw of a lenient parse in `value` (document order, any depth):
    a key given twice or a number out of range, named by its path (`meta.tags.0`). A loop, not
    a recursion: the document may be nested as deep as the parser allows."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, member = pending.pop()
        if isinstance(member, OutOfRangeNumber):
            return ValidationFailed.on(path or "body", "holds a number out of range")
        if isinstance(member, FlawedObject):
            return given_twice(_member(path, member.repeated))
        if isinstance(member, dict):
            pending.extend((_member(path, key), item) for key, item in reversed(member.items()))
        elif isinstance(member, list):
            pending.extend(
                (_member(path, str(index)), member[index]) for index in reversed(range(len(member)))
            )
    return None


def _member(path: str, key: str) -> str:
    return f"{path}.{nameable(key)}" if path else nameable(key)


def validate_body(
    model: type[Model], raw: bytes, *, parse: Callable[[bytes], Any] | None = None
) -> Model:
    """`parse`: parse_json unless told (parse_items_leniently, for a payroll)."""
    try:
        return model.model_validate((parse or parse_json)(raw))
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(exc.errors()) from exc


async def read_body(
    request: Request, model: type[Model], *, parse: Callable[[bytes], Any] | None = None
) -> Model:
    raw = await request.body()
    require_json(request, raw)
    return validate_body(model, raw, parse=parse)


async def read_json(request: Request) -> Any:
    """The body's JSON document, for an endpoint that judges it itself (a payout's create)."""
    raw = await request.body()
    require_json(request, raw)
    return parse_json(raw)


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the required JSON body, since the endpoint reads the
    body itself. Sub-schemas are inlined: a `$defs` reference would not resolve in the document."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions)}},
        }
    }


def optional_body(model: type[BaseModel]) -> dict[str, Any]:
    """`documented_body`, for an endpoint that also takes no body at all."""
    documented = documented_body(model)
    documented["requestBody"]["required"] = False
    return documented


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node
