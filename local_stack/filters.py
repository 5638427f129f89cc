"""Lambda event filtering: the subset of EventBridge-style patterns that filters use."""
from __future__ import annotations

from typing import Any

_MISSING = object()


def matches(pattern: dict, event: Any) -> bool:
    """True when every key of the pattern matches the event (an object, possibly nested)."""
    if not isinstance(event, dict):
        return False
    for key, expected in pattern.items():
        value = event.get(key, _MISSING)
        if isinstance(expected, dict):  # a missing object matches only `exists: false` rules below it
            if not matches(expected, {} if value is _MISSING else value):
                return False
        elif not any(_matches_one(rule, value) for rule in expected):
            return False
    return True


def _matches_one(rule: Any, value: Any) -> bool:
    if isinstance(rule, dict):
        (kind, arg), = rule.items()
        if kind == "exists":
            return (value is not _MISSING) == bool(arg)
        if value is _MISSING:
            return False
        if kind == "prefix":
            return isinstance(value, str) and value.startswith(arg)
        if kind == "anything-but":
            return value not in (arg if isinstance(arg, list) else [arg])
        if kind == "numeric":
            return isinstance(value, (int, float)) and _numeric(arg, value)
        raise ValueError(f"unsupported filter rule {kind}")
    if isinstance(value, list):
        return rule in value
    return value is not _MISSING and value == rule


def _numeric(conditions: list, value: float) -> bool:
    value = float(value)
    checks = {"<": value.__lt__, "<=": value.__le__, "=": value.__eq__, ">": value.__gt__, ">=": value.__ge__}
    return all(checks[op](float(bound)) for op, bound in zip(conditions[::2], conditions[1::2], strict=True))
