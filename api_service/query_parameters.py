"""A query parameter the route does not take, one given twice, or one with a control character
in it, is refused naming it, as such a body field is: a misspelled filter (`GET
/payouts?Status=FAILED`) was ignored and the answer listed every payout,
`status=PENDING&status=FAILED` kept the last, and `merchantReference=pay%00-1` matched nothing.

Judged once the API key is (by get_current_merchant): an unauthenticated caller gets its 401,
and the probes that take no key (`/health`, `/ready`, the PSP's callback) are left alone, as a
monitor's cache-buster (`/health?_=1733...`) must not make the service look dead."""

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api_service.errors import ValidationFailed
from contracts.domain.text import text_problem, trimmed


def refuse_unexpected_query(request: Request) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    accepted = _query_names(route.dependant)
    given: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name not in accepted:
            raise ValidationFailed.on(name, "is not a query parameter of this request")
        if name in given:  # no parameter of the API takes a list
            raise ValidationFailed.on(name, "is given more than once")
        problem = text_problem(trimmed(value))  # trimmed first, as a body's text field
        if problem is not None:
            raise ValidationFailed.on(name, problem)
        given.add(name)


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)
