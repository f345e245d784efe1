"""The Kubernetes manifests the backend builds: every one decodes strictly into the client library's models
(an unknown field or a wrong type fails), and carries what the design asks for."""

from __future__ import annotations

import base64
import datetime as dt
import io
import tarfile
import uuid
import zlib
from pathlib import Path

import attrs
import pytest

from actors.provisioner.backends import k8s_manifests as m
from actors.provisioner.backends.kubernetes import _environment_manifests, pack_workspace
from actors.validator.job_runner import BEGIN, END, split_report
from contracts.values import Quota, ResourceLimits, ServiceKind, ServiceSpec, TemplateSpec
from tests.fakes.k8s_apiserver import ManifestInvalid, strict_check

MODEL = {
    "Namespace": "V1Namespace", "ResourceQuota": "V1ResourceQuota", "LimitRange": "V1LimitRange",
    "NetworkPolicy": "V1NetworkPolicy", "Secret": "V1Secret", "Service": "V1Service",
    "Deployment": "V1Deployment", "Job": "V1Job",
}
ENV_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
EXPIRES = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def full_stack() -> TemplateSpec:
    pg = ServiceSpec(name="postgres", kind=ServiceKind.POSTGRES, image="postgres", version="16", port=5432,
                     env={"POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "app"})
    redis = ServiceSpec(name="redis", kind=ServiceKind.REDIS, image="docker.io/library/redis", version="7", port=6379,
                        resources=ResourceLimits(cpu="250m", memory="128Mi"))
    return TemplateSpec(name="full-stack", version="2", services=(pg, redis),
                        quota=Quota(cpu="3", memory="6Gi", pods=7))


def all_manifests() -> list[m.Manifest]:
    built = _environment_manifests(ENV_ID, full_stack(), {"repair": "r-1"}, EXPIRES)
    built.append(m.workspace_secret("cars-run-1", b"\x1f\x8b archive"))
    built.append(m.job("cars-run-1", runner_image="python:3.11-slim", command=["python", "-m", "pytest"],
                       env={"CARS_X": "1"}, archive_secret="cars-run-1", timeout_s=90.5,
                       resources=ResourceLimits(cpu="1", memory="1Gi")))
    return built


@pytest.mark.parametrize("manifest", all_manifests(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_every_manifest_decodes_strictly_into_its_model(manifest: m.Manifest) -> None:
    strict_check(manifest, MODEL[manifest["kind"]])


def test_the_strict_check_refuses_an_unknown_field_and_a_wrong_type() -> None:
    # Given a valid Deployment with a misspelt field, and one with a port given as text
    dep = m.deployment(full_stack().services[0])
    dep["spec"]["replica"] = 1
    with pytest.raises(ManifestInvalid, match=r"V1Deployment.spec: unknown field 'replica'"):
        strict_check(dep, "V1Deployment")
    dep = m.deployment(full_stack().services[0])
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5432"
    with pytest.raises(ManifestInvalid, match=r"containerPort: expected int"):
        strict_check(dep, "V1Deployment")


def test_an_environment_is_one_labelled_namespace_and_what_goes_in_it() -> None:
    built = _environment_manifests(ENV_ID, full_stack(), {"repair": "r-1", "purpose": "heal: x/y"}, EXPIRES)
    assert [b["kind"] for b in built] == ["Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "Secret",
                                          "Service", "Deployment", "Service", "Deployment"]
    ns = built[0]["metadata"]
    assert ns["name"] == "cars-env-12345678-1234-5678-1234-567812345678"
    assert ns["labels"] == {
        "app.kubernetes.io/managed-by": "cars", "cars.dev/environment-id": str(ENV_ID),
        "cars.dev/expires-at": str(int(EXPIRES.timestamp())), "cars.dev/repair": "r-1", "cars.dev/purpose": "heal-x-y",
    }
    assert m.env_id_of(built[0]) == ENV_ID and m.expiry_of(built[0]) == EXPIRES
    assert m.env_id_of({"metadata": {"labels": {"cars.dev/environment-id": str(ENV_ID)}}}) is None  # not ours
    assert built[1]["spec"]["hard"] == {"requests.cpu": "3", "requests.memory": "6Gi", "limits.cpu": "3",
                                        "limits.memory": "6Gi", "pods": "7"}


def test_deployments_are_probed_and_sized_and_services_route_to_them() -> None:
    pg, redis = full_stack().services
    dep = m.deployment(redis)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/library/redis:7"
    assert container["readinessProbe"]["tcpSocket"] == {"port": 6379}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"},
                                      "limits": {"cpu": "250m", "memory": "128Mi"}}
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    svc = m.service(redis)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert m.deployment(pg)["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "POSTGRES_DB", "value": "app"}, {"name": "POSTGRES_PASSWORD", "value": "pw"}]


def test_service_urls_use_cluster_dns_and_the_services_credentials() -> None:
    ns = m.namespace_name(ENV_ID)
    env = m.service_env(full_stack(), ns)
    assert env["DATABASE_URL"] == f"postgresql://postgres:pw@postgres.{ns}.svc:5432/app"
    assert env["PGPASSWORD"] == "pw" and env["PGHOST"] == f"postgres.{ns}.svc"
    assert env["REDIS_URL"] == f"redis://redis.{ns}.svc:6379/0"
    assert env["CARS_SERVICE_REDIS_URL"] == env["REDIS_URL"]
    secret = m.env_secret(env)
    assert base64.b64decode(secret["data"]["REDIS_URL"]).decode() == env["REDIS_URL"]


def test_the_job_unpacks_the_workspace_then_runs_the_command_in_it() -> None:
    job = m.job("cars-run-1", runner_image="python:3.11-slim", command=["pytest", "-q"], env={"A": "1"},
                archive_secret="cars-run-1", timeout_s=90.5, resources=ResourceLimits(cpu="1", memory="1Gi"))
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 91
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (unpack,) = pod["initContainers"]
    (run,) = pod["containers"]
    assert unpack["command"] == ["tar", "-xzf", "/cars/archive/workspace.tar.gz", "-C", "/workspace"]
    assert run["command"] == ["pytest", "-q"] and run["workingDir"] == "/workspace"
    assert run["envFrom"] == [{"secretRef": {"name": "cars-environment", "optional": True}}]
    assert {v["name"]: v for v in pod["volumes"]}["archive"] == {"name": "archive",
                                                                 "secret": {"secretName": "cars-run-1"}}


@pytest.mark.parametrize(("name", "ok"), [("redis", True), ("my-db2", True), ("Redis", False), ("db_1", False),
                                          ("-x", False), ("a.b", False)])
def test_service_names_must_be_kubernetes_names(name: str, ok: bool) -> None:
    def spec() -> ServiceSpec:
        return ServiceSpec(name=name, kind=ServiceKind.REDIS, image="redis", version="7", port=6379)

    if ok:
        assert m.deployment(spec())["metadata"]["name"] == name
        return
    # The contract refuses such a name; a spec made without its checks is still refused here
    with pytest.raises(ValueError, match="must be a DNS label"):
        spec()
    with attrs.validators.disabled():
        unchecked = spec()
    with pytest.raises(m.ManifestError, match="not a valid Kubernetes name"):
        m.deployment(unchecked)


def test_image_refs_keep_an_explicit_tag_or_digest() -> None:
    def ref(image: str) -> str:
        return m.image_ref(ServiceSpec(name="s", kind=ServiceKind.REDIS, image=image, version="7", port=1))

    assert ref("redis") == "redis:7"
    assert ref("registry:5000/redis") == "registry:5000/redis:7"
    assert ref("redis:6.2") == "redis:6.2"
    assert ref("redis@sha256:abc") == "redis@sha256:abc"


def test_a_workspace_over_the_secret_limit_is_refused() -> None:
    m.workspace_secret("ok", b"x" * m.MAX_OBJECT_DATA_BYTES)
    with pytest.raises(m.ManifestError, match="at most 1048576"):
        m.workspace_secret("big", b"x" * (m.MAX_OBJECT_DATA_BYTES + 1))


def test_bad_labels_and_env_names_are_refused() -> None:
    with pytest.raises(m.ManifestError, match="label key"):
        m.namespace(ENV_ID, labels={"bad key": "x"}, expires_at=EXPIRES, template=full_stack())
    with pytest.raises(m.ManifestError, match="environment variable name"):
        m.job("j", runner_image="i", command=["x"], env={"1=2": "x"}, archive_secret="j", timeout_s=1,
              resources=ResourceLimits())
    assert m.label_value("-" + "a" * 80) == "a" * 62


def test_pack_workspace_leaves_out_caches_and_keeps_paths_relative(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"junk")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big").write_bytes(b"0" * 1000)
    with tarfile.open(fileobj=io.BytesIO(pack_workspace(tmp_path)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["pkg/mod.py"]


def test_the_report_is_split_from_the_logs_of_a_job() -> None:
    report = b'{"collected": 1, "results": []}'
    encoded = base64.b64encode(zlib.compress(report)).decode()
    logs = f"1 passed\n\n{BEGIN}\n{encoded}\n{END}\n"
    assert split_report(logs) == ("1 passed\n", report)
    assert split_report("no report here\n") == ("no report here\n", None)
    cut = f"out\n{BEGIN}\n{encoded[:10]}"  # the logs were cut off before the end marker
    assert split_report(cut) == (cut, None)
