"""Pure decisions about environment templates and the environments built from them: Given a template's
history, When a command or an environment request arrives, Then these events (or this rejection).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from attrs import evolve

import contracts
from actors.errors import Rejected
from actors.provisioner import environments as envs
from actors.provisioner.backends import BackendNotConfigured, LazyBackends, UnknownBackend
from actors.provisioner.router import labels_of
from actors.registry.builtin_templates import builtin_templates
from actors.registry.templates import (
    InvalidTemplate,
    TemplateState,
    UnknownTemplate,
    VersionConflict,
    decide,
    fold,
    memory_bytes,
    millicores,
    problems,
    resolve,
    stream_of,
    template_id,
)
from contracts import ContractError, Envelope
from contracts.environments import EnvironmentFailed, EnvironmentRequested, RequestEnvironment
from contracts.registry import DeprecateTemplate, PublishTemplate, TemplateDeprecated, TemplatePublished
from contracts.values import Quota, ResourceLimits, ServiceKind, ServiceSpec, TemplateSpec, version_key

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REDIS = ServiceSpec(name="redis", kind=ServiceKind.REDIS, image="redis", version="7.4-alpine", port=6379)
ENV_ID = uuid.UUID(int=7)


def spec(version: str = "1.0.0", **changes: Any) -> TemplateSpec:
    return TemplateSpec(**{"name": "py-redis", "version": version, "services": (REDIS,), **changes})


def history(*events: Any) -> list[Envelope[Any]]:
    return [Envelope(data=e, occurred_at=AT) for e in events]


def state_of(*events: Any) -> TemplateState:
    return fold(history(*events))


# -- publishing ---------------------------------------------------------------------------------------------


def test_publishing_a_new_version_records_it() -> None:
    # Given a template with version 1.0.0
    state = state_of(TemplatePublished(spec=spec()))
    # When 1.1.0 is published, Then it is recorded
    assert decide(state, PublishTemplate(spec=spec("1.1.0"))) == [TemplatePublished(spec=spec("1.1.0"))]
    # And the first publication of a name is recorded too
    assert decide(TemplateState(), PublishTemplate(spec=spec())) == [TemplatePublished(spec=spec())]


def test_publishing_a_published_version_with_the_same_body_changes_nothing() -> None:
    state = state_of(TemplatePublished(spec=spec()))
    assert decide(state, PublishTemplate(spec=spec())) == []


def test_publishing_a_published_version_with_another_body_is_refused_with_where_it_differs() -> None:
    # Given 1.0.0 with Redis 7.4
    state = state_of(TemplatePublished(spec=spec()))
    changed = spec(services=(evolve(REDIS, version="7.2"),))
    # When 1.0.0 is published again with Redis 7.2, Then it is refused, naming the field that differs
    with pytest.raises(VersionConflict) as caught:
        decide(state, PublishTemplate(spec=changed))
    message = str(caught.value)
    assert "'py-redis' version 1.0.0 is already published with a different body" in message
    assert "$.data.spec.services[0].version" in message
    assert isinstance(caught.value, Rejected)  # dead-lettered at once, with this reason


def test_a_spec_that_breaks_whole_spec_rules_is_refused_with_every_field_path() -> None:
    # Given a spec with a duplicated service name and services that do not fit the quota
    bad = TemplateSpec(
        name="crowded", version="1.0.0",
        services=(REDIS, evolve(REDIS, resources=ResourceLimits(cpu="2", memory="3Gi"))),
        quota=Quota(cpu="1", memory="1Gi", pods=2),
    )
    # When it is published, Then every problem is reported at its path
    with pytest.raises(InvalidTemplate) as caught:
        decide(TemplateState(), PublishTemplate(spec=bad))
    assert caught.value.problems == [
        "service name 'redis' is used twice (also by services[0]) @ $.data.spec.services[1].name",
        "the runner and 2 service(s) need 3 pods; the quota allows 2 @ $.data.spec.quota.pods",
        "the services ask for 2500m CPU in all; the quota allows 1 @ $.data.spec.quota.cpu",
        "the services ask for 3584Mi memory in all; the quota allows 1Gi @ $.data.spec.quota.memory",
    ]


@pytest.mark.parametrize(("data", "expected"), [
    pytest.param({"name": "Py_Redis", "version": "1.0.0"}, "name 'Py_Redis' must be a DNS label", id="name"),
    pytest.param({"name": "py", "version": "latest"}, "version 'latest' must be a version of dotted numbers",
                 id="version"),
    pytest.param({"name": "py", "version": "1", "quota": {"memory": "lots"}},
                 "memory 'lots' must be a memory quantity such as 512Mi or 2Gi @ $.spec.quota", id="quota"),
    pytest.param({"name": "py", "version": "1", "services": [
        {"name": "db", "kind": "redis", "image": "redis", "version": "7", "port": 6379, "env": {"1X": "y"}}]},
        "env has invalid key(s) '1X'", id="env-name"),
    pytest.param({"name": "py", "version": "1", "services": [
        {"name": "db", "kind": "redis", "image": "redis", "version": "7", "port": 6379,
         "resources": {"cpu": "fast"}}]},
        "cpu 'fast' must be a CPU quantity such as 500m, 1 or 1.5 @ $.spec.services[0].resources", id="cpu"),
    pytest.param({"name": "py", "version": "1", "backend": "Kube Cluster"}, "backend 'Kube Cluster' must be",
                 id="backend"),
])
def test_a_malformed_spec_is_refused_by_the_contract_with_its_field_path(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ContractError) as caught:
        contracts.structure(data, TemplateSpec, root="$.spec")
    assert any(expected in e for e in caught.value.errors), caught.value.errors


def test_quantities() -> None:
    assert [millicores(c) for c in ("500m", "1", "1.5", "0.25")] == [500, 1000, 1500, 250]
    assert [memory_bytes(m) for m in ("512Mi", "2Gi", "1G", "64")] == [512 * 2**20, 2 * 2**30, 10**9, 64]


# -- deprecating ---------------------------------------------------------------------------------------------


def test_deprecating_a_version_records_it_once() -> None:
    state = state_of(TemplatePublished(spec=spec()))
    command = DeprecateTemplate(name="py-redis", version="1.0.0", reason="Redis 7.4 has a bug")
    assert decide(state, command) == [
        TemplateDeprecated(name="py-redis", version="1.0.0", reason="Redis 7.4 has a bug")]
    deprecated = state_of(TemplatePublished(spec=spec()), *decide(state, command))
    assert decide(deprecated, command) == []


def test_deprecating_an_unknown_template_or_version_is_refused() -> None:
    with pytest.raises(UnknownTemplate, match="no template named 'py-redis'"):
        decide(TemplateState(), DeprecateTemplate(name="py-redis", version="1.0.0"))
    state = state_of(TemplatePublished(spec=spec()))
    with pytest.raises(UnknownTemplate, match=re.escape("has no version 9.0.0; published: 1.0.0")):
        decide(state, DeprecateTemplate(name="py-redis", version="9.0.0"))


def test_commands_name_their_template_stream() -> None:
    assert stream_of(PublishTemplate(spec=spec())) == template_id("py-redis")
    assert stream_of(DeprecateTemplate(name="py-redis", version="1")) == template_id("py-redis")
    assert template_id("py-redis") != template_id("python")


# -- choosing a version -------------------------------------------------------------------------------------


def test_versions_order_by_number_with_pre_releases_first() -> None:
    ordered = ["1.0.0-rc.1", "1.0.0", "1.2", "1.10.0", "2.0.0-alpha", "2.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert version_key("1.0") == version_key("1.0.0")


def test_the_default_version_is_the_highest_not_deprecated() -> None:
    # Given 1.0.0, 1.10.0 and 1.9.0 (published in that order), with 1.10.0 deprecated
    state = state_of(
        TemplatePublished(spec=spec("1.0.0")), TemplatePublished(spec=spec("1.10.0")),
        TemplatePublished(spec=spec("1.9.0")), TemplateDeprecated(name="py-redis", version="1.10.0"),
    )
    # Then a request without a version gets 1.9.0, and one naming 1.0.0 gets 1.0.0
    assert resolve(state, "py-redis", None).version == "1.9.0"
    assert resolve(state, "py-redis", "1.0.0").version == "1.0.0"
    # And naming the deprecated one is refused with the reason to pick another
    with pytest.raises(UnknownTemplate, match=re.escape("1.10.0 is deprecated; use another version or leave it out")):
        resolve(state, "py-redis", "1.10.0")


def test_unknown_names_versions_and_all_deprecated_are_refused_with_reasons() -> None:
    with pytest.raises(UnknownTemplate, match="unknown environment template 'nope'"):
        resolve(TemplateState(), "nope", None)
    state = state_of(TemplatePublished(spec=spec()), TemplateDeprecated(name="py-redis", version="1.0.0"))
    with pytest.raises(UnknownTemplate, match="every version of template 'py-redis' is deprecated"):
        resolve(state, "py-redis", None)
    with pytest.raises(UnknownTemplate, match=re.escape("has no version 2.0.0; published: 1.0.0")):
        resolve(state, "py-redis", "2.0.0")


# -- the built-in templates ---------------------------------------------------------------------------------


def test_the_built_in_templates_are_valid_and_each_publishable() -> None:
    builtins = builtin_templates()
    assert [t.name for t in builtins] == [
        "python", "python-postgres", "python-redis", "python-mysql", "python-mongodb", "full-stack"]
    for template in builtins:
        assert problems(template) == [], template.name
        # round trip through the one converter: what the store holds is what was built
        assert contracts.structure(contracts.unstructure(template), TemplateSpec) == template
    kinds = {t.name: [s.kind for s in t.services] for t in builtins}
    assert kinds["python"] == []
    assert kinds["full-stack"] == [ServiceKind.POSTGRES, ServiceKind.REDIS]
    assert kinds["python-mysql"] == [ServiceKind.MYSQL] and kinds["python-mongodb"] == [ServiceKind.MONGODB]


# -- environment requests ----------------------------------------------------------------------------------


def request(state: TemplateState, default: str = "local", backends: tuple[str, ...] = ("local", "kubernetes"),
            **fields: Any) -> list[Any]:
    cmd = RequestEnvironment(environment_id=ENV_ID, template="py-redis", purpose="manual", **fields)
    return envs.request(envs.EnvState(), cmd, ENV_ID, template=state, default_backend=default, backends=backends)


def test_a_request_records_the_resolved_version_its_services_and_the_template_ttl() -> None:
    state = state_of(TemplatePublished(spec=spec("1.0.0")), TemplatePublished(spec=spec("1.1.0", default_ttl_s=600)))
    [requested] = request(state)
    assert requested == EnvironmentRequested(
        environment_id=ENV_ID, template="py-redis", template_version="1.1.0", backend="local", ttl_s=600,
        purpose="manual", services=("redis",))
    [pinned] = request(state, template_version="1.0.0", ttl_s=90)
    assert (pinned.template_version, pinned.ttl_s) == ("1.0.0", 90)


@pytest.mark.parametrize(("asked", "template_backend", "default", "expected"), [
    ("kubernetes", "local", "local", "kubernetes"),  # the request wins
    (None, "kubernetes", "local", "kubernetes"),  # then the template
    (None, None, "kubernetes", "kubernetes"),  # then CARS_ENV_BACKEND
    (None, None, "local", "local"),
])
def test_the_backend_is_the_requests_else_the_templates_else_the_default(
    asked: str | None, template_backend: str | None, default: str, expected: str,
) -> None:
    state = state_of(TemplatePublished(spec=spec(backend=template_backend)))
    [requested] = request(state, default=default, backend=asked)
    assert requested.backend == expected


def test_a_request_that_cannot_be_served_is_recorded_and_failed_with_the_reason() -> None:
    empty = TemplateState()
    requested, failed = request(empty, template_version="1.0.0")
    assert (requested.template, requested.template_version, requested.backend) == ("py-redis", "1.0.0", "local")
    assert failed == EnvironmentFailed(environment_id=ENV_ID, reason="unknown environment template 'py-redis'")
    state = state_of(TemplatePublished(spec=spec()), TemplateDeprecated(name="py-redis", version="1.0.0"))
    _, failed = request(state, template_version="1.0.0")
    assert "version 1.0.0 is deprecated" in failed.reason
    _, failed = request(state_of(TemplatePublished(spec=spec())), backend="nomad")
    assert failed.reason == "unknown environment backend 'nomad'; known: local, kubernetes"


def test_a_repeated_request_changes_nothing() -> None:
    state = state_of(TemplatePublished(spec=spec()))
    first = request(state)
    cmd = RequestEnvironment(environment_id=ENV_ID, template="py-redis")
    again = envs.request(envs.fold(history(*first)), cmd, ENV_ID, template=state, default_backend="local",
                         backends=("local",))
    assert again == []


def test_labels_carry_the_environment_template_and_repair() -> None:
    rid, cid = uuid.UUID(int=1), uuid.UUID(int=2)
    req = EnvironmentRequested(environment_id=ENV_ID, template="python", template_version="1.0.0", backend="local",
                               ttl_s=60, purpose=f"validate:{rid}:{cid}")
    assert labels_of(req) == {"environment-id": str(ENV_ID), "template": "python", "template-version": "1.0.0",
                              "purpose": f"validate:{rid}:{cid}", "repair-id": str(rid)}
    assert "repair-id" not in labels_of(evolve(req, purpose="manual"))


# -- backends by name ---------------------------------------------------------------------------------------


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_lazy_backends_build_each_once_only_when_asked_and_explain_failures() -> None:
    built: list[str] = []

    def factory(name: str) -> Callable[[], Any]:
        def make() -> Any:
            built.append(name)
            return Named(name)
        return make

    def broken() -> Any:
        raise FileNotFoundError("no kubeconfig at ~/.kube/config")

    backends = LazyBackends({"local": factory("local"), "kubernetes": broken}, default="local")
    # Nothing is built until asked for
    assert built == [] and list(backends) == ["local", "kubernetes"] and "kubernetes" in backends
    # Asked twice, built once
    assert backends["local"] is backends["local"] and built == ["local"]
    assert backends.built() == [backends["local"]]
    # A backend that cannot be built says why; an unknown name lists the known ones
    with pytest.raises(BackendNotConfigured, match="the kubernetes backend is not available here: "
                                                   "FileNotFoundError: no kubeconfig"):
        backends["kubernetes"]
    with pytest.raises(UnknownBackend, match="unknown environment backend 'nomad'; known: local, kubernetes"):
        backends["nomad"]
    with pytest.raises(ValueError, match="default backend 'nomad'"):
        LazyBackends({"local": factory("local")}, default="nomad")
