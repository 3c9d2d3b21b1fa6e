"""A model's JSON Schema refusal in the gateway's envelope: 400 invalid_request, `param` the
field, and a message that is the rule's own `x-rule` where a cross-field rule failed, else a
sentence generated from the keyword (allowed values, range, length...). Messages never echo
the value itself (a prompt or a Base64 image can be megabytes)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from service.platform.errors import InvalidRequest

_TYPES = {
    "integer": "an integer",
    "string": "a string",
    "boolean": "a boolean",
    "array": "a list",
    "object": "an object",
    "number": "a number",
    "null": "null",
}


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _values(options: Any) -> str:
    return ", ".join(str(o) for o in options) if isinstance(options, list) else str(options)


def _sentence(kind: Any) -> str:
    name, value = kind.name, getattr(kind, "value", None)
    if name == "required":
        return "field required"
    if name == "additionalProperties":
        return "unknown field, not accepted by this model"
    if name == "falseSchema":
        return "not allowed here"
    if name == "enum":
        return f"must be one of {_values(value)}"
    if name == "const":
        return f"must be {value}"
    if name == "type":
        types = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(_TYPES.get(str(t), str(t)) for t in types)
    if name == "minimum":
        return f"must be at least {value}"
    if name == "maximum":
        return f"must be at most {value}"
    if name == "exclusiveMinimum":
        return f"must be more than {value}"
    if name == "exclusiveMaximum":
        return f"must be less than {value}"
    if name == "minLength":
        return f"at least {value} character{'s' if value != 1 else ''}"
    if name == "maxLength":
        return f"at most {value} characters"
    if name == "minItems":
        return f"at least {value} item{'s' if value != 1 else ''}"
    if name == "maxItems":
        return f"at most {value} item{'s' if value != 1 else ''}"
    if name == "uniqueItems":
        return "items must be unique"
    if name == "pattern":
        return "has the wrong form"
    return f"fails the rule {name!r}"


def _rule(schema: dict[str, Any], schema_path: list[str | int]) -> dict[str, Any] | None:
    """The allOf item the failing keyword sits in (a cross-field rule), if any."""
    if len(schema_path) < 2 or schema_path[0] != "allOf":
        return None
    rules = schema.get("allOf") or []
    index = schema_path[1]
    return rules[index] if isinstance(index, int) and index < len(rules) else None


def _rank(error: jsonschema_rs.ValidationError) -> int:
    """Which failure to report first: a field's own fault, then a missing field, then a
    cross-field rule (whose failure often follows from the field's own)."""
    path = list(error.schema_path)
    if path and path[0] == "allOf":
        return 2
    return 1 if error.kind.name == "required" else 0


def refusal(schema: dict[str, Any], errors: list[jsonschema_rs.ValidationError]) -> InvalidRequest:
    # Ties go to the rule, then the field, the schema lists first: the same answer whatever
    # order the caller wrote the body's keys in.
    order = {name: i for i, name in enumerate(schema.get("properties") or {})}

    def key(error: jsonschema_rs.ValidationError) -> tuple[int, int, int]:
        path, where = list(error.instance_path), list(error.schema_path)
        field = path[0] if path else (error.kind.value if error.kind.name == "required" else "")
        rule = where[1] if len(where) > 1 and where[0] == "allOf" else -1
        return _rank(error), rule if isinstance(rule, int) else -1, order.get(str(field), 999)

    error = min(errors, key=key)
    location: list[str | int] = list(error.instance_path)
    kind = error.kind
    if kind.name == "required":
        location.append(str(kind.value))
    elif kind.name == "additionalProperties":
        unexpected = kind.value if isinstance(kind.value, list) else [kind.value]
        location.append(str(sorted(unexpected)[0]))
    rule = _rule(schema, list(error.schema_path))
    if not location and rule is not None:
        location = _missing(schema, list(error.schema_path), rule)
    # `param` is the body's field; a fault deeper inside it is located in the message.
    param = str(location[0]) if location else "body"
    inside = _path(location)[len(param) :].lstrip(".")
    where = f" (at {param}{'' if inside.startswith('[') else '.'}{inside})" if inside else ""
    if rule is not None and isinstance(rule.get("x-rule"), str):
        return InvalidRequest(f"{param}: {rule['x-rule']}{where}", param=param)
    return InvalidRequest(f"{param}: {_sentence(kind)}{where}", param=param)


def _missing(
    schema: dict[str, Any], schema_path: list[str | int], rule: dict[str, Any]
) -> list[str | int]:
    """A rule that failed as a whole (an anyOf of requirements): the field it asks for
    first (the missing one), else the field that set it off."""
    node: Any = schema
    for step in schema_path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
            break
    if isinstance(node, list):
        for alternative in node:
            required = alternative.get("required") if isinstance(alternative, dict) else None
            if required:
                return [required[0]]
    trigger = (rule.get("if") or {}).get("required") or []
    return [trigger[0]] if trigger else []
