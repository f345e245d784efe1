"""Pure decisions about environment templates: one aggregate per template name, its versions immutable.

    template.publish   -> template.published   (a new version; the same body again is a no-op)
    template.deprecate -> template.deprecated  (the version stays readable; it is no longer the default)

Field-level checks (name and version formats, quantities, variable names) live on the contract classes,
so a malformed spec is refused with its field path wherever it is decoded. The checks here need the
whole spec (unique service names, services that fit the quota) or the history (immutability).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from attrs import evolve, field, frozen

from actors.errors import Rejected
from contracts import Envelope, natural_id, unstructure
from contracts.registry import DeprecateTemplate, PublishTemplate, TemplateDeprecated, TemplatePublished
from contracts.values import TemplateSpec, version_key

COMMANDS = frozenset({"template.publish", "template.deprecate"})


class TemplateError(Rejected):
    """Root of template rejections: the command can never be carried out as it is."""


class InvalidTemplate(TemplateError):
    """The spec breaks a rule that needs the whole spec (`problems` lists them with field paths)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid template: " + "; ".join(self.problems))


class VersionConflict(TemplateError):
    """The version is published already, with a different body."""


class UnknownTemplate(TemplateError):
    """No such template, or no such version of it, or none that may be used."""


@frozen(kw_only=True)
class TemplateState:
    """One template's published versions (in publication order) and which are deprecated."""

    name: str = ""
    versions: dict[str, TemplateSpec] = field(factory=dict)
    deprecated: dict[str, str] = field(factory=dict)  # version -> reason

    def latest(self) -> TemplateSpec | None:
        """The highest version that is not deprecated (`version_key` order; the later publication on a tie)."""
        usable = [(version_key(v), i, spec) for i, (v, spec) in enumerate(self.versions.items())
                  if v not in self.deprecated]
        return max(usable, key=lambda t: (t[0], t[1]))[2] if usable else None

    def ordered(self) -> list[TemplateSpec]:
        """Every version, lowest first."""
        return [spec for _, _, spec in sorted(
            (version_key(v), i, spec) for i, (v, spec) in enumerate(self.versions.items()))]


def template_id(name: str) -> uuid.UUID:
    return natural_id("template", name)


def fold(history: Sequence[Envelope[Any]]) -> TemplateState:
    state = TemplateState()
    for env in history:
        event = env.data
        if isinstance(event, TemplatePublished):
            state = evolve(state, name=event.spec.name, versions={**state.versions, event.spec.version: event.spec})
        elif isinstance(event, TemplateDeprecated):
            state = evolve(state, deprecated={**state.deprecated, event.version: event.reason})
    return state


# -- checks that need the whole spec --------------------------------------------------------------------

_MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def millicores(cpu: str) -> int:
    """A CPU quantity (`500m`, `1.5`) in millicores (the contract has checked its form)."""
    return int(cpu[:-1]) if cpu.endswith("m") else round(float(cpu) * 1000)


def memory_bytes(memory: str) -> int:
    """A memory quantity (`512Mi`, `2G`) in bytes (the contract has checked its form)."""
    digits = memory.rstrip("kKMGTi")
    return int(digits) * _MEMORY_UNITS[memory[len(digits):]]


def problems(spec: TemplateSpec, root: str = "$.data.spec") -> list[str]:
    """What makes `spec` unusable as a whole, each as `problem @ path` (empty when it is fine)."""
    found: list[str] = []
    seen: dict[str, int] = {}
    for i, service in enumerate(spec.services):
        if service.name in seen:
            found.append(f"service name {service.name!r} is used twice (also by services[{seen[service.name]}]) "
                         f"@ {root}.services[{i}].name")
        seen.setdefault(service.name, i)
    if len(spec.services) + 1 > spec.quota.pods:
        found.append(f"the runner and {len(spec.services)} service(s) need {len(spec.services) + 1} pods; "
                     f"the quota allows {spec.quota.pods} @ {root}.quota.pods")
    cpu = sum(millicores(s.resources.cpu) for s in spec.services)
    if cpu > millicores(spec.quota.cpu):
        found.append(f"the services ask for {cpu}m CPU in all; the quota allows {spec.quota.cpu} @ {root}.quota.cpu")
    memory = sum(memory_bytes(s.resources.memory) for s in spec.services)
    if memory > memory_bytes(spec.quota.memory):
        found.append(f"the services ask for {memory // 2**20}Mi memory in all; the quota allows "
                     f"{spec.quota.memory} @ {root}.quota.memory")
    return found


def _first_difference(old: Any, new: Any, path: str) -> str:
    """The path of the first place two unstructured values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return path


# -- decisions --------------------------------------------------------------------------------------------


def publish(state: TemplateState, spec: TemplateSpec) -> list[Any]:
    """Publish a new version; the identical body again changes nothing; a different body is refused."""
    found = problems(spec)
    if found:
        raise InvalidTemplate(found)
    existing = state.versions.get(spec.version)
    if existing is None:
        return [TemplatePublished(spec=spec)]
    if existing == spec:
        return []
    where = _first_difference(unstructure(existing), unstructure(spec), "$.data.spec")
    raise VersionConflict(
        f"template {spec.name!r} version {spec.version} is already published with a different body "
        f"(it differs at {where}); versions are immutable: publish the change as a new version")


def deprecate(state: TemplateState, command: DeprecateTemplate) -> list[Any]:
    if not state.versions:
        raise UnknownTemplate(f"no template named {command.name!r}")
    if command.version not in state.versions:
        raise UnknownTemplate(f"template {command.name!r} has no version {command.version}; "
                              f"published: {', '.join(s.version for s in state.ordered())}")
    if command.version in state.deprecated:
        return []
    return [TemplateDeprecated(name=command.name, version=command.version, reason=command.reason)]


def decide(state: TemplateState, command: Any) -> list[Any]:
    if isinstance(command, PublishTemplate):
        return publish(state, command.spec)
    if isinstance(command, DeprecateTemplate):
        return deprecate(state, command)
    raise TypeError(f"not a template command: {type(command).__name__}")


def stream_of(command: Any) -> uuid.UUID:
    """The template aggregate a command is about."""
    if isinstance(command, PublishTemplate):
        return template_id(command.spec.name)
    if isinstance(command, DeprecateTemplate):
        return template_id(command.name)
    raise TypeError(f"not a template command: {type(command).__name__}")


def resolve(state: TemplateState, name: str, version: str | None) -> TemplateSpec:
    """The spec an environment request means: the named version (not deprecated), else the latest usable.

    Raises UnknownTemplate with the reason when there is none.
    """
    if not state.versions:
        raise UnknownTemplate(f"unknown environment template {name!r}")
    if version is None:
        latest = state.latest()
        if latest is None:
            raise UnknownTemplate(f"every version of template {name!r} is deprecated; publish a new version")
        return latest
    spec = state.versions.get(version)
    if spec is None:
        known = ", ".join(s.version for s in state.ordered())
        raise UnknownTemplate(f"template {name!r} has no version {version}; published: {known}")
    if version in state.deprecated:
        reason = state.deprecated[version]
        raise UnknownTemplate(f"template {name!r} version {version} is deprecated"
                              + (f" ({reason})" if reason else "") + "; use another version or leave it out")
    return spec


__all__ = [
    "COMMANDS", "InvalidTemplate", "TemplateError", "TemplateState", "UnknownTemplate", "VersionConflict",
    "decide", "deprecate", "fold", "memory_bytes", "millicores", "problems", "publish", "resolve", "stream_of",
    "template_id",
]
