"""The Kubernetes backend with the real kubernetes-asyncio client against a FAKE API server on loopback
(tests/fakes/k8s_apiserver.py says what the fake models and what it does not). There is no cluster here.

Every test's fake records each (apiGroup, resource, verb) it served; the `fake` fixture checks on teardown
that deploy/k8s/base/rbac.yaml allows each one, so any new call the backend makes must be granted there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiException

from actors.errors import Rejected
from actors.provisioner import environments as envs
from actors.provisioner.backends import k8s_manifests as m
from actors.provisioner.backends.k8s_calls import CallPolicy
from actors.provisioner.backends.kubernetes import (
    KubernetesBackend,
    KubeTuning,
    QuotaExceeded,
    ServiceNotReady,
    WorkspaceTooLarge,
)
from actors.provisioner.errors import BackendUnavailable, ProvisionError
from actors.validator import router as validator
from actors.validator.validate import validate_candidate
from contracts import Envelope
from contracts.environments import (
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentRequested,
    ReleaseEnvironment,
)
from contracts.repairs import HealProposed, HealRequested, HealValidated
from contracts.values import (
    FailureClass,
    MutationVerdict,
    Quota,
    ResourceLimits,
    ServiceKind,
    ServiceSpec,
    TemplateSpec,
)
from tests.fakes.k8s_apiserver import FakeKubeApiServer

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "rbac.yaml"

TUNING = KubeTuning(
    calls=CallPolicy(request_timeout_s=2.0, attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05,
                     breaker_threshold=3, breaker_reset_s=0.5),
    ready_timeout_s=3.0, delete_timeout_s=3.0, job_start_grace_s=10.0,
)


def rbac_allowed(role: str = "cars-provisioner") -> set[tuple[str, str, str]]:
    allowed = set()
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == role:
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            allowed.add((group, resource, verb))
    return allowed


def not_allowed(calls: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return set(calls) - rbac_allowed()


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubeApiServer]:
    server = FakeKubeApiServer(terminating_s=0.3, ready_delay_s=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
    assert not_allowed(server.calls) == set(), "calls the provisioner's RBAC does not allow"


@pytest.fixture
async def backend(fake: FakeKubeApiServer, tmp_path: Path) -> AsyncIterator[KubernetesBackend]:
    b = KubernetesBackend(tmp_path / "home", host=fake.url, tuning=TUNING)
    yield b
    await b.aclose()


def redis_template(
    *, cpu: str = "500m", quota: Quota | None = None, extra: tuple[ServiceSpec, ...] = (),
) -> TemplateSpec:
    redis = ServiceSpec(name="redis", kind=ServiceKind.REDIS, image="redis", version="7", port=6379,
                        resources=ResourceLimits(cpu=cpu, memory="256Mi"))
    return TemplateSpec(name="python-redis", version="1", services=(redis, *extra),
                        quota=quota or Quota(cpu="2", memory="4Gi", pods=5))


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "tests" / "test_calc.py").write_text(
        "import os\nfrom calc import add\n\n"
        "def test_add():\n    assert add(2, 2) == 4\n\n"
        "def test_env():\n    assert os.environ['REDIS_URL'].startswith('redis://redis.cars-env-')\n\n"
        "def test_broken():\n    assert add(1, 1) == 3\n"
    )
    (repo / "conftest.py").write_text("import sys, os\nsys.path.insert(0, os.path.dirname(__file__))\n")
    return repo


async def wait_gone(fake: FakeKubeApiServer, ns: str, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while ns in fake.namespaces():  # noqa: ASYNC110  (the fake's state has no Event to wait on)
            await asyncio.sleep(0.02)


# -- happy path ----------------------------------------------------------------------------------------------


async def test_create_run_release(fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path) -> None:
    # Given a repository and a template with Redis
    repo = make_repo(tmp_path)
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)

    # When the environment is created
    made = await backend.create(env_id, template=redis_template(), repo_path=str(repo), ttl_s=600,
                                labels={"repair": "repair-123"})

    # Then the namespace carries the environment id, the repair and its expiry, and holds everything
    labels = fake.namespaces()[ns]["metadata"]["labels"]
    assert labels[m.LABEL_ENV_ID] == str(env_id)
    assert labels["cars.dev/repair"] == "repair-123"
    assert abs(int(labels[m.LABEL_EXPIRES]) - made.expires_at.timestamp()) <= 1
    assert [q["spec"]["hard"]["requests.cpu"] for q in fake.objects_of("resourcequotas", ns)] == ["2"]
    assert len(fake.objects_of("limitranges", ns)) == 1
    assert [p["spec"]["ingress"] for p in fake.objects_of("networkpolicies", ns)] == [[{"from": [{"podSelector": {}}]}]]
    deployment = fake.objects[("deployments", ns, "redis")]
    assert deployment["status"]["readyReplicas"] == 1
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["tcpSocket"] == {"port": 6379}
    assert ("services", ns, "redis") in fake.objects
    assert made.service_urls["REDIS_URL"] == f"redis://redis.{ns}.svc:6379/0"
    copied = Path(made.workspace) / "tests" / "test_calc.py"
    assert copied.read_text() == (repo / "tests" / "test_calc.py").read_text()

    # When the patched workspace's tests run as a Job (the fake runs the command for real)
    (Path(made.workspace) / "calc.py").write_text("def add(a, b):\n    return a + b  # patched\n")
    served_before = len(fake.calls)
    result = await backend.run_job(
        env_id, workspace=Path(made.workspace),
        command=[sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                 "-o", "addopts=", "-W", "ignore"],
        env={"CARS_MARK": "x"}, timeout_s=60,
    )

    # Then its exit code and logs are the evidence: the service URL arrived, one test fails
    assert result.exit_code == 1, result.logs
    assert "1 failed, 2 passed" in result.logs
    assert "test_broken" in result.logs
    assert not result.timed_out
    # and the run's Job and Secret are gone; the Job pod's workspace had the patched file
    assert fake.objects_of("jobs", ns) == []
    assert [s["metadata"]["name"] for s in fake.objects_of("secrets", ns)] == [m.ENV_SECRET]
    unpacked = [w / "volumes" / "workspace" / "calc.py" for w in fake.job_workdirs]
    assert any(p.is_file() and "# patched" in p.read_text() for p in unpacked)
    # and the Job's calls are all the validator's role allows (it runs them, as its own service account)
    job_calls = set(fake.calls[served_before:])
    assert ("batch", "jobs", "create") in job_calls and job_calls - rbac_allowed("cars-validator") == set()

    # When it is released: foreground deletion, Terminating for a moment, then gone
    assert await backend.release(env_id) is True
    assert ("namespaces", ns, "Foreground") in fake.deletes
    assert fake.namespaces()[ns]["status"]["phase"] == "Terminating"
    assert not Path(made.workspace).exists()  # noqa: ASYNC240
    await wait_gone(fake, ns)
    assert fake.objects_of("deployments", ns) == []
    assert await backend.release(env_id) is False


async def test_create_is_idempotent(fake: FakeKubeApiServer, backend: KubernetesBackend) -> None:
    # Given an environment already created (a redelivered request creates it again)
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)
    first = await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    creates_before = [c for c in fake.calls if c[2] == "create"]

    # When it is created again
    second = await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})

    # Then every object was answered 409 and nothing new exists
    assert second.service_urls == first.service_urls and second.workspace == first.workspace
    assert [c for c in fake.calls if c[2] == "create"][len(creates_before):] == creates_before
    assert len(fake.objects_of("deployments", ns)) == 1 and len(fake.objects_of("pods", ns)) == 1


async def test_create_after_release_waits_for_termination(fake: FakeKubeApiServer, backend: KubernetesBackend) -> None:
    # Given a released environment whose namespace is still Terminating
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)
    await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    await backend.release(env_id)
    assert fake.namespaces()[ns]["metadata"].get("deletionTimestamp")

    # When the same id is created again at once
    await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})

    # Then it waited (watching the namespace) for the old one to go, and made a fresh one
    assert "deletionTimestamp" not in fake.namespaces()[ns]["metadata"]
    assert fake.objects[("deployments", ns, "redis")]["status"]["readyReplicas"] == 1
    assert ("", "namespaces", "watch") in fake.calls


# -- failures ------------------------------------------------------------------------------------------------


async def test_fake_refuses_pod_over_quota_with_a_403_status(fake: FakeKubeApiServer) -> None:
    # Given a namespace with a quota of 1 CPU (made through the real client)
    async with client.ApiClient(client.Configuration(host=fake.url)) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "q"}})
        await core.create_namespaced_resource_quota("q", {"apiVersion": "v1", "kind": "ResourceQuota",
                                                          "metadata": {"name": "small"},
                                                          "spec": {"hard": {"requests.cpu": "1"}}})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1500m"}}}]}}

        # When a pod asking for 1.5 CPU is created
        with pytest.raises(ApiException) as raised:
            await core.create_namespaced_pod("q", pod)

        # Then the answer is the real API's 403 Forbidden Status
        assert raised.value.status == 403
        body = yaml.safe_load(raised.value.body)
        assert body["kind"] == "Status" and body["reason"] == "Forbidden"
        assert body["message"] == ('pods "big" is forbidden: exceeded quota: small, requested: requests.cpu=1.5, '
                                   "used: requests.cpu=0, limited: requests.cpu=1")
        # and a duplicate namespace is a 409 AlreadyExists Status, a missing one a 404 NotFound
        with pytest.raises(ApiException) as dup:
            await core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "q"}})
        assert dup.value.status == 409 and yaml.safe_load(dup.value.body)["reason"] == "AlreadyExists"
        with pytest.raises(ApiException) as missing:
            await core.read_namespace("nope")
        assert missing.value.status == 404 and yaml.safe_load(missing.value.body)["reason"] == "NotFound"


async def test_quota_exceeded_fails_clearly_and_cleans_up(fake: FakeKubeApiServer, backend: KubernetesBackend) -> None:
    # Given a template whose two services together need more CPU than its quota
    second = ServiceSpec(name="cache", kind=ServiceKind.REDIS, image="redis", version="7", port=6380,
                         resources=ResourceLimits(cpu="1500m", memory="256Mi"))
    template = redis_template(cpu="1500m", extra=(second,), quota=Quota(cpu="2", memory="4Gi", pods=5))
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)

    # When the environment is created
    with pytest.raises(QuotaExceeded) as raised:
        await backend.create(env_id, template=template, repo_path=None, ttl_s=600, labels={})

    # Then the error is the cluster's quota refusal, and the namespace is being deleted
    assert "exceeded quota: cars-quota" in str(raised.value)
    assert "requests.cpu=1.5" in str(raised.value)
    assert isinstance(raised.value, ProvisionError)
    assert ("namespaces", ns, "Foreground") in fake.deletes
    await wait_gone(fake, ns)
    assert not (backend.root / str(env_id)).exists()


async def test_image_never_ready_times_out_fails_and_cleans_up(
    fake: FakeKubeApiServer, tmp_path: Path,
) -> None:
    # Given an image that never becomes ready, and a short readiness timeout
    fake.withhold_images.add("redis:7")
    backend = KubernetesBackend(tmp_path / "home", host=fake.url,
                                tuning=KubeTuning(calls=TUNING.calls, ready_timeout_s=0.5, delete_timeout_s=3.0))
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)
    try:
        # When the environment is created
        with pytest.raises(ServiceNotReady) as raised:
            await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    finally:
        await backend.aclose()

    # Then the error names the service and the image, the namespace is deleted (foreground), and the
    # provisioner records it as environment.failed with that reason
    assert str(raised.value) == "service redis (image redis:7) was not ready after 0.5s"
    assert ("namespaces", ns, "Foreground") in fake.deletes
    await wait_gone(fake, ns)
    requested = envs.EnvState(status=envs.EnvStatus.REQUESTED)
    events = envs.failed(requested, env_id, f"{type(raised.value).__name__}: {raised.value}")
    reason = "ServiceNotReady: service redis (image redis:7) was not ready after 0.5s"
    assert events == [EnvironmentFailed(environment_id=env_id, reason=reason)]


async def test_api_server_down_opens_the_circuit_and_a_retry_later_succeeds(
    fake: FakeKubeApiServer, backend: KubernetesBackend,
) -> None:
    # Given the API server is down
    env_id = uuid.uuid4()
    await fake.stop()

    # When environments are requested: each fails as BackendUnavailable (transient: the provisioner leaves
    # the command pending instead of recording environment.failed), and the breaker opens
    with pytest.raises(BackendUnavailable) as first:
        await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    assert not isinstance(first.value, ProvisionError)
    assert "cannot be reached" in str(first.value)
    with pytest.raises(BackendUnavailable) as second:
        await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    assert "circuit breaker open" in str(second.value)
    assert backend.guard.opened == 1 and await backend.guard.state() == "opened"

    # When the server is back and the breaker's reset time has passed, the redelivered request is retried
    await fake.start()
    await asyncio.sleep(TUNING.calls.breaker_reset_s + 0.1)
    made = await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})

    # Then nothing was lost: the environment is complete, and the breaker closed again
    assert made.service_urls["REDIS_URL"].startswith("redis://redis.")
    assert fake.objects[("deployments", m.namespace_name(env_id), "redis")]["status"]["readyReplicas"] == 1
    assert await backend.guard.state() == "closed"


async def test_workspace_over_one_mebibyte_is_refused_clearly(
    fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path,
) -> None:
    # Given an environment and a workspace of 2 MiB of incompressible data
    env_id = uuid.uuid4()
    await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(uuid.uuid4().bytes * (2 * 1024 * 1024 // 16))
    (big / "noise.bin").write_bytes(os.urandom(1_200_000))

    # When a test run is asked for
    with pytest.raises(WorkspaceTooLarge) as raised:
        await backend.run_job(env_id, workspace=big, command=["true"], env={}, timeout_s=10)

    # Then it fails before anything is sent, saying why
    assert "1048576 bytes" in str(raised.value) and "no git origin" in str(raised.value)
    assert fake.objects_of("jobs", m.namespace_name(env_id)) == []


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


async def test_a_large_workspace_is_rebuilt_in_the_pod_from_a_clone_and_its_changes(
    fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path,
) -> None:
    # Given a repository with 2 MiB of incompressible data, pushed to its origin (a bare repository the
    # fake's pods can clone: they run on this host)
    repo = make_repo(tmp_path)
    (repo / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (repo / ".gitignore").write_text("*.log\n")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
    (repo / "notes.txt").write_text("untracked, not ignored\n")
    (repo / "debug.log").write_text("ignored\n")
    env_id = uuid.uuid4()
    made = await backend.create(env_id, template=redis_template(), repo_path=str(repo), ttl_s=600, labels={})
    # and a candidate repair written into the sandbox
    ws = Path(made.workspace)
    (ws / "calc.py").write_text("def add(a, b):\n    return a + b  # repaired\n")

    # When a test run is asked for
    check = ("import pathlib, sys; p = pathlib.Path('.'); "
             "ok = '# repaired' in (p / 'calc.py').read_text() and (p / 'notes.txt').exists() "
             "and (p / 'data.bin').stat().st_size == 2 * 1024 * 1024 and (p / 'shipped.txt').read_text() == 'x' "
             "and not (p / 'debug.log').exists(); print('REBUILT' if ok else 'WRONG'); sys.exit(0 if ok else 3)")
    result = await backend.run_job(env_id, workspace=ws, command=[sys.executable, "-c", check], env={},
                                   timeout_s=60, extra_files={"shipped.txt": b"x"})

    # Then the pod cloned the commit and applied the changes: the repair, the untracked file, the extra
    # file; the Secret carried only the patch
    assert result.exit_code == 0, result.logs
    assert "REBUILT" in result.logs
    clone = fake.job_workdirs[-1] / "volumes" / "workspace"
    assert (clone / ".git").is_dir()
    shipped = {f.name: f.stat().st_size for f in (fake.job_workdirs[-1] / "volumes" / "archive").iterdir()}
    assert set(shipped) == {m.PATCH_KEY, m.EXTRA_KEY} and sum(shipped.values()) < 64 * 1024, shipped


async def test_job_past_its_deadline_is_reported_timed_out(
    fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path,
) -> None:
    # Given an environment and a command that runs longer than its timeout
    env_id = uuid.uuid4()
    await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "slow.py").write_text("import time\ntime.sleep(30)\n")

    # When it runs with a 1 s deadline
    result = await backend.run_job(env_id, workspace=ws, command=[sys.executable, "slow.py"], env={}, timeout_s=1)

    # Then the Job failed on its deadline, and the result says so
    assert result.timed_out is True
    assert result.exit_code is None


# -- reaper --------------------------------------------------------------------------------------------------


async def test_reaper_after_a_restart_finds_orphans_by_label(fake: FakeKubeApiServer, tmp_path: Path) -> None:
    # Given two environments made by one CARS process, which then goes away
    home = tmp_path / "home"
    first = KubernetesBackend(home, host=fake.url, tuning=TUNING)
    soon, later = uuid.uuid4(), uuid.uuid4()
    await first.create(soon, template=redis_template(), repo_path=None, ttl_s=60, labels={"repair": "r1"})
    await first.create(later, template=redis_template(), repo_path=None, ttl_s=7200, labels={"repair": "r2"})
    await first.aclose()
    del first
    # and a namespace that is not ours
    async with client.ApiClient(client.Configuration(host=fake.url)) as api:
        await client.CoreV1Api(api).create_namespace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "someone-else"}})

    # When a new backend instance (a restarted CARS) reaps two minutes later
    restarted = KubernetesBackend(home, host=fake.url, tuning=TUNING)
    try:
        listed = await restarted.list()
        reaped = await restarted.reap(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120))
        again = await restarted.reap(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120))
    finally:
        await restarted.aclose()

    # Then it found both by label, deleted only the expired one, and left other namespaces alone
    assert {e.env_id for e in listed} == {soon, later}
    assert {e.labels["cars.dev/repair"] for e in listed} == {"r1", "r2"}
    assert reaped == [soon]
    assert again == []  # already Terminating: not reaped twice
    assert ("namespaces", m.namespace_name(soon), "Foreground") in fake.deletes
    await wait_gone(fake, m.namespace_name(soon))
    assert m.namespace_name(later) in fake.namespaces() and "someone-else" in fake.namespaces()
    assert not (home / "kubernetes" / str(soon)).exists()
    assert (home / "kubernetes" / str(later) / "workspace").is_dir()


async def test_reaper_removes_a_sandbox_whose_namespace_is_gone(
    fake: FakeKubeApiServer, backend: KubernetesBackend,
) -> None:
    # Given a local sandbox left behind by a crash, with no namespace
    lost = uuid.uuid4()
    (backend.root / str(lost) / "workspace").mkdir(parents=True)

    # When the reaper runs
    reaped = await backend.reap(dt.datetime.now(dt.UTC))

    # Then the sandbox is removed and reported
    assert reaped == [lost]
    assert not (backend.root / str(lost)).exists()


# -- RBAC ----------------------------------------------------------------------------------------------------


async def test_every_call_of_a_full_lifecycle_is_allowed_by_rbac(
    fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path,
) -> None:
    # Given a full lifecycle: create, a test run, list, reap, release
    env_id = uuid.uuid4()
    made = await backend.create(env_id, template=redis_template(), repo_path=str(make_repo(tmp_path)), ttl_s=600,
                                labels={"repair": "r"})
    await backend.run_job(env_id, workspace=Path(made.workspace), command=["ls"], env={}, timeout_s=10)
    await backend.list()
    await backend.reap(dt.datetime.now(dt.UTC))
    await backend.release(env_id)

    # Then the fake served these kinds of calls, and rbac.yaml allows every one of them
    served = set(fake.calls)
    assert {("", "namespaces", "create"), ("", "namespaces", "list"), ("", "namespaces", "delete"),
            ("apps", "deployments", "create"), ("apps", "deployments", "watch"), ("batch", "jobs", "create"),
            ("batch", "jobs", "watch"), ("batch", "jobs", "delete"), ("", "pods", "list"),
            ("", "pods/log", "get"), ("", "secrets", "create"), ("networking.k8s.io", "networkpolicies", "create"),
            } <= served
    assert not_allowed(served) == set()
    # and the check is not vacuous: a call outside the role is caught
    assert not_allowed({("", "nodes", "list"), ("", "namespaces", "patch")}) == {
        ("", "nodes", "list"), ("", "namespaces", "patch")}


# -- the validator through run_job ---------------------------------------------------------------------------


class MemoryAggregates:
    """The store port in memory (only for this file's router test; the store is tested elsewhere)."""

    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, list[Envelope[Any]]] = {}
        self.causes: set[tuple[uuid.UUID, uuid.UUID]] = set()

    async def execute(self, stream_id: uuid.UUID, cause: Any, decide: Any) -> list[int]:
        if (stream_id, cause.id) in self.causes:
            return []
        self.causes.add((stream_id, cause.id))
        stream = self.streams.setdefault(stream_id, [])
        new = [Envelope(data=e, stream_id=stream_id) for e in decide(list(stream))]
        stream.extend(new)
        return list(range(len(stream) - len(new), len(stream)))

    async def history(self, stream_id: uuid.UUID) -> list[Envelope[Any]]:
        return list(self.streams.get(stream_id, []))


@pytest.mark.slow  # about six Jobs, each a real pytest run
async def test_the_validator_runs_a_kubernetes_environments_tests_as_jobs(
    fake: FakeKubeApiServer, backend: KubernetesBackend, tmp_path: Path,
) -> None:
    # Given a repair of a test that uses a renamed function, and its candidate patch
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "conftest.py").write_text("")
    (repo / "calc.py").write_text("def total(a, b):\n    return a + b\n")
    (repo / "test_calc.py").write_text("from calc import sum_\n\n\ndef test_total():\n    assert sum_(1, 2) == 3\n")
    patch = (
        "--- a/test_calc.py\n+++ b/test_calc.py\n@@ -1,5 +1,5 @@\n-from calc import sum_\n+from calc import total\n"
        " \n \n def test_total():\n-    assert sum_(1, 2) == 3\n+    assert total(1, 2) == 3\n"
    )
    rid, cid, env_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    store = MemoryAggregates()
    store.streams[rid] = [Envelope(data=HealRequested(
        repair_id=rid, project="p", test_id="test_calc.py::test_total", fingerprint="f",
        category=FailureClass.IMPORT_ERROR, repo_path=str(repo),
        test_cmd=f"{sys.executable} -m pytest -q -p no:cacheprovider")),
        Envelope(data=HealProposed(repair_id=rid, candidate_id=cid, strategy="import_path", rank=1, confidence=0.9,
                                   patch=patch))]
    # and a kubernetes environment provisioned for that candidate
    store.streams[env_id] = [Envelope(data=EnvironmentRequested(
        environment_id=env_id, template="python-redis", backend="kubernetes", ttl_s=600, repo_path=str(repo),
        purpose=validator.purpose(rid, cid)))]
    made = await backend.create(env_id, template=redis_template(), repo_path=str(repo), ttl_s=600, labels={})
    provisioned = Envelope(data=EnvironmentProvisioned(
        environment_id=env_id, backend="kubernetes", workspace=made.workspace,
        # (the fake runs pytest from this venv: without autoloading its many plugins, each run is faster)
        service_urls={**made.env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, expires_at=made.expires_at))
    published: list[Envelope[Any]] = []

    async def publish(envelope: Envelope[Any]) -> None:
        published.append(envelope)

    def deps(jobs: KubernetesBackend | None) -> validator.ValidatorDeps:
        return validator.ValidatorDeps(aggregates=store, clock=lambda: dt.datetime.now(dt.UTC), publish=publish,
                                       validate=validate_candidate, jobs=jobs)

    # When a validator without a kubernetes backend sees it, it refuses clearly (and releases it)
    with pytest.raises(Rejected, match="no kubernetes backend"):
        await validator.handle(deps(None), provisioned)
    assert [type(p.data) for p in published] == [ReleaseEnvironment]

    # When the validator with the backend sees it, every test run goes through run_job
    jobs_before = fake.calls.count(("batch", "jobs", "create"))
    await validator.handle(deps(backend), provisioned)

    # Then the candidate is validated on the evidence the Jobs sent back (the report rode on the logs)
    (verdict,) = [e.data for e in store.streams[rid] if isinstance(e.data, HealValidated)]
    assert (verdict.evidence.reruns, verdict.evidence.passes) == (3, 3)
    assert verdict.evidence.collected_after == 1
    assert verdict.evidence.mutation is MutationVerdict.PASSED
    assert fake.calls.count(("batch", "jobs", "create")) - jobs_before >= 5  # baseline, 3 reruns, module, mutant
    assert "sum_" in (Path(made.workspace) / "test_calc.py").read_text()


async def test_an_outage_in_the_middle_of_a_create_loses_nothing(
    fake: FakeKubeApiServer, backend: KubernetesBackend,
) -> None:
    # Given an API server that fails (503) after the namespace, its quota and its limits are made
    env_id = uuid.uuid4()
    ns = m.namespace_name(env_id)
    fake.fail_after = 3

    # When the environment is requested, it fails as transient, leaving a half-made namespace
    with pytest.raises(BackendUnavailable, match="answered 503"):
        await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    assert ns in fake.namespaces() and fake.objects_of("deployments", ns) == []
    assert fake.refused >= TUNING.calls.attempts  # the call was retried before giving up

    # When the server recovers and the request is redelivered
    fake.fail_after = None
    await asyncio.sleep(TUNING.calls.breaker_reset_s + 0.1)
    made = await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})

    # Then the same namespace is completed: every object exactly once, the service ready
    assert made.service_urls["REDIS_URL"] == f"redis://redis.{ns}.svc:6379/0"
    for plural in ("resourcequotas", "limitranges", "networkpolicies", "services", "deployments"):
        assert len(fake.objects_of(plural, ns)) == 1, plural
    assert fake.objects[("deployments", ns, "redis")]["status"]["readyReplicas"] == 1


async def test_a_single_503_is_retried_transparently(fake: FakeKubeApiServer, backend: KubernetesBackend) -> None:
    # Given an API server that answers one request (the second) with a 503, then recovers
    env_id = uuid.uuid4()
    fake.fail_after, fake.fail_times = 1, 1

    # When the environment is created, it succeeds: the retry went through
    made = await backend.create(env_id, template=redis_template(), repo_path=None, ttl_s=600, labels={})
    assert fake.refused == 1
    assert made.service_urls["REDIS_URL"].startswith("redis://")
    assert await backend.guard.state() == "closed"


# -- configuration -------------------------------------------------------------------------------------------


async def test_a_kubeconfig_context_is_used(
    fake: FakeKubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a kubeconfig whose context "fake" points at the fake API server, and no in-cluster variables
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}},
                     {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}},
                     {"name": "other", "context": {"cluster": "other", "user": "u"}}],
    }))
    backend = KubernetesBackend(tmp_path / "home", kubeconfig=str(kubeconfig), context="fake", tuning=TUNING)
    try:
        # When environments are listed, the fake is asked
        assert await backend.list() == []
    finally:
        await backend.aclose()
    assert ("", "namespaces", "list") in fake.calls


async def test_no_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given neither a kubeconfig nor a service account
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = KubernetesBackend(tmp_path / "home", kubeconfig=str(tmp_path / "missing"), tuning=TUNING)
    with pytest.raises(ProvisionError, match="no usable Kubernetes configuration"):
        await backend.list()
    # and in a pod without the service account token
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    in_pod = KubernetesBackend(tmp_path / "home", tuning=TUNING)
    with pytest.raises(ProvisionError, match="no usable Kubernetes configuration"):
        await in_pod.list()
