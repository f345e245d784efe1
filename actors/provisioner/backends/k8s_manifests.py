"""The Kubernetes objects of one environment, built as plain JSON-native dicts (camelCase, as the API
server takes them). Pure: no I/O, no clock. The Kubernetes backend sends them as they are; the tests
deserialize every one of them strictly into the client library's models.

One environment is one namespace `cars-env-<environment id>`, holding:
- a ResourceQuota and a LimitRange from the template's quota,
- a NetworkPolicy that admits traffic only from pods of the same namespace,
- a Deployment and a Service per template service, with a TCP readiness probe on the service port,
- a Secret `cars-environment` with the variables a test run needs (service URLs), read by each Job,
- per test run: a Secret with the workspace as a tar.gz and a Job that unpacks it in an init container
  and runs the command in it.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from actors.provisioner.backends.k8s_git import CLONE_SCRIPT, PATCH_KEY
from contracts.values import Quota, ResourceLimits, ServiceKind, ServiceSpec, TemplateSpec

Manifest = dict[str, Any]

NAMESPACE_PREFIX = "cars-env-"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "cars"
LABEL_ENV_ID = "cars.dev/environment-id"
LABEL_EXPIRES = "cars.dev/expires-at"  # Unix seconds: label values may not hold an ISO timestamp's ':'
LABEL_PREFIX = "cars.dev/"
ANNOTATION_EXPIRES = "cars.dev/expires-at-iso"
ANNOTATION_TEMPLATE = "cars.dev/template"
ANNOTATION_RUNNER = "cars.dev/runner-image"  # the template's test-runner image, for the Jobs
LABEL_SERVICE = "cars.dev/service"
LABEL_RUN = "cars.dev/run"
ENV_SECRET = "cars-environment"
QUOTA_NAME = "cars-quota"
LIMITS_NAME = "cars-limits"
POLICY_NAME = "cars-same-namespace-only"
WORKSPACE_KEY = "workspace.tar.gz"
EXTRA_KEY = "extra.tar.gz"
EXTRA_SCRIPT = 'if [ -s "$2/extra.tar.gz" ]; then tar -xzf "$2/extra.tar.gz" -C "$1"; fi\n'
#: The image of the init container that clones a large workspace (it needs git and sh).
GIT_IMAGE = "alpine/git:v2.47.2"


@frozen(kw_only=True)
class GitCheckout:
    """Rebuild the workspace in the pod from a clone of `url` at `commit` (plus the Secret's patch)."""

    url: str
    commit: str
    image: str = GIT_IMAGE
WORKSPACE_MOUNT = "/workspace"
ARCHIVE_MOUNT = "/cars/archive"
RUN_CONTAINER = "run"
UNPACK_CONTAINER = "unpack"
#: The API server refuses a Secret (or ConfigMap) whose data exceeds 1 MiB (decoded).
MAX_OBJECT_DATA_BYTES = 1024 * 1024
#: What each test-run container may use. The init container unpacks; it needs little.
UNPACK_RESOURCES = ResourceLimits(cpu="100m", memory="128Mi")

_DNS1123_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ManifestError(ValueError):
    """Input that cannot become a valid Kubernetes object (a bad name, say)."""


def namespace_name(env_id: uuid.UUID) -> str:
    return f"{NAMESPACE_PREFIX}{env_id}"


def env_id_of(namespace: Mapping[str, Any]) -> uuid.UUID | None:
    """The environment id a namespace (as JSON) is labelled with, or None if it is not one of ours."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY) != MANAGER:
        return None
    try:
        return uuid.UUID(str(labels.get(LABEL_ENV_ID, "")))
    except ValueError:
        return None


def expiry_of(namespace: Mapping[str, Any]) -> dt.datetime | None:
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    try:
        return dt.datetime.fromtimestamp(int(labels[LABEL_EXPIRES]), dt.UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63]
    return value.strip("-_.")


def dns_label(name: str, what: str) -> str:
    if len(name) > 63 or not _DNS1123_LABEL.match(name):
        raise ManifestError(f"{what} {name!r} is not a valid Kubernetes name (lower-case letters, digits and "
                            "'-', starting with a letter, at most 63 characters)")
    return name


def selector(labels: Mapping[str, str]) -> str:
    """A label selector string matching every one of `labels`."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


MANAGED_SELECTOR = selector({MANAGED_BY: MANAGER})


def namespace(
    env_id: uuid.UUID, *, labels: Mapping[str, str], expires_at: dt.datetime, template: TemplateSpec,
) -> Manifest:
    """The environment's namespace, labelled so a restarted CARS finds it by label alone."""
    own: dict[str, str] = {}
    for key, value in labels.items():
        full = key if "/" in key else LABEL_PREFIX + key
        if len(full.rpartition("/")[2]) > 63 or not _LABEL_KEY.match(full):
            raise ManifestError(f"label key {key!r} is not a valid Kubernetes label key")
        own[full] = label_value(str(value))
    own.update({
        MANAGED_BY: MANAGER,
        LABEL_ENV_ID: str(env_id),
        LABEL_EXPIRES: str(math.ceil(expires_at.timestamp())),
    })
    return {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": namespace_name(env_id), "labels": own,
            "annotations": {
                ANNOTATION_EXPIRES: expires_at.astimezone(dt.UTC).isoformat(),
                ANNOTATION_TEMPLATE: f"{template.name}@{template.version}",
                ANNOTATION_RUNNER: template.runner_image,
            },
        },
    }


def resource_quota(quota: Quota) -> Manifest:
    """Everything in the namespace together may request and use at most the template's quota."""
    return {
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME},
        "spec": {"hard": {
            "requests.cpu": quota.cpu, "requests.memory": quota.memory,
            "limits.cpu": quota.cpu, "limits.memory": quota.memory, "pods": str(quota.pods),
        }},
    }


def limit_range(quota: Quota) -> Manifest:
    """Defaults for a container that names no resources (the quota then still admits it), and a cap:
    no one container may ask for more than the whole quota."""
    return {
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": LIMITS_NAME},
        "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "512Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
            "max": {"cpu": quota.cpu, "memory": quota.memory},
        }]},
    }


def network_policy() -> Manifest:
    """Ingress to every pod only from pods of this namespace: other namespaces (other environments,
    other tenants) cannot reach its services. Egress stays open (images, package indexes)."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
    }


def image_ref(service: ServiceSpec) -> str:
    """`image:version`, unless the image already names a tag or a digest."""
    last = service.image.rsplit("/", 1)[-1]
    if "@" in service.image or ":" in last:
        return service.image
    return f"{service.image}:{service.version}"


def _resources(limits: ResourceLimits) -> Manifest:
    # Requests equal limits: the pod is Guaranteed, and the quota counts exactly what it may use.
    amounts = {"cpu": limits.cpu, "memory": limits.memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env_list(env: Mapping[str, str]) -> list[Manifest]:
    for name in env:
        if not _ENV_NAME.match(name):
            raise ManifestError(f"environment variable name {name!r} is not valid")
    return [{"name": k, "value": str(v)} for k, v in sorted(env.items())]


def deployment(service: ServiceSpec) -> Manifest:
    """One replica of the service, ready when its port accepts connections."""
    name = dns_label(service.name, "service name")
    labels = {LABEL_SERVICE: name}
    container = {
        "name": name, "image": image_ref(service),
        "ports": [{"containerPort": service.port, "protocol": "TCP"}],
        "env": _env_list(service.env),
        "resources": _resources(service.resources),
        "readinessProbe": {
            "tcpSocket": {"port": service.port}, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 3,
        },
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [container], "automountServiceAccountToken": False},
            },
        },
    }


def service(service: ServiceSpec) -> Manifest:
    name = dns_label(service.name, "service name")
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {LABEL_SERVICE: name}},
        "spec": {
            "selector": {LABEL_SERVICE: name},
            "ports": [{"name": "main", "port": service.port, "targetPort": service.port, "protocol": "TCP"}],
        },
    }


def service_env(template: TemplateSpec, ns: str) -> dict[str, str]:
    """The variables a test run gets: a URL per service (the first service of a kind also under the
    kind's usual name: DATABASE_URL, REDIS_URL, ...), reached through the cluster's DNS."""
    env: dict[str, str] = {}
    seen: set[ServiceKind] = set()
    for svc in template.services:
        host = f"{svc.name}.{ns}.svc"
        port = svc.port
        conventional: dict[str, str]
        if svc.kind is ServiceKind.POSTGRES:
            user = svc.env.get("POSTGRES_USER", "postgres")
            password = svc.env.get("POSTGRES_PASSWORD", "")
            db = svc.env.get("POSTGRES_DB", user)
            auth = f"{user}:{password}" if password else user
            url = f"postgresql://{auth}@{host}:{port}/{db}"
            conventional = {"DATABASE_URL": url, "POSTGRES_URL": url, "PGHOST": host, "PGPORT": str(port),
                            "PGUSER": user, "PGDATABASE": db}
            if password:
                conventional["PGPASSWORD"] = password
        elif svc.kind is ServiceKind.REDIS:
            url = f"redis://{host}:{port}/0"
            conventional = {"REDIS_URL": url}
        elif svc.kind is ServiceKind.MYSQL:
            password = svc.env.get("MYSQL_ROOT_PASSWORD", "")
            db = svc.env.get("MYSQL_DATABASE", "mysql")
            url = f"mysql://root{':' + password if password else ''}@{host}:{port}/{db}"
            conventional = {"MYSQL_URL": url}
        else:
            user = svc.env.get("MONGO_INITDB_ROOT_USERNAME", "")
            password = svc.env.get("MONGO_INITDB_ROOT_PASSWORD", "")
            auth = f"{user}:{password}@" if user else ""
            url = f"mongodb://{auth}{host}:{port}/"
            conventional = {"MONGODB_URL": url}
        env[f"CARS_SERVICE_{svc.name.upper().replace('-', '_')}_URL"] = url
        if svc.kind not in seen:
            seen.add(svc.kind)
            env.update(conventional)
    return env


def env_secret(env: Mapping[str, str]) -> Manifest:
    """The environment's variables, kept in the cluster: each Job reads them (`envFrom`), and a restarted
    CARS can read them back."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": ENV_SECRET},
        "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in sorted(env.items())},
    }


def workspace_secret(name: str, archive: bytes) -> Manifest:
    """The patched workspace as a tar.gz. A Secret rather than a ConfigMap: a repository may hold
    credentials, and Secrets are the objects clusters encrypt at rest and guard by RBAC."""
    return _run_secret(name, {WORKSPACE_KEY: archive}, "the workspace archive")


def git_workspace_secret(name: str, patch: bytes, extra: bytes) -> Manifest:
    """For a workspace rebuilt from a git clone: the patch that turns the commit into the workspace,
    and a tar.gz of the files added to the shipped copy only."""
    return _run_secret(name, {PATCH_KEY: patch, EXTRA_KEY: extra}, "the workspace patch")


def _run_secret(name: str, files: Mapping[str, bytes], what: str) -> Manifest:
    size = sum(len(v) for v in files.values())
    if size > MAX_OBJECT_DATA_BYTES:
        raise ManifestError(f"{what} is {size} bytes; a Secret holds at most {MAX_OBJECT_DATA_BYTES}")
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": dns_label(name, "secret name"), "labels": {LABEL_RUN: name}},
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in files.items()},
    }


def job(
    name: str, *, runner_image: str, command: Sequence[str], env: Mapping[str, str], archive_secret: str,
    timeout_s: float, resources: ResourceLimits, git: GitCheckout | None = None,
) -> Manifest:
    """One test run: an init container unpacks the workspace archive into an emptyDir (or, with `git`,
    clones the repository at its commit there and applies the patch from the Secret), then the runner
    image runs `command` there, with the environment's variables (`envFrom` the environment Secret) and
    `env` on top. Never retried (the caller decides), killed after `timeout_s`."""
    if not command:
        raise ManifestError("the command of a test run is empty")
    name = dns_label(name, "job name")
    labels = {LABEL_RUN: name}
    mounts = [{"name": "workspace", "mountPath": WORKSPACE_MOUNT}]
    unpack: dict[str, Any] = {
        "name": UNPACK_CONTAINER, "image": runner_image,
        "command": ["tar", "-xzf", f"{ARCHIVE_MOUNT}/{WORKSPACE_KEY}", "-C", WORKSPACE_MOUNT],
        "volumeMounts": [*mounts, {"name": "archive", "mountPath": ARCHIVE_MOUNT, "readOnly": True}],
        "resources": _resources(UNPACK_RESOURCES),
    }
    if git is not None:
        unpack.update({
            "image": git.image,
            "command": ["sh", "-c", CLONE_SCRIPT + EXTRA_SCRIPT, "sh", WORKSPACE_MOUNT, ARCHIVE_MOUNT],
            "env": _env_list({"CARS_GIT_URL": git.url, "CARS_GIT_COMMIT": git.commit}),
        })
    run = {
        "name": RUN_CONTAINER, "image": runner_image, "command": [str(c) for c in command],
        "workingDir": WORKSPACE_MOUNT,
        "env": _env_list(env),
        "envFrom": [{"secretRef": {"name": ENV_SECRET, "optional": True}}],
        "volumeMounts": mounts,
        "resources": _resources(resources),
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(timeout_s)),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "initContainers": [unpack],
                    "containers": [run],
                    "volumes": [
                        {"name": "workspace", "emptyDir": {}},
                        {"name": "archive", "secret": {"secretName": archive_secret}},
                    ],
                },
            },
        },
    }


__all__ = [
    "ANNOTATION_EXPIRES",
    "ANNOTATION_RUNNER",
    "ENV_SECRET",
    "EXTRA_KEY",
    "GIT_IMAGE",
    "LABEL_ENV_ID",
    "LABEL_EXPIRES",
    "LABEL_RUN",
    "LABEL_SERVICE",
    "MANAGED_BY",
    "MANAGED_SELECTOR",
    "MANAGER",
    "MAX_OBJECT_DATA_BYTES",
    "PATCH_KEY",
    "RUN_CONTAINER",
    "GitCheckout",
    "Manifest",
    "ManifestError",
    "deployment",
    "dns_label",
    "env_id_of",
    "env_secret",
    "expiry_of",
    "git_workspace_secret",
    "image_ref",
    "job",
    "label_value",
    "limit_range",
    "namespace",
    "namespace_name",
    "network_policy",
    "resource_quota",
    "selector",
    "service",
    "service_env",
    "workspace_secret",
]
