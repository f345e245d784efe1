"""The message catalog: explicit wire tags, schema versions and upcasters.

Every message class is registered here with `@message(tag, ...)`. The tag (never the class name) is
what travels on the bus and what the event store records, so a class can be renamed or moved without
breaking history. A breaking change bumps `version` and registers `@upcaster(tag, from_version)`,
which turns a stored or published payload of the old version into the next one. The bus and the
store run the same upcasters, through `contracts.codec`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs


class Kind(enum.Enum):
    COMMAND = "command"
    EVENT = "event"


class Area(enum.Enum):
    """Which part of the lifecycle a message belongs to; the relay publishes events per area."""

    RUNS = "runs"
    FAILURES = "failures"
    REPAIRS = "repairs"
    ENVIRONMENTS = "environments"
    REGISTRY = "registry"
    NOTIFICATIONS = "notifications"


@attrs.frozen(kw_only=True)
class Entry:
    tag: str
    version: int
    kind: Kind
    area: Area
    cls: type[Any]
    summary: bool  # also published on the public results topic
    doc: str


JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]

_BY_TAG: dict[str, Entry] = {}
_BY_CLASS: dict[type[Any], Entry] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}

T = TypeVar("T")


def message(
    tag: str, *, kind: Kind, area: Area, version: int = 1, summary: bool = False
) -> Callable[[type[T]], type[T]]:
    """Register an attrs class as the message with wire tag `tag`."""

    def register(cls: type[T]) -> type[T]:
        if not attrs.has(cast(Any, cls)):  # cast: the TypeGuard would narrow `cls` and lose T
            raise TypeError(f"{cls.__qualname__} must be an attrs class")
        if tag in _BY_TAG:
            raise ValueError(f"wire tag {tag!r} registered twice")
        entry = Entry(
            tag=tag, version=version, kind=kind, area=area, cls=cls, summary=summary,
            doc=(cls.__doc__ or "").strip(),
        )
        _BY_TAG[tag] = entry
        _BY_CLASS[cls] = entry
        return cls

    return register


def upcaster(tag: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns `data` of `tag` at `from_version` into `from_version + 1`."""

    def register(fn: Upcaster) -> Upcaster:
        key = (tag, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"upcaster for {tag} v{from_version} registered twice")
        _UPCASTERS[key] = fn
        return fn

    return register


def by_tag(tag: str) -> Entry | None:
    return _BY_TAG.get(tag)


def by_class(cls: type[Any]) -> Entry:
    try:
        return _BY_CLASS[cls]
    except KeyError:
        raise TypeError(f"{cls.__qualname__} is not a registered message") from None


def entries() -> list[Entry]:
    """All registered messages, sorted by tag."""
    return sorted(_BY_TAG.values(), key=lambda e: e.tag)


def upcast(tag: str, version: int, data: JsonDict) -> JsonDict:
    """Bring `data` from `version` up to the current version of `tag`, one step at a time."""
    entry = _BY_TAG[tag]
    if version > entry.version:
        raise ValueError(f"{tag} v{version} is newer than this CARS understands (v{entry.version})")
    while version < entry.version:
        step = _UPCASTERS.get((tag, version))
        if step is None:
            raise ValueError(f"no upcaster from {tag} v{version} to v{version + 1}")
        try:
            data = step(dict(data))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # An upcaster meets whatever an old producer wrote; garbage must stay a contract error.
            raise ValueError(f"cannot upcast {tag} v{version} to v{version + 1}: {exc!r}") from exc
        version += 1
    return data
