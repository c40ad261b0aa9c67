"""Request field types shared by several endpoints."""

import functools
import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from api_service.errors import NotFound
from contracts.db.engine import naive_utc
from contracts.domain.money import parse_amount
from contracts.domain.text import text_problem, trimmed

DestType = Literal["BANK", "WALLET"]


# A text query parameter, trimmed as a body's text field is before its length is judged: a
# payout created as `" pay-1"` is `pay-1`, and `merchantReference=%20pay-1` found nothing. (Its
# control and invisible characters are refused with every parameter's, in
# api_service/query_parameters.py.)
QueryText = Annotated[str, StringConstraints(strip_whitespace=True)]

AmountIn = Annotated[
    Decimal,
    BeforeValidator(parse_amount),
    WithJsonSchema(
        {
            "oneOf": [
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 10_000_000,
                    "multipleOf": 0.01,
                },
                {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"},
            ],
            "description": "PKR, at most 2 decimals, 0 < amount <= 10,000,000",
            "example": "1500.00",
        }
    ),
]

_ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


# A time whose offset's `+` a URL's query turned into a space (`+05:00`, sent unencoded).
_PLUS_SENT_AS_SPACE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)? \d{2}(?::?\d{2})?", re.ASCII
)


# A time whose offset is in hours alone (`+05`, as ISO-8601 allows), which pydantic refuses.
_HOURS_ONLY_OFFSET = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?[+-]\d{2}", re.ASCII
)


def _iso_8601_only(value: object) -> object:
    """Pydantic would also read `0.5` as seconds since 1970; the contract's times are ISO-8601
    (an offset in hours alone read as its hours and no minutes)."""
    if isinstance(value, str) and not _ISO_DATE_START.match(value):
        raise ValueError("must be an ISO-8601 date-time such as 2026-01-31T10:00:00Z")
    if isinstance(value, str) and _PLUS_SENT_AS_SPACE.fullmatch(value):
        raise ValueError(
            "has a space where its offset's + should be: a query string reads + as a space, "
            "so send it as %2B (2026-01-31T15:00:00%2B05:00)"
        )
    if isinstance(value, str) and _HOURS_ONLY_OFFSET.fullmatch(value):
        return f"{value}:00"
    return value


# An ISO-8601 time, as naive UTC (the database's DATETIME columns). Documented as the string it
# is: `format: date-time` (RFC 3339) refused a date alone, or a time without its offset, which
# the API takes.
TimestampIn = Annotated[
    datetime,
    BeforeValidator(_iso_8601_only),
    AfterValidator(naive_utc),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO-8601: a date-time (UTC when it has no offset) or a date alone",
            "examples": ["2026-01-31T10:00:00Z", "2026-01-31T15:00:00+05:00", "2026-01-31"],
        }
    ),
]

_ISO_UP_TO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?P<t>[Tt ])(?P<minute>\d{2}:\d{2})(?::(?P<second>\d{2}))?(?:[.,](?P<fraction>\d{1,6}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def _to_the_end_of_what_it_names(value: object) -> object:
    """The end of a range includes all of what it names, to the precision it is written in: a
    date alone is the whole day (UTC; read as its midnight, `createdFrom=D&createdTo=D` listed
    nothing of day D), `10:00:05Z` the whole second, `10:00:05.120Z` the whole millisecond
    (times are shown to the millisecond and stored to the microsecond: a `createdTo` of a
    payout's own `createdAt` left it out)."""
    found = _ISO_UP_TO.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        return value
    if found["minute"] is None:
        return f"{found['date']}T23:59:59.999999"
    second = found["second"] or "59"
    fraction = (found["fraction"] or "").ljust(6, "9")
    offset = found["offset"] or ""
    return f"{found['date']}{found['t']}{found['minute']}:{second}.{fraction}{offset}"


# The end of a range: all of the time, or the date, it names.
TimestampUpTo = Annotated[TimestampIn, BeforeValidator(_to_the_end_of_what_it_names)]

_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE
)


def _existing_id(value: str, what: str) -> str:
    """Our ids are UUIDs (stored lower-case): any other shape names nothing, so it is a 404
    before the database is asked (a 600-character id must never reach a column)."""
    if not _UUID.fullmatch(value):
        raise NotFound(f"{what} not found")
    return value.lower()


async def _payout_id(
    payout_id: Annotated[str, Path(description="The payout's id (a UUID)")],
) -> str:
    return _existing_id(payout_id, "Payout")


async def _delivery_id(
    delivery_id: Annotated[str, Path(description="The delivery's id (a UUID)")],
) -> str:
    return _existing_id(delivery_id, "Webhook delivery")


PayoutIdPath = Annotated[str, Depends(_payout_id)]
DeliveryIdPath = Annotated[str, Depends(_delivery_id)]

InstitutionCode = Annotated[str, Field(min_length=1, max_length=20)]
AccountNumberIn = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        examples=["03001234567", "PK36SCBL0000001123456702"],
        description="10-16 digits; for BANK also a Pakistani IBAN (mod-97 checked, its bank "
        "code bankCode's); for WALLET also a mobile 03XXXXXXXXX (+92 3XX... accepted, stored "
        "as 03...). Spaces, dashes and direction marks (U+200E, U+202A...) are ignored; digits "
        "are 0-9. Its last four digits choose the sandbox scenario.",
    ),
]


@functools.cache
def _defaulted_keys(model: type[BaseModel]) -> frozenset[str]:
    """The names and aliases of `model`'s fields whose default is not None."""
    return frozenset(
        key
        for name, field in model.model_fields.items()
        if not field.is_required() and field.get_default(call_default_factory=True) is not None
        for key in (name, field.alias or name)
    )


@functools.cache
def _renamed_fields(model: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """(name, alias) of `model`'s fields whose alias is another spelling (`wallet_code`,
    `walletCode`): a body may use either."""
    return tuple(
        (name, field.alias)
        for name, field in model.model_fields.items()
        if field.alias is not None and field.alias != name
    )


class _GivenTwice:
    """A field's value when the body gave it under both spellings: refused naming the field."""

    def __init__(self, name: str, alias: str) -> None:
        self.problem = f"is given twice, as {alias} and {name}"


# What a property says about itself, as opposed to its type.
_DESCRIBING = {"title", "description", "default", "examples"}


def _document_null_as_left_out(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """In the OpenAPI document, each optional field with a default also takes null."""
    properties: dict[str, Any] = schema.get("properties", {})
    for key in _defaulted_keys(model) & properties.keys():
        described = {k: v for k, v in properties[key].items() if k in _DESCRIBING}
        typed = {k: v for k, v in properties[key].items() if k not in _DESCRIBING}
        properties[key] = described | {"anyOf": [typed, {"type": "null"}]}


# Far above any count here: checked before int(), which takes seconds of CPU (the event loop's)
# for a number such as 1e1000000 that the body parser hands over as Decimal("1E+1000000").
_COUNT_MAGNITUDE = Decimal(10**18)


def _json_whole_number(value: object) -> object:
    """A JSON number without a fraction (the body parser reads numbers as Decimal); `false` and
    `"5"` are no counts."""
    if isinstance(value, Decimal) and value.copy_abs() >= _COUNT_MAGNITUDE:
        raise ValueError("is out of range")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("must be a whole number")


# A count, a JSON number without a fraction: `Annotated[int, Field(ge=.., le=..), WHOLE_NUMBER]`.
# Its bounds go before the validator: after it, pydantic copied `ge`/`le` into the OpenAPI
# document as they are, which JSON Schema does not know (clients read no bounds, and the API
# refused what the document allowed).
WHOLE_NUMBER = BeforeValidator(_json_whole_number)


def _composed(value: Any) -> Any:
    """Free text composed (NFC), as most keyboards write it, unless that makes it longer (NFC
    splits a few letters, U+0958 DEVANAGARI LETTER QA among them: a title of 100 was then over
    its limit)."""
    if not isinstance(value, str):
        return value
    composed = unicodedata.normalize("NFC", value)
    return composed if len(composed) <= len(value) else value


# What people write (a name, a purpose, a reason), stored and counted composed: a name whose
# madda or accent came as a mark after its letter (macOS, some Urdu input methods) was stored in
# other bytes than the same name typed elsewhere, and 100 letters of it counted as 125 (text
# review). Identifiers, references and URLs are kept as sent: their bytes are what they name.
HumanText = Annotated[str, BeforeValidator(_composed)]


class RequestModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
        json_schema_extra=_document_null_as_left_out,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_means_left_out(cls, data: Any) -> Any:
        """An optional field sent as null takes its default, as if it were left out (many
        clients serialize a field they do not set as null): `accountTitle: null` is "Account
        Holder", not a 400. A required field stays null, and fails naming itself."""
        if not isinstance(data, dict):
            return data
        defaulted = _defaulted_keys(cls)
        return {
            key: value for key, value in data.items() if value is not None or key not in defaulted
        }

    @model_validator(mode="before")
    @classmethod
    def _each_field_once(cls, data: Any) -> Any:
        """A field under both spellings (`"walletCode":"JAZZCASH","wallet_code":"EASYPAISA"`)
        is refused, as a key given twice is (request_body): one of them silently won."""
        if not isinstance(data, dict):
            return data
        twice = [
            (name, alias) for name, alias in _renamed_fields(cls) if {name, alias} <= data.keys()
        ]
        if not twice:
            return data
        marked = {key: value for key, value in data.items() if key not in {n for n, _ in twice}}
        return marked | {alias: _GivenTwice(name, alias) for name, alias in twice}

    @field_validator("*", mode="before")
    @classmethod
    def _not_given_twice_and_trimmed(cls, value: Any) -> Any:
        """Spaces around a text value are trimmed before it is judged, whatever the field's
        type: `str_strip_whitespace` trims only `str` fields, and `" WALLET "` was a 400 for
        `destType` (a Literal) while `" jazzcash "` was the `walletCode` JAZZCASH."""
        if isinstance(value, _GivenTwice):
            raise ValueError(value.problem)
        return trimmed(value) if isinstance(value, str) else value

    @field_validator("*", mode="after")
    @classmethod
    def _no_hidden_characters(cls, value: Any) -> Any:
        problem = text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise ValueError(problem)
        return value


class SettingRequest(RequestModel):
    """A body of the sandbox's own controls (faults, webhook chaos, the clock): a field it does
    not know is a 400 naming it. Ignored, a typo (`failFirstAttemps`) saved the setting with that
    field off and answered 200. (The payout bodies of the original mock's clients ignore extra
    fields, as the mock did.)"""

    model_config = ConfigDict(extra="forbid")
