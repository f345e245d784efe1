"""The Kubernetes environment backend: one namespace per environment (kubernetes-asyncio).

`create` makes the namespace and everything in it (k8s_manifests.py says what), waits through watches
until every service's Deployment is ready, and keeps a local sandbox copy of the repository, which is
the workspace the validator patches. `run_job` ships that workspace into the cluster as a tar.gz in a
Secret (at most 1 MiB, see k8s_manifests.MAX_OBJECT_DATA_BYTES), runs the command as a Job whose init
container unpacks it, and collects the exit code and the logs. A larger workspace of a git repository
with an origin is rebuilt in the pod instead: a clone at the sandbox's commit plus the patch of its
changes, which is all the Secret carries (k8s_git.py); without an origin it fails with WorkspaceTooLarge.

The cluster is the state: a namespace carries the environment id, the repair it serves and its expiry as
labels, so `reap` and `list` of a freshly started CARS find every environment an earlier one made.

Every API call goes through k8s_calls.ApiGuard (timeouts, retries, circuit breaker). An unreachable API
server raises BackendUnavailable, which is *not* a ProvisionError: the command stays pending and is
retried; creation is idempotent (409 AlreadyExists is success), so a retry picks up where it stopped.
Anything else that goes wrong raises a ProvisionError subclass with the server's own words, after the
namespace is deleted: the provisioner records it as environment.failed.

Calls stay within deploy/k8s/base/rbac.yaml: get/list/watch/create/delete on namespaces, resourcequotas,
limitranges, services, configmaps, secrets, pods, deployments, jobs and networkpolicies, and get on
pods/log (a test checks every call the backend makes against that file).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread
from attrs import field, frozen
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient, ApiException

from actors.provisioner.backends import k8s_git
from actors.provisioner.backends import k8s_manifests as m
from actors.provisioner.backends.k8s_calls import ApiGuard, CallPolicy, is_transient
from actors.provisioner.errors import BackendUnavailable, ProvisionError, ServiceStartError
from actors.workspace import SKIP_DIRS
from contracts.values import ResourceLimits, TemplateSpec

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120.0
LOG_TAIL_CHARS = 4 * 1024 * 1024  # a test run's output, with the CARS report the validator reads from it


class QuotaExceeded(ProvisionError):
    """The namespace's ResourceQuota refused a pod the environment needs."""


class ServiceNotReady(ServiceStartError):
    """A service's Deployment did not become ready in time (an image that never starts, say)."""


class WorkspaceTooLarge(ProvisionError):
    """The workspace does not fit in one Secret (1 MiB compressed)."""


@frozen(kw_only=True)
class Provisioned:
    """A ready environment: the local workspace to patch, the variables a test run gets, the expiry."""

    workspace: str
    service_urls: dict[str, str] = field(factory=dict)
    env: dict[str, str] = field(factory=dict)
    expires_at: dt.datetime


@frozen(kw_only=True)
class JobResult:
    """What a test run in the cluster left: the run container's exit code (None when it never ended),
    the tail of its logs, and whether it ran past its deadline."""

    exit_code: int | None
    logs: str
    timed_out: bool = False


@frozen(kw_only=True)
class KubeEnvironment:
    """One environment namespace as found in the cluster."""

    env_id: uuid.UUID
    namespace: str
    expires_at: dt.datetime | None
    terminating: bool
    labels: dict[str, str] = field(factory=dict)


@frozen(kw_only=True)
class KubeTuning:
    """Waits (seconds) and the call policy. Tests shrink these."""

    calls: CallPolicy = field(factory=CallPolicy)
    ready_timeout_s: float = 300.0  # every service Deployment ready
    delete_timeout_s: float = 120.0  # a Terminating namespace gone, before it is made again
    job_start_grace_s: float = 180.0  # scheduling, image pull and unpack, on top of a run's own timeout
    runner_resources: ResourceLimits = field(factory=lambda: ResourceLimits(cpu="1", memory="1Gi"))
    git_image: str = m.GIT_IMAGE  # clones a workspace too large for a Secret (k8s_git)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class KubernetesBackend:
    """Environments as namespaces in a Kubernetes cluster.

    Configuration: `host` (an API server URL, used by the tests), else the in-cluster service account
    when KUBERNETES_SERVICE_HOST is set, else the kubeconfig (`kubeconfig`, else $KUBECONFIG, else
    ~/.kube/config; `context` picks a context). No usable configuration is a ProvisionError. The local
    sandboxes live under `home/kubernetes/`.
    """

    name = "kubernetes"

    def __init__(
        self, home: str | Path, *, host: str | None = None, kubeconfig: str | None = None,
        context: str | None = None, tuning: KubeTuning = KubeTuning(),
    ) -> None:
        self.root = Path(home).resolve() / "kubernetes"
        self.host = host
        self.kubeconfig = kubeconfig
        self.context = context
        self.tuning = tuning
        self.guard = ApiGuard(tuning.calls)
        self._api: ApiClient | None = None
        self._api_lock = asyncio.Lock()

    # -- configuration -------------------------------------------------------------------------------

    async def _client(self) -> ApiClient:
        async with self._api_lock:
            if self._api is None:
                cfg = client.Configuration(host=self.host) if self.host else client.Configuration()
                if not self.host:
                    try:
                        if os.getenv("KUBERNETES_SERVICE_HOST"):
                            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                        else:
                            await config.load_kube_config(
                                config_file=self.kubeconfig or os.getenv("KUBECONFIG") or None,
                                context=self.context, client_configuration=cfg,
                            )
                    except (config.ConfigException, OSError) as exc:
                        raise ProvisionError(f"no usable Kubernetes configuration (in-cluster service account "
                                             f"or kubeconfig): {exc}") from exc
                self._api = ApiClient(configuration=cfg)
            return self._api

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _apis(self) -> tuple[Any, Any, Any, Any]:
        api = await self._client()
        return client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api), client.NetworkingV1Api(api)

    # -- create --------------------------------------------------------------------------------------

    async def create(
        self, env_id: uuid.UUID, *, template: TemplateSpec, repo_path: str | None, ttl_s: int,
        labels: Mapping[str, str],
    ) -> Provisioned:
        """Make the environment, or finish making it (idempotent per `env_id`), and wait until its
        services are ready. ProvisionError (namespace deleted) or BackendUnavailable (left for a retry)."""
        expires_at = _utcnow() + dt.timedelta(seconds=ttl_s)
        ns = m.namespace_name(env_id)
        try:
            manifests = _environment_manifests(env_id, template, labels, expires_at)
        except m.ManifestError as exc:
            raise ProvisionError(f"template {template.name}@{template.version}: {exc}") from exc
        try:
            await self._create_namespace(ns, manifests[0])
            for manifest in manifests[1:]:
                await self._create_in(ns, manifest)
            await self._wait_services_ready(ns, template)
            workspace = await anyio.to_thread.run_sync(self._make_sandbox, env_id, repo_path)
        except BackendUnavailable:
            raise  # the namespace (if any) carries its expiry: a retry finishes it, or the reaper removes it
        except Exception as exc:
            # (Not on cancellation: a worker shutting down leaves the namespace, with its expiry, to the
            # redelivered request or the reaper.)
            await self._cleanup_after_failure(env_id)
            if isinstance(exc, ProvisionError):
                raise
            raise ProvisionError(f"creating environment {env_id} failed: {type(exc).__name__}: {exc}") from exc
        variables = m.service_env(template, ns)
        urls = {k: v for k, v in variables.items() if k.endswith("_URL")}
        return Provisioned(workspace=str(workspace), service_urls=urls, env=variables, expires_at=expires_at)

    async def _create_namespace(self, ns: str, body: m.Manifest) -> None:
        core, *_ = await self._apis()
        for _ in range(3):
            try:
                await self.guard.call(f"create namespace {ns}", core.create_namespace, body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise _provision_error(f"create namespace {ns}", exc) from exc
            try:
                existing = await self.guard.call(f"read namespace {ns}", core.read_namespace, ns)
            except ApiException as exc:
                if exc.status == 404:
                    continue  # it finished terminating in between: create it
                raise _provision_error(f"read namespace {ns}", exc) from exc
            if existing.metadata.deletion_timestamp is None:
                return  # made by an earlier attempt: carry on inside it
            # Deleted and still Terminating (a release just before): wait until it is gone, then make it anew.
            await self._wait_namespace_gone(ns)
        raise ProvisionError(f"namespace {ns} kept coming back while being created")

    async def _create_in(self, ns: str, body: m.Manifest) -> None:
        core, apps, batch, net = await self._apis()
        create: Callable[..., Awaitable[Any]] = {
            "ResourceQuota": core.create_namespaced_resource_quota,
            "LimitRange": core.create_namespaced_limit_range,
            "NetworkPolicy": net.create_namespaced_network_policy,
            "Secret": core.create_namespaced_secret,
            "Service": core.create_namespaced_service,
            "Deployment": apps.create_namespaced_deployment,
            "Job": batch.create_namespaced_job,
        }[body["kind"]]
        what = f"create {body['kind']} {ns}/{body['metadata']['name']}"
        try:
            await self.guard.call(what, create, ns, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: an earlier attempt made it
                raise _provision_error(what, exc) from exc

    async def _wait_services_ready(self, ns: str, template: TemplateSpec) -> None:
        """Every service's Deployment ready, all within one `ready_timeout_s`."""
        _, apps, _, _ = await self._apis()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.tuning.ready_timeout_s
        for svc in template.services:
            try:
                await self._wait_for(
                    f"deployment {ns}/{svc.name}", apps.list_namespaced_deployment, ns, name=svc.name,
                    done=_deployment_ready, timeout_s=deadline - loop.time(),
                )
            except TimeoutError:
                raise ServiceNotReady(
                    f"service {svc.name} (image {m.image_ref(svc)}) was not ready after "
                    f"{self.tuning.ready_timeout_s:g}s"
                ) from None

    # -- release, reap, list -------------------------------------------------------------------------

    async def release(self, env_id: uuid.UUID) -> bool:
        """Delete the namespace (foreground: its objects go first) and the local sandbox. True if there
        was something to release. Returns once the deletion is accepted; the namespace may still be
        Terminating for a while."""
        deleted = await self._delete_namespace(m.namespace_name(env_id))
        removed = await anyio.to_thread.run_sync(self._remove_sandbox, env_id)
        return deleted or removed

    async def reap(self, now: dt.datetime) -> builtins.list[uuid.UUID]:
        """Delete every environment namespace whose expiry label is past `now`, whoever made it (this is
        how a restarted CARS finds an earlier one's orphans: by label), and local sandboxes whose
        namespace is gone. Returns the ids released."""
        reaped: builtins.list[uuid.UUID] = []
        live: set[uuid.UUID] = set()
        for env in await self.list():
            live.add(env.env_id)
            if env.terminating or env.expires_at is None or env.expires_at > now:
                continue
            if await self._delete_namespace(env.namespace):
                await anyio.to_thread.run_sync(self._remove_sandbox, env.env_id)
                reaped.append(env.env_id)
        for env_id in await anyio.to_thread.run_sync(self._sandbox_ids):
            if env_id not in live and await anyio.to_thread.run_sync(self._remove_sandbox, env_id):
                reaped.append(env_id)
        return reaped

    async def list(self) -> builtins.list[KubeEnvironment]:
        """Every environment namespace in the cluster (found by the managed-by label), soonest expiry first."""
        core, *_ = await self._apis()
        found = await self.guard.call("list namespaces", core.list_namespace, label_selector=m.MANAGED_SELECTOR)
        envs = []
        for item in found.items:
            raw = {"metadata": {"labels": dict(item.metadata.labels or {})}}
            env_id = m.env_id_of(raw)
            if env_id is None:
                continue
            envs.append(KubeEnvironment(
                env_id=env_id, namespace=item.metadata.name, expires_at=m.expiry_of(raw),
                terminating=item.metadata.deletion_timestamp is not None, labels=raw["metadata"]["labels"],
            ))
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        return sorted(envs, key=lambda e: (e.expires_at or far, str(e.env_id)))

    async def _delete_namespace(self, ns: str) -> bool:
        core, *_ = await self._apis()
        try:
            await self.guard.call(f"delete namespace {ns}", core.delete_namespace, ns,
                                  propagation_policy="Foreground")
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _provision_error(f"delete namespace {ns}", exc) from exc

    async def _cleanup_after_failure(self, env_id: uuid.UUID) -> None:
        try:
            await self._delete_namespace(m.namespace_name(env_id))
            await anyio.to_thread.run_sync(self._remove_sandbox, env_id)
        except (BackendUnavailable, ProvisionError, OSError) as exc:
            # The namespace carries its expiry: the reaper deletes it later.
            log.warning("cleanup of environment %s failed, left to the reaper: %s", env_id, exc)

    async def _wait_namespace_gone(self, ns: str) -> None:
        core, *_ = await self._apis()
        try:
            await self._wait_for(f"namespace {ns} deleted", core.list_namespace, None, name=ns, done=None,
                                 timeout_s=self.tuning.delete_timeout_s)
        except TimeoutError:
            raise ProvisionError(f"namespace {ns} was still terminating after "
                                 f"{self.tuning.delete_timeout_s:g}s") from None

    # -- test runs -----------------------------------------------------------------------------------

    async def run_job(
        self, env_id: uuid.UUID, *, workspace: Path, command: Sequence[str], env: Mapping[str, str],
        timeout_s: float, runner_image: str | None = None, extra_files: Mapping[str, bytes] | None = None,
    ) -> JobResult:
        """Run `command` in the runner image (by default the template's, kept on the namespace) on a copy
        of `workspace`, in the environment's namespace.

        The exit code is the run container's; the logs are its output (the unpack step's too when that
        failed). `extra_files` (relative path -> content) are added to the shipped copy, not to
        `workspace`. The Job and its Secret are deleted afterwards.
        """
        ns = m.namespace_name(env_id)
        name = f"cars-run-{uuid.uuid4().hex[:12]}"
        secret, checkout = await anyio.to_thread.run_sync(
            self._shipment, name, Path(workspace), extra_files or {})
        core, _, batch, _ = await self._apis()
        if runner_image is None:
            runner_image = await self._runner_image(core, ns)
        try:
            job = m.job(name, runner_image=runner_image, command=command, env=env, archive_secret=name,
                        timeout_s=timeout_s, resources=self.tuning.runner_resources, git=checkout)
        except m.ManifestError as exc:
            raise ProvisionError(f"test run in {ns}: {exc}") from exc
        await self._create_in(ns, secret)
        try:
            await self._create_in(ns, job)
            try:
                finished = await self._wait_for(
                    f"job {ns}/{name}", batch.list_namespaced_job, ns, name=name, done=_job_finished,
                    timeout_s=timeout_s + self.tuning.job_start_grace_s,
                )
            except TimeoutError:
                finished = None
            return await self._job_result(core, ns, name, finished)
        finally:
            await self._delete_quietly(f"job {ns}/{name}", batch.delete_namespaced_job, name, ns)
            await self._delete_quietly(f"secret {ns}/{name}", core.delete_namespaced_secret, name, ns)

    def _shipment(self, name: str, workspace: Path, extra_files: Mapping[str, bytes],
                  ) -> tuple[m.Manifest, m.GitCheckout | None]:
        """The Secret that carries the workspace to the Job: the whole of it as tar.gz when that fits,
        else (a git repository with an origin) the patch from its commit, which the Job's init container
        applies to a fresh clone. WorkspaceTooLarge when neither fits."""
        archive = pack_workspace(workspace, extra_files)
        if len(archive) <= m.MAX_OBJECT_DATA_BYTES:
            return m.workspace_secret(name, archive), None
        too_big = (f"the workspace {workspace} is {len(archive)} bytes as tar.gz, more than one Secret holds "
                   f"({m.MAX_OBJECT_DATA_BYTES} bytes)")
        source = k8s_git.load_source(workspace.parent)
        if source is None:
            raise WorkspaceTooLarge(f"{too_big}, and its repository has no git origin to clone it from")
        try:
            patch = k8s_git.patch_from(source, workspace)
            return (m.git_workspace_secret(name, patch, pack_files(extra_files)),
                    m.GitCheckout(url=source.url, commit=source.commit, image=self.tuning.git_image))
        except m.ManifestError as exc:
            raise WorkspaceTooLarge(f"{too_big}, and its changes from {source.commit[:12]} too: {exc}") from exc
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise WorkspaceTooLarge(f"{too_big}, and no patch from {source.commit[:12]} could be made: {exc}"
                                    ) from exc

    async def _runner_image(self, core: Any, ns: str) -> str:
        try:
            found = await self.guard.call(f"read namespace {ns}", core.read_namespace, ns)
        except ApiException as exc:
            raise _provision_error(f"read namespace {ns}", exc) from exc
        image = (found.metadata.annotations or {}).get(m.ANNOTATION_RUNNER)
        if not image:
            raise ProvisionError(f"namespace {ns} names no runner image ({m.ANNOTATION_RUNNER}); pass runner_image")
        return str(image)

    async def _job_result(self, core: Any, ns: str, name: str, finished: Any) -> JobResult:
        pods = await self.guard.call(f"list pods of job {name}", core.list_namespaced_pod, ns,
                                     label_selector=f"job-name={name}")
        deadline = finished is None or any(
            c.type == "Failed" and c.status == "True" and c.reason == "DeadlineExceeded"
            for c in (finished.status.conditions or [])
        )
        if not pods.items:
            why = "never finished" if finished is None else "finished without a pod"
            return JobResult(exit_code=None, logs=f"job {name} {why}; no pod to read", timed_out=deadline)
        pod = pods.items[0]
        exit_code, unpack_failed = None, False
        for status in pod.status.container_statuses or []:
            if status.name == m.RUN_CONTAINER and status.state and status.state.terminated:
                exit_code = status.state.terminated.exit_code
        for status in pod.status.init_container_statuses or []:
            term = status.state.terminated if status.state else None
            unpack_failed = unpack_failed or bool(term and term.exit_code)
        logs = ""
        containers = [m.UNPACK_CONTAINER] if unpack_failed else [m.RUN_CONTAINER]
        for container in containers:
            try:
                text = await self.guard.call(f"read log of {pod.metadata.name}", core.read_namespaced_pod_log,
                                             pod.metadata.name, ns, container=container)
            except ApiException as exc:
                text = f"(no log from {container}: {exc.status} {exc.reason})"
            logs += str(text)
        return JobResult(exit_code=exit_code, logs=logs[-LOG_TAIL_CHARS:], timed_out=deadline)

    async def _delete_quietly(self, what: str, delete: Callable[..., Awaitable[Any]], name: str, ns: str) -> None:
        try:
            await self.guard.call(f"delete {what}", delete, name, ns, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete %s (the namespace's deletion will): %s", what, exc)
        except BackendUnavailable as exc:
            log.warning("could not delete %s (the namespace's deletion will): %s", what, exc)

    # -- watches -------------------------------------------------------------------------------------

    async def _wait_for(
        self, what: str, list_fn: Callable[..., Awaitable[Any]], ns: str | None, *, name: str,
        done: Callable[[Any], bool] | None, timeout_s: float,
    ) -> Any:
        """The object `name` once `done(object)` holds (or, with done=None, once it is gone), seen through a
        list then a watch from the list's resourceVersion. TimeoutError after `timeout_s`."""
        args = () if ns is None else (ns,)
        selector = f"metadata.name={name}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            listed = await self.guard.call(f"list {what}", list_fn, *args, field_selector=selector)
            if done is None and not listed.items:
                return None
            for item in listed.items:
                if done is not None and done(item):
                    return item
            version = listed.metadata.resource_version
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(what)
            try:
                async with asyncio.timeout(remaining), watch.Watch() as w:
                    stream = w.stream(list_fn, *args, field_selector=selector, resource_version=version,
                                      timeout_seconds=max(1, int(remaining)))
                    async for event in stream:
                        kind, obj = event["type"], event["object"]
                        if done is None and kind == "DELETED":
                            return None
                        if done is not None and kind in ("ADDED", "MODIFIED") and done(obj):
                            return obj
            except TimeoutError:
                raise TimeoutError(what) from None
            except ApiException as exc:
                if exc.status != 410 and not is_transient(exc):
                    raise _provision_error(f"watch {what}", exc) from exc
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.info("watch of %s broke (%s); listing again", what, exc)
            # The stream ended (server timeout, 410 Gone, a broken connection): list again and go on.

    # -- local sandboxes -----------------------------------------------------------------------------

    def _sandbox(self, env_id: uuid.UUID) -> Path:
        return self.root / str(env_id)

    def _make_sandbox(self, env_id: uuid.UUID, repo_path: str | None) -> Path:
        """A copy of the repository's current files (for a git repo: tracked and untracked-not-ignored
        files, as they are in the working tree), which the validator patches and run_job ships."""
        dest = self._sandbox(env_id) / "workspace"
        if dest.is_dir():
            return dest  # made by an earlier attempt
        tmp = self._sandbox(env_id) / "workspace.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if repo_path is not None:
            repo = Path(repo_path).resolve()
            if not repo.is_dir():
                raise ProvisionError(f"repo_path {repo} is not a folder")
            # Where the files came from, for a workspace too large to ship whole (k8s_git)
            k8s_git.save_source(self._sandbox(env_id), k8s_git.source_of(repo))
            for rel in _repo_files(repo):
                src, dst = repo / rel, tmp / rel
                if src.is_symlink() or src.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst, follow_symlinks=False)
        os.replace(tmp, dest)
        return dest

    def _remove_sandbox(self, env_id: uuid.UUID) -> bool:
        folder = self._sandbox(env_id)
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise ProvisionError(f"could not remove {folder}")
        return True

    def _sandbox_ids(self) -> builtins.list[uuid.UUID]:
        ids = []
        with contextlib.suppress(FileNotFoundError):
            for entry in self.root.iterdir():
                with contextlib.suppress(ValueError):
                    ids.append(uuid.UUID(entry.name))
        return sorted(ids)


def _environment_manifests(
    env_id: uuid.UUID, template: TemplateSpec, labels: Mapping[str, str], expires_at: dt.datetime,
) -> builtins.list[m.Manifest]:
    """The namespace first, then what goes in it, services' Deployments last (they need the rest)."""
    ns = m.namespace_name(env_id)
    out = [
        m.namespace(env_id, labels=labels, expires_at=expires_at, template=template),
        m.resource_quota(template.quota), m.limit_range(template.quota), m.network_policy(),
        m.env_secret(m.service_env(template, ns)),
    ]
    for svc in template.services:
        out += [m.service(svc), m.deployment(svc)]
    return out


def _deployment_ready(d: Any) -> bool:
    """Ready when every replica is; QuotaExceeded at once when the quota refused its pod."""
    status = d.status
    for cond in (status.conditions or []) if status else []:
        if cond.type == "ReplicaFailure" and cond.status == "True":
            message = cond.message or cond.reason or "pod creation failed"
            if "exceeded quota" in message or "forbidden" in message:
                raise QuotaExceeded(f"deployment {d.metadata.name}: {message}")
            raise ServiceStartError(f"deployment {d.metadata.name}: {message}")
    want = d.spec.replicas if d.spec.replicas is not None else 1
    observed = (status.observed_generation or 0) if status else 0
    return bool(status) and observed >= (d.metadata.generation or 0) and (status.ready_replicas or 0) >= want


def _job_finished(j: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in (j.status.conditions or [])
               ) if j.status else False


def _provision_error(what: str, exc: ApiException) -> ProvisionError:
    """The server's own message (from its Status body), in a ProvisionError; 403 exceeded quota is
    QuotaExceeded."""
    message = exc.reason or ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = json.loads(exc.body or b"").get("message") or message
    if exc.status == 403 and "exceeded quota" in message:
        return QuotaExceeded(f"{what}: {message}")
    return ProvisionError(f"{what}: {exc.status} {message}")


def _repo_files(repo: Path) -> builtins.list[str]:
    """Relative paths of the files to copy: what git does not ignore, or (not a git repo) everything
    outside SKIP_DIRS."""
    if shutil.which("git") is not None:
        try:
            done = subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisionError(f"git ls-files in {repo} failed: {exc}") from exc
        if done.returncode == 0:
            names = done.stdout.decode(errors="surrogateescape").split("\0")
            return [n for n in dict.fromkeys(names) if n and not any(_skip_dir(p) for p in Path(n).parts[:-1])]
    files = []
    for folder, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if not _skip_dir(d)]
        files += [os.path.relpath(os.path.join(folder, n), repo) for n in names]
    return files


def _skip_dir(name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info")


def _add_files(tar: tarfile.TarFile, files: Mapping[str, bytes]) -> None:
    for rel, content in sorted(files.items()):
        info = tarfile.TarInfo(rel)
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))


def pack_files(files: Mapping[str, bytes]) -> bytes:
    """`files` (relative path -> content) as tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        _add_files(tar, files)
    return buf.getvalue()


def pack_workspace(workspace: Path, extra_files: Mapping[str, bytes] | None = None) -> bytes:
    """The workspace as tar.gz (paths relative to it, symlinks kept as links, SKIP_DIRS left out), plus
    `extra_files` (relative path -> content)."""
    if not workspace.is_dir():
        raise ProvisionError(f"workspace {workspace} is not a folder")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for folder, dirs, names in os.walk(workspace):
            dirs[:] = sorted(d for d in dirs if not _skip_dir(d))
            for n in sorted(names):
                path = Path(folder) / n
                tar.add(path, arcname=path.relative_to(workspace).as_posix(), recursive=False)
        _add_files(tar, extra_files or {})
    return buf.getvalue()


__all__ = [
    "JobResult", "KubeEnvironment", "KubeTuning", "KubernetesBackend", "Provisioned", "QuotaExceeded",
    "ServiceNotReady", "WorkspaceTooLarge", "pack_workspace",
]
