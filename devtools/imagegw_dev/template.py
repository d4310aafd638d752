"""Reads `template.yaml` (AWS SAM / CloudFormation) into plain Python data.

Used by the template tests and by the local stack, which creates its moto resources from what the
template declares. Short-form intrinsics become their long form, as CloudFormation reads them:
`!Ref X` -> `{"Ref": "X"}`, `!GetAtt A.B` -> `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s` -> `{"Fn::Sub": s}`,
`!Condition C` -> `{"Condition": "C"}`, and any other `!Name v` -> `{"Fn::Name": v}`. Dates stay strings
(`AWSTemplateFormatVersion: 2010-09-09`). Nothing here runs in Lambda; PyYAML is a dev dependency and is
imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INTRINSIC_KEYS = frozenset(
    {
        "Ref",
        "Condition",
        "Fn::If",
        "Fn::Sub",
        "Fn::GetAtt",
        "Fn::FindInMap",
        "Fn::Join",
        "Fn::Select",
        "Fn::Split",
        "Fn::ImportValue",
        "Fn::Base64",
        "Fn::GetAZs",
        "Fn::Equals",
        "Fn::Not",
        "Fn::And",
        "Fn::Or",
    }
)


@cache
def _cfn_loader() -> type:
    """A SafeLoader subclass that accepts CloudFormation's short-form tags (built once, on first use)."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    # Like CloudFormation, keep 2010-09-09 a string instead of a datetime.date.
    CfnLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        if tag_suffix == "Ref":
            return {"Ref": value}
        if tag_suffix == "Condition":
            return {"Condition": value}
        if tag_suffix == "GetAtt" and isinstance(value, str):
            resource, _, attribute = value.partition(".")
            return {"Fn::GetAtt": [resource, attribute]}
        return {f"Fn::{tag_suffix}": value}

    CfnLoader.add_multi_constructor("!", construct_intrinsic)
    return CfnLoader


def loads_template(text: str) -> dict[str, Any]:
    """Parse template text (YAML or JSON) into a dict."""
    import yaml

    data = yaml.load(text, Loader=_cfn_loader())  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError("a CloudFormation template must be a mapping at the top level")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and parse a template file (YAML or JSON)."""
    return loads_template(Path(path).read_text(encoding="utf-8"))


def resources(template: Mapping[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    """The resources of one type, e.g. "AWS::DynamoDB::Table", as {logical id: Properties}."""
    found: dict[str, dict[str, Any]] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if isinstance(resource, Mapping) and resource.get("Type") == type_name:
            found[logical_id] = dict(resource.get("Properties") or {})
    return found


def function_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's Properties with `Globals: Function:` merged in the way SAM merges them.

    Maps merge key by key (the function's value wins), lists are the global items followed by the
    function's, and any other value (an intrinsic function too) of the function replaces the global one.
    """
    own = (template.get("Resources") or {})[logical_id].get("Properties") or {}
    global_props = (template.get("Globals") or {}).get("Function") or {}
    merged: dict[str, Any] = _merge(global_props, own)
    return merged


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in _INTRINSIC_KEYS


def _merge(base: Any, override: Any) -> Any:
    if _is_intrinsic(base) or _is_intrinsic(override):
        return override
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return [*base, *override]
    return override


NO_VALUE = object()  # AWS::NoValue: the property is left out


def evaluate(value: Any, template: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """The value of a template expression for the given parameter values: Ref, Fn::If, Fn::Sub (of
    parameters), Fn::Select, Fn::Split, Fn::Join, Fn::Equals, Fn::Not and Condition; others as they are."""
    if isinstance(value, list):
        return [evaluate(item, template, params) for item in value]
    if not _is_intrinsic(value):
        return value
    ((fn, arg),) = value.items()
    if fn == "Ref":
        return NO_VALUE if arg == "AWS::NoValue" else params.get(arg, arg)
    if fn in ("Condition", "Fn::If"):
        name = arg if fn == "Condition" else arg[0]
        condition = (template.get("Conditions") or {}).get(name)
        holds = condition is not None and bool(evaluate(condition, template, params))
        return holds if fn == "Condition" else evaluate(arg[1] if holds else arg[2], template, params)
    if fn == "Fn::Sub" and isinstance(arg, str):
        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: str(params.get(m[1], m[0])), arg)
    args = evaluate(arg, template, params)
    if fn == "Fn::Select":
        return args[1][int(args[0])]
    if fn == "Fn::Split":
        return str(args[1]).split(args[0])
    if fn == "Fn::Join":
        return str(args[0]).join(str(a) for a in args[1])
    if fn == "Fn::Equals":
        return args[0] == args[1]
    if fn == "Fn::Not":
        return not args[0]
    return value


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter's default, then the overrides."""
    values = {name: spec.get("Default") for name, spec in (template.get("Parameters") or {}).items()}
    return {**values, **overrides}
