"""A query parameter the route does not take, or one given twice, is refused naming it, as an
unknown or repeated body field is: a misspelled filter (`GET /payouts?Status=FAILED`) was
ignored and the answer listed every payout, and `status=PENDING&status=FAILED` kept the last."""

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api_service.deps import SettingsDep, require_sandbox
from api_service.errors import ValidationFailed


async def refuse_unexpected_query(request: Request, settings: SettingsDep) -> None:
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    if not settings.sandbox_enabled and _sandbox_only(route):
        return  # a sandbox control answers 404 in production (require_sandbox), nothing else
    accepted = _query_names(route.dependant)
    given: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in accepted:
            raise ValidationFailed.on(name, "is not a query parameter of this request")
        if name in given:  # no parameter of the API takes a list
            raise ValidationFailed.on(name, "is given more than once")
        given.add(name)


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)


def _sandbox_only(route: APIRoute) -> bool:
    return any(depends.dependency is require_sandbox for depends in route.dependencies)
