"""Request field types shared by several endpoints."""

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
