"""Writes arcmatch_client/models.py from the API's OpenAPI document, so the client's result types are the
server's answers field for field; a test regenerates it and fails when the committed file differs.

    python -m arcmatch_client.generate      (needs the server's packages: it builds the app to read its document)
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path

OUT = Path(__file__).with_name("models.py")
LEFT_OUT = ("Body_", "HTTPValidationError", "ValidationError", "ErrorOut", "EmbeddingQuery", "IdentityRef")
HEADER = '''"""The API's answers as frozen dataclasses, generated from its OpenAPI document by
arcmatch_client/generate.py: do not edit by hand. Face ids are strings: an int64 is beyond JSON's safe integers."""

from __future__ import annotations

from dataclasses import dataclass, field
'''


def class_name(schema: str) -> str:
    return schema.removesuffix("Out") if schema != "Out" else schema


def type_of(prop: dict) -> str:
    if "$ref" in prop:
        return class_name(prop["$ref"].rsplit("/", 1)[1])
    if "anyOf" in prop:
        kinds = [type_of(p) for p in prop["anyOf"]]
        return " | ".join(dict.fromkeys(kinds))
    kind = prop.get("type")
    if kind == "array":
        return f"list[{type_of(prop.get('items', {}))}]" if prop.get("items") else "list"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None",
            "object": "dict"}.get(kind, "object")


def render(document: dict) -> str:
    schemas = document["components"]["schemas"]
    parts = [HEADER.rstrip("\n")]  # each class starts with its two blank lines
    for name in sorted(schemas):
        if name.startswith(LEFT_OUT) or name.endswith("In"):
            continue
        schema = schemas[name]
        lines = ["", "", "", "@dataclass(frozen=True, kw_only=True)", f"class {class_name(name)}:"]
        if schema.get("description"):
            lines += [f'    """{line}' if n == 0 else f"    {line}" for n, line in
                      enumerate(textwrap.wrap(schema["description"], 112))]
            lines[-1] += '"""'
            lines.append("")
        required = set(schema.get("required", []))
        for name_, prop in schema.get("properties", {}).items():
            if prop.get("description"):
                lines += [f"    # {line}" for line in textwrap.wrap(prop["description"], 112)]
            annotation = type_of(prop)
            default = "" if name_ in required else " = None" if "default" not in prop or prop["default"] is None \
                else f" = {_literal(prop['default'])}"
            lines.append(f"    {name_}: {annotation}{default}")
        parts.append("\n".join(lines))
    return "".join(parts) + "\n"


def _literal(value) -> str:
    if isinstance(value, (list, dict)):  # a mutable default is made anew for each instance
        kind = type(value).__name__
        return f"field(default_factory=lambda: {value!r})" if value else f"field(default_factory={kind})"
    return repr(value)


def document() -> dict:
    """The document of an app on a throwaway Lite file, with the suite's tiny model (no store is reached)."""
    from jobs.api.app import create_app
    from jobs.api.keys import new_key
    from jobs.settings import Settings

    model = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_model"
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(model=str(model), api_keys=new_key("generate", ["read"])[1],
                            milvus_uri=f"{scratch}/openapi.db", gallery="openapi")
        return create_app(settings).openapi()


if __name__ == "__main__":
    OUT.write_text(render(document()))
    print(f"wrote {OUT}", file=sys.stderr)
