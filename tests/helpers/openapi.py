"""Validate response bodies against OpenAI's own OpenAPI description of the images endpoints.

The spec (tests/data/openai-images-openapi.json, OpenAPI 3.1) is turned into plain JSON Schema with a
tiny resolver: `$ref`s to components are inlined, OpenAPI's `nullable: true` becomes a null alternative,
and `x-*` / `discriminator` annotations are left for jsonschema to ignore.

Two options make the check useful for a gateway:
- `closed` (default): objects accept only the properties the spec declares, so nothing leaks into a
  response that OpenAI would not send (internal fields, upstream details).
- `open_enums`: property names whose `enum` is treated as open. The spec lists only the three standard
  sizes for `size`, while the SDK types it `Union[str, Literal[...]]` and gpt-image-2 answers custom
  `WxH` sizes: pass `open_enums=("size",)` for those.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

# A copy of OpenAI's images OpenAPI subset (version 2.3.0, 2026-08-21), kept in the repository so the
# tests need nothing outside the checkout.
SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "openai-images-openapi.json"
_COMPONENT = "#/components/schemas/"

# The contract's error body: {"error": {"message", "type", "param", "code"}} (the images spec has none).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


@functools.cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return data


def schema(name: str, *, closed: bool = True, open_enums: Iterable[str] = ()) -> dict[str, Any]:
    """The named component schema as self-contained JSON Schema (2020-12)."""
    components = spec()["components"]["schemas"]
    return _resolve(copy.deepcopy(components[name]), components, closed, frozenset(open_enums), ())


def validate(instance: Any, name: str, *, closed: bool = True, open_enums: Iterable[str] = ()) -> None:
    """Raise AssertionError naming every violation of the named component schema."""
    check(instance, schema(name, closed=closed, open_enums=open_enums), what=name)


def check(instance: Any, json_schema: dict[str, Any], *, what: str = "schema") -> None:
    validator = jsonschema.Draft202012Validator(json_schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]
        raise AssertionError(f"response does not conform to {what}:\n" + "\n".join(lines))


def _resolve(
    node: Any,
    components: dict[str, Any],
    closed: bool,
    open_enums: frozenset[str],
    seen: tuple[str, ...],
) -> Any:
    if isinstance(node, list):
        return [_resolve(item, components, closed, open_enums, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_COMPONENT):
        target = ref[len(_COMPONENT) :]
        if target in seen:
            raise ValueError(f"recursive schema: {' -> '.join((*seen, target))}")
        merged = {**copy.deepcopy(components[target]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, components, closed, open_enums, (*seen, target))
    out = {k: _resolve(v, components, closed, open_enums, seen) for k, v in node.items()}
    properties = out.get("properties")
    if isinstance(properties, dict):
        for prop in open_enums & properties.keys():
            properties[prop] = _open(properties[prop])
        if closed and "additionalProperties" not in out:
            out["additionalProperties"] = False
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _open(prop: Any) -> Any:
    """A property whose enum is open: any string also goes."""
    if not isinstance(prop, dict):
        return prop
    if "enum" in prop:
        return {k: v for k, v in prop.items() if k != "enum"}
    if "anyOf" in prop:
        return {**prop, "anyOf": [_open(p) for p in prop["anyOf"]]}
    return prop
