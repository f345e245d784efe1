"""The deploy/ files, checked against what the code depends on.

- Every Kubernetes object is validated against the models of the kubernetes_asyncio client: unknown
  fields are errors (with their path), and the object is deserialized through `ApiClient.deserialize`,
  which enforces required fields. KEDA ScaledObjects (a CRD, not in the client) are checked by hand.
- The kustomizations' `resources` are resolved here (files and directories); `kubectl kustomize`
  renders them in tests/integration/test_deploy_render.py.
- Names the code depends on: environment variables that bus/settings.py reads, the HTTP port, the
  `cars` command lines (parsed by the real CLI), stream and consumer-group names (bus/streams.py and
  the groups bus/runtime.py subscribes), one compose service per actor, the non-root user.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer
import yaml
from kubernetes_asyncio import client as k8s

from bus import runtime, streams
from bus.cli import app
from bus.settings import VARIABLES, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
IMAGE_USER = 10001
NAMESPACE = "cars"

# ----------------------------------------------------------------------------- loading


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization_files(directory: Path) -> Iterator[Path]:
    """Every manifest file a kustomization includes, following directories to their kustomization."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory / 'kustomization.yaml'}: resource {entry} does not exist"
        if target.is_dir():
            yield from kustomization_files(target)
        else:
            yield target
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            assert (directory / patch["path"]).is_file(), f"{directory}: patch {patch['path']} does not exist"


def objects(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in kustomization_files(directory) for doc in load_all(path)]


def by_kind(docs: Sequence[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# ----------------------------------------------------------------------------- model validation


def model_class(doc: Mapping[str, Any]) -> str:
    """`apps/v1` + `Deployment` -> `V1Deployment` (the client's naming)."""
    version = doc["apiVersion"].split("/")[-1]
    return version[0].upper() + version[1:] + doc["kind"]


NATIVE = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}


def unknown_fields(data: Any, klass: str, path: str = "$") -> list[str]:
    """Fields that the Kubernetes model `klass` does not have, and values of the wrong shape."""
    if data is None or klass == "object":
        return []
    if m := re.fullmatch(r"list\[(.*)\]", klass):
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        return [e for i, item in enumerate(data) for e in unknown_fields(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"dict\(([^,]*), (.*)\)", klass):
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping"]
        return [e for k, v in data.items() for e in unknown_fields(v, m.group(2), f"{path}.{k}")]
    if klass in NATIVE:
        ok = isinstance(data, NATIVE[klass]) and not (klass in ("int", "float") and isinstance(data, bool))
        return [] if ok else [f"{path}: expected {klass}, got {data!r}"]
    model = getattr(k8s, klass)
    if not isinstance(data, dict):
        return [f"{path}: expected a {klass} mapping"]
    json_to_attr = {v: k for k, v in model.attribute_map.items()}
    errors = [f"{path}.{key}: not a field of {klass}" for key in data if key not in json_to_attr]
    for key, value in data.items():
        if key in json_to_attr:
            errors += unknown_fields(value, model.openapi_types[json_to_attr[key]], f"{path}.{key}")
    return errors


class _Response:
    def __init__(self, doc: Any) -> None:
        self.data = json.dumps(doc)


def deserialize_all(docs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The objects as the client's models, through ApiClient.deserialize (required fields enforced)."""
    async def go() -> list[Any]:
        async with k8s.ApiClient() as api:
            return [api.deserialize(_Response(doc), model_class(doc)) for doc in docs]

    return asyncio.run(go())


def validate_all(docs: Sequence[Mapping[str, Any]]) -> list[Any]:
    for doc in docs:
        errors = unknown_fields(doc, model_class(doc))
        assert not errors, f"{doc['kind']} {doc['metadata'].get('name')}: " + "; ".join(errors)
    return deserialize_all(docs)


# ----------------------------------------------------------------------------- the CLI, the settings


@functools.cache
def cars_command() -> Any:
    return typer.main.get_command(app)


def parse_cars(args: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Parse `cars ARGS` with the real CLI (nothing runs): (subcommand, its parameters)."""
    group = cars_command()
    ctx = type(group.make_context("cars", ["--help"], resilient_parsing=True))(group, info_name="cars")
    name, *rest = args
    command = group.get_command(ctx, name)  # type: ignore[attr-defined]
    assert command is not None, f"`cars {' '.join(args)}`: no such command"
    sub = command.make_context(name, list(rest), parent=ctx)
    if name in ("worker", "up") and sub.params.get("actors") != "none":
        runtime.parse_actors(sub.params["actors"])  # ValueError for an unknown actor
    return name, sub.params


def settings_variables() -> set[str]:
    """Every environment variable bus/settings.py reads."""
    known = {k for k in VARIABLES if re.fullmatch(r"[A-Z_]+", k)}
    postgres = {f"POSTGRES_{k}" for k in ("HOST", "PORT", "USER", "PASSWORD", "DBNAME", "SCHEMA")}
    return (known | postgres) - {"OTEL_"}


def read_by_settings(name: str, base: Mapping[str, str]) -> bool:
    """True when another value of `name` changes the Settings (or is refused by them): it is read."""
    value = base[name]
    other = str(int(value) + 1) if value.isdigit() else value + "-other"
    try:
        return bool(Settings.from_env(base) != Settings.from_env({**base, name: other}))
    except SettingsError:
        return True


def actor_subscriptions() -> dict[str, set[tuple[str, str]]]:
    """actor -> {(stream, group)} exactly as the runtime subscribes it (routers built, nothing started)."""
    settings = Settings.from_env({"CARS_HOME": "/nonexistent/cars-home"})
    found: dict[str, set[tuple[str, str]]] = {}
    for actor in runtime.ACTORS:
        # The deps are built but never called: placeholders stand in for the store and the views.
        platform = runtime.Platform(settings=settings, actors=[actor], role="worker", api=False, relay=False,
                                    projections=False, store=object(), views=object())  # type: ignore[arg-type]
        platform.build_router(actor)
        found[actor] = {(c.stream, c.group) for c in platform.consumers.values()}
    return found


# ----------------------------------------------------------------------------- pod helpers


def cars_containers(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(deployment name, pod spec, container) of every container that runs the CARS image."""
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["image"].split(":")[0].rsplit("/", 1)[-1] == "cars":
                yield name, pod, container


def container_env(container: Mapping[str, Any], configmaps: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """The container's environment, with secret and downward-API values replaced by placeholders."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = f"<secret {var['valueFrom']['secretKeyRef']['key']}>"
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = "<pod-name>"
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
    return env


def role_of(container: Mapping[str, Any]) -> str | None:
    command, params = parse_cars(container["args"])
    return params["actors"] if command == "worker" else None


# ============================================================================= tests: Kubernetes


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return objects(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return objects(OVERLAY)


def test_every_yaml_file_under_deploy_parses_and_is_used() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    for path in files:
        load_all(path)  # raises on bad YAML
    used = {p for d in (BASE, OVERLAY) for p in kustomization_files(d)}
    kustomizations = {p for p in files if p.name == "kustomization.yaml"}
    patches = {OVERLAY / "validator-resources.yaml"}
    assert set(files) - kustomizations - patches == used, "a manifest no kustomization includes"


def test_every_kubernetes_object_is_valid_against_the_client_models(base: list[dict[str, Any]]) -> None:
    models = validate_all(base)
    assert [m.metadata.name for m in models] == [doc["metadata"]["name"] for doc in base]


def test_the_validator_rejects_an_unknown_field_and_a_missing_required_one() -> None:
    # The validation itself can fail: a typo in a probe, and a container without a name.
    doc = load_all(BASE / "workers.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["comand"] = ["cars", "probe"]
    assert unknown_fields(doc, "V1Deployment") == [
        "$.spec.template.spec.containers[0].livenessProbe.exec.comand: not a field of V1ExecAction"]
    del doc["spec"]["template"]["spec"]["containers"][0]["name"]
    del doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["comand"]
    with pytest.raises(ValueError, match="name"):
        deserialize_all([doc])


def test_one_deployment_per_actor_role_plus_the_api(base: list[dict[str, Any]]) -> None:
    roles = {name: role_of(c) for name, _, c in cars_containers(base)}
    assert roles == {"cars-api": None, **{f"cars-{a}": a for a in runtime.ACTORS}}
    api = next(c for name, _, c in cars_containers(base) if name == "cars-api")
    assert parse_cars(api["args"]) == ("up", {"host": None, "port": None, "actors": "none"})


ACCOUNTS = {"cars-provisioner": "cars-provisioner", "cars-validator": "cars-validator"}  # others: `cars`


def test_only_the_provisioner_runs_as_the_provisioner_service_account(base: list[dict[str, Any]]) -> None:
    accounts = {name: pod["serviceAccountName"] for name, pod, _ in cars_containers(base)}
    assert accounts == {name: ACCOUNTS.get(name, "cars") for name in accounts}
    for workload in [*by_kind(base, "StatefulSet").values()]:
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == "cars"
    # The binding names the namespace the kustomization deploys into
    for account in ACCOUNTS.values():
        binding = by_kind(base, "ClusterRoleBinding")[account]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"] == NAMESPACE
    # And only the provisioner's and the validator's pods get an API token at all
    assert by_kind(base, "ServiceAccount")["cars"]["automountServiceAccountToken"] is False
    for name, pod, _ in cars_containers(base):
        assert pod.get("automountServiceAccountToken", True) is (name in ACCOUNTS), name


def test_every_cars_variable_is_one_that_settings_reads(base: list[dict[str, Any]]) -> None:
    configmaps = by_kind(base, "ConfigMap")
    known = settings_variables()
    for name, _, container in cars_containers(base):
        env = container_env(container, configmaps)
        assert set(env) <= known, (name, set(env) - known)
        settings = Settings.from_env(env)  # the values parse
        # And each one is really read: another value changes the settings
        unread = [k for k in env if not read_by_settings(k, env)]
        assert not unread, (name, unread)
        assert settings.store == "postgres" and settings.redis_url == "redis://cars-redis:6379/0"
        assert settings.consumer == "<pod-name>"  # unique per pod: the consumer name in every group
        store_env = settings.store_env()  # every PostgreSQL setting the store needs is there
        assert store_env["POSTGRES_PASSWORD"] == "<secret password>"
        assert store_env["POSTGRES_USER"] == "<secret username>"


def test_secrets_are_referenced_never_inlined(base: list[dict[str, Any]], overlay: list[dict[str, Any]]) -> None:
    assert not by_kind(base + overlay, "Secret")
    for cm in by_kind(base, "ConfigMap").values():
        assert not [k for k in cm["data"] if any(h in k.lower() for h in ("password", "secret", "token"))]
    referenced = set()
    for workload in [*by_kind(base, "Deployment").values(), *by_kind(base, "StatefulSet").values()]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env", []):
                if "PASSWORD" in var["name"] or "USER" in var["name"]:
                    assert "secretKeyRef" in var.get("valueFrom", {}), (workload["metadata"]["name"], var)
                    referenced.add((var["valueFrom"]["secretKeyRef"]["name"], var["valueFrom"]["secretKeyRef"]["key"]))
    assert referenced == {("cars-postgres", "username"), ("cars-postgres", "password")}


def test_the_api_service_and_probes_use_the_port_the_api_listens_on(base: list[dict[str, Any]]) -> None:
    configmaps = by_kind(base, "ConfigMap")
    api = by_kind(base, "Deployment")["cars-api"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env(container_env(container, configmaps))
    [port] = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", settings.http_port)
    assert settings.http_host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = by_kind(base, "Service")["cars-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]


def test_every_worker_has_probes_that_run_cars_probe_and_resources(base: list[dict[str, Any]]) -> None:
    for name, _, container in cars_containers(base):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (name, probe)
            if role_of(container) is not None:
                command = container[probe]["exec"]["command"]
                assert command[0] == "cars" and parse_cars(command[1:])[0] == "probe", (name, command)
                # The probe finds the worker by CARS_CONSUMER, which both processes read from the pod name
                env = {v["name"]: v for v in container["env"]}
                assert env["CARS_CONSUMER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_pods_run_as_the_images_non_root_user(base: list[dict[str, Any]]) -> None:
    for name, pod, container in cars_containers(base):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER == dockerfile_user(), name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/cars", "/tmp"} <= mounts  # writable CARS_HOME and tmp on a read-only root


def test_every_deployment_has_a_disruption_budget_and_the_autoscalers_target_real_ones(
    base: list[dict[str, Any]],
) -> None:
    deployments = by_kind(base, "Deployment")
    budgets = by_kind(base, "PodDisruptionBudget")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, name
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for hpa in by_kind(base, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        container = deployments[target["name"]]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["cpu"]  # utilization needs a request


KEDA_SPEC = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "cooldownPeriod", "pollingInterval",
             "fallback", "triggers", "advanced", "idleReplicaCount", "initialCooldownPeriod"}
KEDA_REDIS_STREAMS = {"address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "stream",
                      "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
                      "databaseIndex", "enableTLS", "usernameFromEnv", "passwordFromEnv"}


def test_keda_scales_each_role_on_the_lag_of_the_groups_it_really_reads(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]],
) -> None:
    subscriptions = actor_subscriptions()
    deployments = by_kind(base, "Deployment")
    redis_url = urlparse(by_kind(base, "ConfigMap")["cars-config"]["data"]["REDIS_URL"])
    scaled = by_kind(overlay, "ScaledObject")
    assert scaled
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert set(so["spec"]) <= KEDA_SPEC, set(so["spec"]) - KEDA_SPEC
        target = so["spec"]["scaleTargetRef"]["name"]
        role = role_of(deployments[target]["spec"]["template"]["spec"]["containers"][0])
        assert role in runtime.ACTORS
        redis_triggers = [t for t in so["spec"]["triggers"] if t["type"] == "redis-streams"]
        assert redis_triggers and {t["type"] for t in so["spec"]["triggers"]} <= {"redis-streams", "cpu"}
        for trigger in redis_triggers:
            meta = trigger["metadata"]
            assert set(meta) <= KEDA_REDIS_STREAMS, set(meta) - KEDA_REDIS_STREAMS
            # A stream and group this role's workers consume (the group is the actor's name)
            assert (meta["stream"], meta["consumerGroup"]) in subscriptions[role], (name, meta)
            assert meta["consumerGroup"] == role
            assert int(meta["lagCount"]) >= 1
            # The Redis the pods use (the operator resolves it from its own namespace)
            assert meta["address"] == f"{redis_url.hostname}.{NAMESPACE}.svc.cluster.local:{redis_url.port}"
            assert meta["databaseIndex"] == redis_url.path.lstrip("/")
        assert so["spec"]["fallback"]["replicas"] >= 1
    # Never two autoscalers on one Deployment: the overlay deletes the base HPA of every KEDA target
    deleted = {p["target"]["name"] for p in yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["patches"]
               if "$patch: delete" in p.get("patch", "")}
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()}
    assert targets <= deleted | (set(deployments) - set(by_kind(base, "HorizontalPodAutoscaler")))
    assert deleted <= set(by_kind(base, "HorizontalPodAutoscaler"))


def test_the_stream_names_in_the_manifests_exist() -> None:
    # The streams the KEDA triggers name are the constants of bus/streams.py
    named = set(re.findall(r"stream: (\S+)", (OVERLAY / "keda.yaml").read_text()))
    assert named <= {streams.INGEST, streams.COMMANDS, *streams.ALL_EVENT_STREAMS}, named


def test_the_rbac_file_keeps_the_rules_the_kubernetes_backend_is_built_against() -> None:
    role = by_kind(load_all(BASE / "rbac.yaml"), "ClusterRole")["cars-provisioner"]
    rules = {(g, r): tuple(rule["verbs"])
             for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    crud = ("get", "list", "watch", "create", "delete")
    assert rules == {
        ("", "namespaces"): crud, **{("", r): crud for r in (
            "resourcequotas", "limitranges", "services", "configmaps", "secrets", "pods")},
        ("", "pods/log"): ("get",), ("apps", "deployments"): crud, ("batch", "jobs"): crud,
        ("networking.k8s.io", "networkpolicies"): crud,
    }


# ============================================================================= tests: Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def dockerfile_user() -> int:
    [user] = [rest for word, rest in final_stage() if word == "USER"]
    return int(user.split(":")[0])


def test_the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages)
    final = final_stage()
    assert any(word == "COPY" and rest.startswith("--from=build") for word, rest in final)
    assert dockerfile_user() != 0
    # The user is created with that uid in the same stage
    assert any(word == "RUN" and f"--uid {dockerfile_user()}" in rest for word, rest in final)


def test_the_dockerfile_copies_every_package_the_project_installs() -> None:
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copies = [shlex.split(rest) for word, rest in dockerfile_instructions() if word == "COPY" and "--from" not in rest]
    assert {p.rstrip("*") for p in include} <= {words[0] for words in copies}
    assert {"pyproject.toml", "README.md"} <= {w for words in copies for w in words}


def test_the_dockerfile_healthcheck_and_port_match_the_api() -> None:
    final = final_stage()
    [health] = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "/health" in health and "CARS_HTTP_PORT" in health
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for word, rest in final if word == "ENV")))
    assert Settings.from_env(env).http_port == 8080
    assert [rest for word, rest in final if word == "EXPOSE"] == [env["CARS_HTTP_PORT"]]
    [entrypoint] = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for word, rest in final if word == "CMD"]
    assert entrypoint[-1] == "cars" and parse_cars(cmd)[0] == "up"


def healthcheck_command() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    [health] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    return list(json.loads(health.split(" CMD ", 1)[1]))


# ============================================================================= tests: compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_compose_has_redis_postgres_the_api_and_one_worker_per_actor(compose: dict[str, Any]) -> None:
    services = compose["services"]
    roles = {}
    for name, service in services.items():
        if "command" in service and service.get("image", "").startswith("${CARS_IMAGE"):
            command, params = parse_cars(service["command"])
            roles[name] = params["actors"] if command == "worker" else f"{command} {params['actors']}"
    assert roles == {"api": "up none", **{a: a for a in runtime.ACTORS}}
    assert {"redis", "postgres"} <= set(services)


def test_compose_services_get_settings_cars_reads_and_secrets_from_the_env_file(compose: dict[str, Any]) -> None:
    example = env_file(DEPLOY / "cars.env.example")
    assert set(example) == {"POSTGRES_USER", "POSTGRES_PASSWORD"}
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert "deploy/cars.env" in gitignore
    known = settings_variables()
    redis_host = "redis"
    for name in ("api", *runtime.ACTORS):
        service = compose["services"][name]
        assert service["env_file"] == ["cars.env"]
        env = {**example, **{k: str(v) for k, v in service["environment"].items()}}
        assert set(env) <= known, set(env) - known
        assert not [k for k in service["environment"] if "PASSWORD" in k]  # only in the env file
        settings = Settings.from_env(env)
        assert settings.store == "postgres" and urlparse(settings.redis_url or "").hostname == redis_host
        assert settings.store_env()["POSTGRES_HOST"] in compose["services"]
        assert set(service["depends_on"]) == {"redis", "postgres"}
    # The database the postgres container creates is the one CARS opens
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] == \
        compose["services"]["api"]["environment"]["POSTGRES_DBNAME"]


def test_compose_healthchecks_probe_the_api_and_the_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api = services["api"]["healthcheck"]["test"]
    assert api[0] == "CMD" and "/ready" in " ".join(api)
    port = Settings.from_env({}).http_port
    assert services["api"]["ports"] == [f"127.0.0.1:{port}:{port}"] and f":{port}/ready" in " ".join(api)
    for role in runtime.ACTORS:
        test = services[role]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "cars"] and parse_cars(test[2:])[0] == "probe"
    # Validator and provisioner share CARS_HOME: the sandboxes one makes, the other runs tests in
    assert services["validator"]["volumes"] == services["provisioner"]["volumes"]
    assert any(v.endswith(":/var/lib/cars") for v in services["validator"]["volumes"])
