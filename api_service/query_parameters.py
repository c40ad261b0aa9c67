"""A query parameter the route does not take, one given twice, or one with a control character
in it, is refused naming it, as such a body field is: a misspelled filter (`GET
/payouts?Status=FAILED`) was ignored and the answer listed every payout,
`status=PENDING&status=FAILED` kept the last, and `merchantReference=pay%00-1` matched nothing.

Judged once the API key is (by get_current_merchant): an unauthenticated caller gets its 401,
and the probes that take no key (`/health`, `/ready`, the PSP's callback) are left alone, as a
monitor's cache-buster (`/health?_=1733...`) must not make the service look dead."""

import re
import types
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api_service.errors import ValidationFailed
from contracts.domain.text import text_problem, trimmed

_DIGITS = re.compile(r"[0-9]+")


def refuse_unexpected_query(request: Request) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    whole_numbers = _query_whole_numbers(route.dependant)
    given: set[str] = set()
    for name, value in request.query_params.multi_items():
        if not name:  # `?=5`: its detail named the empty string and read " is not a query..."
            raise ValidationFailed.on("query", "has a parameter with no name")
        if name not in whole_numbers:
            raise ValidationFailed.on(name, "is not a query parameter of this request")
        if name in given:  # no parameter of the API takes a list
            raise ValidationFailed.on(name, "is given more than once")
        problem = text_problem(trimmed(value))  # trimmed first, as a body's text field
        if problem is not None:
            raise ValidationFailed.on(name, problem)
        # Untrimmed: Python's int() grammar (pydantic's lax mode) took `limit=5_0` as 50, and
        # `1.0`, `+5` and ` 5`.
        if whole_numbers[name] and not _DIGITS.fullmatch(value):
            raise ValidationFailed.on(name, "must be a whole number in digits (0-9)")
        given.add(name)


def _query_whole_numbers(dependant: Dependant) -> dict[str, bool]:
    """Each query parameter the route takes: whether it is a whole number."""
    names = {
        parameter.alias: _is_int(parameter.field_info.annotation)
        for parameter in dependant.query_params
    }
    for dependency in dependant.dependencies:
        names |= _query_whole_numbers(dependency)
    return names


def _is_int(annotation: Any) -> bool:
    """int, or int | None."""
    if get_origin(annotation) in (Union, types.UnionType):
        return int in get_args(annotation)
    return annotation is int
