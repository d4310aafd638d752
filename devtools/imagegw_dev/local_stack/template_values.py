"""Values read from template.yaml the way the local stack resolves them: a `!Ref` to a parameter is the
parameter's default, `!GetAtt X.Arn` and `!Ref X` name the logical id X."""

from __future__ import annotations

from typing import Any


def ref_target(value: Any) -> str | None:
    """The logical id behind `!GetAtt X.Arn` / `!Ref X` in whichever form the loader produced."""
    if isinstance(value, dict):
        for key in ("Fn::GetAtt", "Ref"):
            if key in value:
                inner = value[key]
                if isinstance(inner, list):
                    return str(inner[0])
                return str(inner).split(".")[0]
    return None


def parameter_default(template: dict[str, Any], name: str, fallback: Any) -> Any:
    return (template.get("Parameters") or {}).get(name, {}).get("Default", fallback)


def template_number(value: Any, template: dict[str, Any], fallback: float) -> float:
    """A number from the template: a literal, a parameter's default, or a Mappings row keyed by one;
    `fallback` for anything else."""
    if isinstance(value, dict) and "Fn::FindInMap" in value:
        mapping, key, attribute = value["Fn::FindInMap"]
        key = template_number(key, template, float("nan"))
        row = (template.get("Mappings") or {}).get(mapping, {}).get(f"{key:g}", {})
        value = row.get(attribute, fallback)
    if isinstance(value, dict) and "Ref" in value:
        value = parameter_default(template, value["Ref"], fallback)
    try:
        return float(value)
    except (TypeError, ValueError):
        return fallback
