"""Request field types shared by several endpoints."""

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from contracts.domain.money import parse_amount

DestType = Literal["BANK", "WALLET"]

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


def _iso_8601_only(value: object) -> object:
    """Pydantic would also read `0.5` as seconds since 1970; the contract's times are ISO-8601."""
    if isinstance(value, str) and not _ISO_DATE_START.match(value):
        raise ValueError("must be an ISO-8601 date-time such as 2026-01-31T10:00:00Z")
    return value


TimestampIn = Annotated[datetime, BeforeValidator(_iso_8601_only)]

InstitutionCode = Annotated[str, Field(min_length=1, max_length=20)]
AccountNumberIn = Annotated[str, Field(min_length=1, max_length=40, examples=["03001234567"])]


class RequestModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, str_strip_whitespace=True
    )


class Page(BaseModel):
    page: int
    limit: int
    total: int
    totalPages: int
    hasMore: bool
