"""A request's query parameters and form fields, checked against the route's own: one it does not take is a 400
that names it, never ignored. A search sent `?threshold=0.99` in its query string (the route takes it as a form
field) was answered at the gallery's threshold as if nothing had been asked; a caller with a stricter need than
the default must hear that it was not met, not get the default in silence. JSON bodies refuse unknown fields
themselves (schemas.StrictBody)."""

from __future__ import annotations

from fastapi import Request, params

from common.errors import BadInput

FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _taken(route, where: str) -> set[str]:
    """The names a route takes in `where` ("query_params" or "body_params"), its dependencies' included; each
    route's set is worked out once."""
    cache = route.__dict__.setdefault("_arcmatch_taken", {})
    if where not in cache:
        cache[where] = _names(route.dependant, where)
    return cache[where]


def _names(dependant, where: str) -> set[str]:
    names = {param.alias for param in getattr(dependant, where)}
    for inner in dependant.dependencies:
        names |= _names(inner, where)
    return names


class NotItsMediaType(BadInput):
    """A body of another media type than the route's: a raw photo where it takes a form, a form where it takes
    JSON (answered before as a 422 about a missing field)."""

    http_status = 415
    kind = "unsupported media type"


def _forms(route) -> bool | None:
    """True where the route's body is a form (a photo upload), False where it is JSON, None where it has none."""
    if route.__dict__.get("_arcmatch_forms", "unset") == "unset":
        fields = _fields(route.dependant)
        route.__dict__["_arcmatch_forms"] = None if not fields else all(
            isinstance(field.field_info, params.Form) for field in fields)
    return route.__dict__["_arcmatch_forms"]


def _fields(dependant) -> list:
    return [*dependant.body_params, *(f for inner in dependant.dependencies for f in _fields(inner))]


async def known_parameters(request: Request) -> None:
    route = request.scope.get("route")
    if route is None:
        return
    sent = request.headers.get("content-type", "").split(";")[0].strip().lower()
    forms = _forms(route)
    if forms and sent and sent not in FORMS:  # no body at all is a missing field (422), said as such
        fields = ", ".join(sorted(_taken(route, "body_params")))
        raise NotItsMediaType(f"this route takes multipart/form-data (fields {fields}), not {sent}")
    if forms is False and sent in FORMS:
        raise NotItsMediaType(f"this route takes application/json, not {sent}")
    _refuse("query parameter", set(request.query_params) - _taken(route, "query_params"), route, "query_params",
            _taken(route, "body_params"))
    if request.headers.get("content-type", "").split(";")[0].strip() in FORMS:
        form = await request.form()  # parsed once: FastAPI has read it already for the route, and kept it
        _refuse("form field", set(form) - _taken(route, "body_params"), route, "body_params",
                _taken(route, "query_params"))


def _refuse(what: str, unknown: set[str], route, where: str, elsewhere: set[str]) -> None:
    if not unknown:
        return
    names = ", ".join(repr(n) for n in sorted(unknown))
    moved = sorted(unknown & elsewhere)
    hint = (f" ({', '.join(moved)} {'is a form field' if where == 'query_params' else 'is a query parameter'} "
            "here)") if moved else ""
    known = sorted(_taken(route, where))
    raise BadInput(f"unknown {what}{'s' if len(unknown) > 1 else ''} {names}{hint}; this route takes "
                   + (", ".join(known) if known else f"no {what}s"))
