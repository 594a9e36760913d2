"""JSON answers into the generated dataclasses (arcmatch_client/models.py), by their type hints: nested classes,
lists and optional fields. Fields the client does not know yet (a newer server) are left out, not refused."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

from arcmatch_client import models


@functools.cache
def _hints(cls) -> dict[str, object]:
    return typing.get_type_hints(cls, vars(models))


def parse(kind, value):
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        hints = _hints(kind)
        known = {f.name for f in dataclasses.fields(kind)}
        return kind(**{name: parse(hints[name], item) for name, item in value.items() if name in known})
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return parse(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(kind) or (object,)
        return [parse(item, v) for v in value]
    if kind is float and isinstance(value, int):
        return float(value)
    return value
