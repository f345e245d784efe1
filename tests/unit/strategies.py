"""Hypothesis strategies for every registered message, derived from the attrs classes themselves.

`messages(cls)` reads `attrs.fields` and the type hints of a class, and the validators on each field
(the string limits of `contracts.limits`, attrs' `ge`/`le`/`gt`/`lt`, `optional`, lists of
validators), so it builds valid instances directly instead of filtering invalid ones away. A message
added to the catalog later gets a strategy without anything being written here; a field type or a
validator this module does not understand fails loudly rather than being skipped.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
import re
import types
import typing
import uuid
from typing import Any

import attrs
from hypothesis import strategies as st

from contracts import Envelope, entries
from contracts.catalog import Entry

# Generated strings stay short so that runs stay fast; strings exactly at the limit are drawn too,
# for limits no larger than EXACT_LIMIT_UP_TO (names, versions, resource sizes).
SHORT_TEXT = 40
EXACT_LIMIT_UP_TO = 64
SHORT_COLLECTION = 3


@attrs.define
class Constraints:
    """What a field's validators demand of its value."""

    non_blank: bool = False
    max_len: int | None = None
    max_items: int | None = None
    lower: float | None = None
    lower_open: bool = False
    upper: float | None = None
    upper_open: bool = False
    pattern: re.Pattern[str] | None = None  # contracts.limits.matches
    key_pattern: re.Pattern[str] | None = None  # contracts.limits.keys_match


def constraints_of(validator: Any) -> Constraints:
    found = Constraints()
    _collect(validator, found)
    return found


def _collect(validator: Any, found: Constraints) -> None:
    if validator is None:
        return
    if isinstance(validator, list | tuple):
        for v in validator:
            _collect(v, found)
        return
    inner = getattr(validator, "_validators", None)  # attrs' and_() (a list of validators)
    if inner is not None:
        _collect(list(inner), found)
        return
    if type(validator).__name__ == "_OptionalValidator":
        _collect(validator.validator, found)  # the None branch is drawn separately
        return
    if type(validator).__name__ == "_NumberValidator":
        op, bound = validator.compare_op, validator.bound
        if op in (">=", ">"):
            found.lower, found.lower_open = bound, op == ">"
        elif op in ("<=", "<"):
            found.upper, found.upper_open = bound, op == "<"
        else:
            raise TypeError(f"unknown number validator {op!r}")
        return
    # contracts.limits: closures `bounded(n)`, `non_empty(n)` and `max_items(n)`.
    factory = getattr(validator, "__qualname__", "").split(".<locals>", 1)[0]
    if factory in ("matches", "keys_match"):
        [compiled] = [c.cell_contents for c in validator.__closure__ or () if isinstance(c.cell_contents, re.Pattern)]
        if factory == "matches":
            found.pattern = compiled
        else:
            found.key_pattern = compiled
        return
    if factory in ("bounded", "non_empty", "max_items"):
        (limit,) = (c.cell_contents for c in validator.__closure__ or ())
        if factory == "max_items":
            found.max_items = limit
        else:
            found.max_len = limit
            found.non_blank = found.non_blank or factory == "non_empty"
        return
    raise TypeError(f"no strategy knows the validator {validator!r}; teach tests/unit/strategies.py")


def text(c: Constraints) -> st.SearchStrategy[str]:
    if c.pattern is not None:
        return st.from_regex(c.pattern, fullmatch=True)
    limit = c.max_len if c.max_len is not None else SHORT_TEXT
    short = st.text(min_size=1 if c.non_blank else 0, max_size=min(limit, SHORT_TEXT))
    options = [short]
    if limit <= EXACT_LIMIT_UP_TO:
        options.append(st.text(min_size=limit, max_size=limit))
    drawn = st.one_of(options)
    return drawn.filter(lambda s: s.strip() != "") if c.non_blank else drawn


def integers(c: Constraints) -> st.SearchStrategy[int]:
    lower = None if c.lower is None else math.ceil(c.lower) + (1 if c.lower_open else 0)
    upper = None if c.upper is None else math.floor(c.upper) - (1 if c.upper_open else 0)
    return st.integers(min_value=lower, max_value=upper)


def floats(c: Constraints) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=c.lower, max_value=c.upper, exclude_min=c.lower_open, exclude_max=c.upper_open,
        allow_nan=False, allow_infinity=False,
    )


# Fixed offsets only: equality between zoneinfo datetimes around a DST fold is not an instant
# comparison, and the wire keeps the offset, not the zone name anyway.
offsets = st.one_of(
    st.just(dt.UTC),
    st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
)
aware_datetimes = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=offsets,
)


def for_type(tp: Any, c: Constraints) -> st.SearchStrategy[Any]:
    """A strategy for one annotation, honouring the validators in `c`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"only Optional unions are supported, not {tp!r}")
        return st.one_of(st.none(), for_type(rest[0], c))
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {tp!r}")
        size = min(SHORT_COLLECTION, c.max_items if c.max_items is not None else SHORT_COLLECTION)
        return st.lists(for_type(args[0], Constraints()), max_size=size).map(tuple)
    if origin is dict:
        keys = st.from_regex(c.key_pattern, fullmatch=True) if c.key_pattern else for_type(args[0], Constraints())
        return st.dictionaries(keys, for_type(args[1], Constraints()), max_size=SHORT_COLLECTION)
    if tp is bool:  # before int: bool is an int subclass
        return st.booleans()
    if tp is str:
        return text(c)
    if tp is int:
        return integers(c)
    if tp is float:
        return floats(c)
    if tp is uuid.UUID:
        return st.uuids()
    if tp is dt.datetime:
        return aware_datetimes
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and attrs.has(tp):
        return st.deferred(lambda: messages(tp))
    raise TypeError(f"no strategy for {tp!r}; teach tests/unit/strategies.py")


_MESSAGES: dict[type[Any], st.SearchStrategy[Any]] = {}


def messages(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Valid instances of the attrs class `cls`; fields with a default are sometimes left out."""
    if cls not in _MESSAGES:
        _MESSAGES[cls] = _build_messages(cls)
    return _MESSAGES[cls]


def _build_messages(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for a in attrs.fields(cls):
        strategy = for_type(hints[a.name], constraints_of(a.validator))
        (required if a.default is attrs.NOTHING else optional)[a.name] = strategy
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


@functools.cache
def envelopes(entry: Entry) -> st.SearchStrategy[Envelope[Any]]:
    """Envelopes carrying a valid message of `entry`, with every envelope field drawn too."""
    correlation = constraints_of(attrs.fields(Envelope).correlation_id.validator)
    return st.builds(
        Envelope,
        data=messages(entry.cls),
        id=st.uuids(),
        occurred_at=aware_datetimes,
        correlation_id=text(correlation),
        causation_id=st.none() | st.text(max_size=SHORT_TEXT),
        stream_id=st.none() | st.uuids(),
        stream_version=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        metadata=st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: k.strip() != ""),
                                 st.text(max_size=SHORT_TEXT), max_size=SHORT_COLLECTION),
    )


def any_envelope() -> st.SearchStrategy[Envelope[Any]]:
    return st.one_of([envelopes(e) for e in entries()])


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=SHORT_TEXT),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

__all__ = [
    "Constraints", "any_envelope", "aware_datetimes", "constraints_of", "envelopes", "for_type",
    "json_scalars", "json_values", "messages",
]
