"""Validation errors as one line per problem: the key path, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    ValidationError,
)

from mlflow_xai.config.audit_config import AuditConfig


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `key.path must be <what is allowed>, got <value>`."""
    schema = AuditConfig.model_json_schema()
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not _is_union_branch(p)]
        path = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            valid = _valid_keys(schema, loc[:-1])
            where = f" in {parent}" if parent else ""
            lines.append(f"unknown key {loc[-1]!r}{where}; valid keys: {', '.join(valid)}")
        elif err["type"] == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {message}" if loc else message)
        else:
            allowed = _describe(schema, loc) or err["msg"].lower()
            lines.append(f"{path} must be {allowed}, got {_show(err.get('input'))}")
    # A union reports one error per branch; keep each distinct line once, in order.
    return "invalid config: " + "; ".join(dict.fromkeys(lines))


def _is_union_branch(part: Any) -> bool:
    # pydantic adds the branch tag of a union (e.g. 'literal['predicted','label']', 'int') to loc.
    return isinstance(part, str) and (
        part.startswith(("literal[", "function-", "constrained-")) or part in {"int", "str", "float"}
    )


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in node:
        non_null = [n for n in node["anyOf"] if n.get("type") != "null"]
        if len(non_null) == 1:
            return _resolve(schema, non_null[0])
    return node


def _node_at(schema: dict[str, Any], loc: list[str]) -> dict[str, Any] | None:
    node = _resolve(schema, schema)
    for part in loc:
        if part.isdigit() and node.get("type") == "array":
            node = _resolve(schema, node.get("items", {}))
            continue
        props = node.get("properties") or {}
        if part in props:
            node = _resolve(schema, props[part])
        elif isinstance(node.get("additionalProperties"), dict):  # a mapping of names to values
            node = _resolve(schema, node["additionalProperties"])
        else:
            return None
    return node


def _valid_keys(schema: dict[str, Any], loc: list[str]) -> list[str]:
    node = _node_at(schema, loc)
    return sorted((node or {}).get("properties", {}))


def _describe(schema: dict[str, Any], loc: list[str]) -> str | None:
    node = _node_at(schema, loc)
    return None if node is None else _describe_node(schema, node)


def _describe_node(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return " or ".join(_describe_node(schema, n) for n in node["anyOf"])
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    kind = node.get("type")
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<=")):
        if key in node:
            bounds.append(f"{op} {node[key]}")
    if kind == "integer":
        text = "an integer"
    elif kind == "number":
        text = "a number"
    elif kind == "string":
        text = f"a string matching {node['pattern']}" if "pattern" in node else "a string"
    elif kind == "boolean":
        text = "true or false"
    elif kind == "array":
        text = f"a list of {_plural(_describe_node(schema, node.get('items', {})))}"
    elif kind == "object":
        text = "a mapping with keys " + ", ".join(sorted(node.get("properties", {})))
    elif kind == "null":
        text = "null"
    else:
        text = "a valid value"
    return " ".join([text, *bounds])


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            head, _, rest = text[len(article) :].partition(" ")
            return f"{head}s {rest}".strip()
    return text
