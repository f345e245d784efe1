"""Size limits and attrs validators shared by the message classes.

Messages stay small (STYLE rule 5); these bounds make an oversized field a validation error with a
field path instead of a surprise in the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

MAX_ID = 512  # identifiers, test ids, paths, names
MAX_TEXT = 8 * 1024  # messages, details, explanations
MAX_PATCH = 512 * 1024  # a unified diff
MAX_RESULTS = 100_000  # results in one run.reported


def _passes_when(condition: str, check: Callable[..., None]) -> Any:
    """Mark `check` with `condition`, a Python expression over `value` that holds exactly when `check`
    passes: the fast decoder (contracts/fastpath.py) evaluates it inline instead of calling `check`,
    and falls back to the cattrs path (which calls `check` and words the error) when it does not hold."""
    check.passes_when = condition  # type: ignore[attr-defined]
    return check


def bounded(max_len: int) -> Any:
    """A validator: a string no longer than `max_len` characters."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if len(value) > max_len:
            raise ValueError(f"{attribute.name} is {len(value)} characters long; the limit is {max_len}")

    return _passes_when(f"len(value) <= {max_len:d}", check)


def non_empty(max_len: int) -> Any:
    """A validator: a non-blank string no longer than `max_len` characters."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if not value.strip():
            raise ValueError(f"{attribute.name} must not be empty")
        if len(value) > max_len:
            raise ValueError(f"{attribute.name} is {len(value)} characters long; the limit is {max_len}")

    return _passes_when(f"value.strip() and len(value) <= {max_len:d}", check)


def max_items(limit: int) -> Any:
    """A validator: a sequence of at most `limit` items."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        if len(value) > limit:
            raise ValueError(f"{attribute.name} has {len(value)} items; the limit is {limit}")

    return _passes_when(f"len(value) <= {limit:d}", check)


def string_map(limit: int, max_len: int) -> Any:
    """A validator: a dict of at most `limit` non-blank string keys to string values, each at most
    `max_len` characters."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{attribute.name} must be an object of strings")
        if len(value) > limit:
            raise ValueError(f"{attribute.name} has {len(value)} entries; the limit is {limit}")
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip() or len(key) > max_len:
                raise ValueError(f"{attribute.name} keys must be non-empty strings of at most {max_len} characters")
            if not isinstance(item, str) or len(item) > max_len:
                raise ValueError(f"{attribute.name}[{key!r}] must be a string of at most {max_len} characters")

    return _passes_when(
        f"isinstance(value, dict) and (not value or len(value) <= {limit:d} and all("
        f"isinstance(key, str) and key.strip() and len(key) <= {max_len:d} and isinstance(item, str) "
        f"and len(item) <= {max_len:d} for key, item in value.items()))",
        check,
    )


def matches(pattern: str, what: str) -> Any:
    """A validator: a string that matches `pattern` whole; the error says it must be `what`."""
    compiled = re.compile(pattern)

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if not compiled.fullmatch(value):
            raise ValueError(f"{attribute.name} {value!r} must be {what}")

    return check


def keys_match(pattern: str, what: str) -> Any:
    """A validator: a mapping whose every key matches `pattern` whole; the error names the bad keys."""
    compiled = re.compile(pattern)

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: dict[str, Any]) -> None:
        bad = [k for k in value if not compiled.fullmatch(k)]
        if bad:
            raise ValueError(f"{attribute.name} has invalid key(s) {', '.join(map(repr, bad))}: each must be {what}")

    return check
