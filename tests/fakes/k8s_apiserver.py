"""A FAKE Kubernetes API server for tests: no cluster or Docker exists here, so the real
kubernetes-asyncio client talks over real HTTP on loopback to this aiohttp app instead.

It is a fake, not an emulator. It models, with the real API's wire shapes:
- the REST paths the Kubernetes backend calls: core v1 namespaces, resourcequotas, limitranges, services,
  configmaps, secrets, pods (and pods/{name}/log), apps/v1 deployments, batch/v1 jobs,
  networking.k8s.io/v1 networkpolicies: create, get, list, watch, delete;
- strict decoding: every body POSTed is checked field by field against the client library's models
  (`strict_check`); an unknown field is a 400 BadRequest Status, like `fieldValidation=Strict`;
- `Status` bodies for 404 NotFound, 409 AlreadyExists, 403 Forbidden (exceeded quota; new content in a
  terminating namespace), 400 BadRequest;
- one cluster-wide resourceVersion counter, list `metadata.resourceVersion`, watches (`?watch=true`,
  chunked JSON lines) from a resourceVersion (or from the current state, as ADDED events, without one),
  ended by `timeoutSeconds`; equality label selectors and `metadata.name` field selectors;
- namespace deletion: the namespace stays Terminating (deletionTimestamp set) for `terminating_s`, then
  it and everything in it are DELETED; the propagation policy each DELETE asked for is recorded;
- ResourceQuota admission of pods (requests/limits of cpu and memory, pod count; LimitRange defaults
  filled in first; init containers counted as the real admission does) with the real 403 message;
- a Deployment "controller": one pod per Deployment, admitted through the quota (a refusal becomes the
  Deployment's ReplicaFailure condition, as the real controllers report it), ready after `ready_delay_s`
  unless its image is in `withhold_images`;
- outages: `stop()`/`start()` (connection refused, state kept) and `fail_after` (503 ServiceUnavailable);
- a Job "controller": its pod's containers run FOR REAL as subprocesses on this machine, init containers
  first, with the pod's volumes (emptyDir, secret) as temporary folders: each argument, and the working
  directory, that starts with a mount path is rewritten to that folder. env and envFrom (Secrets) are
  passed; PATH comes from this machine. Exit codes and logs are recorded as container statuses and
  pods/log; activeDeadlineSeconds kills the run and deletes the pod (Job Failed, DeadlineExceeded).

It does NOT model: authentication or RBAC enforcement (it records every (apiGroup, resource, verb) it
served, so tests check them against deploy/k8s/base/rbac.yaml), update/patch, images (any image "runs"
the command on the host, so the runner image's contents are not checked), scheduling, nodes, networking
(NetworkPolicies are stored, not enforced; service URLs resolve nowhere), probes (readiness is what the
test says), ReplicaSets, Events, finalizers other than namespace termination, 410 Gone for old
resourceVersions, set-based selectors, object size limits, quota `status.used`, LimitRange `max`
enforcement, pod restarts or retries, garbage collection of a deleted Deployment's pods (only a Job's pods
go with it), and a Job whose pod the quota refuses (it just stays without a pod, as the real one does,
but without the FailedCreate Event).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import functools
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio.client import ApiClient, Configuration, models

# (apiGroup, plural) -> (kind, namespaced, model class name)
RESOURCES: dict[tuple[str, str], tuple[str, bool, str]] = {
    ("", "namespaces"): ("Namespace", False, "V1Namespace"),
    ("", "resourcequotas"): ("ResourceQuota", True, "V1ResourceQuota"),
    ("", "limitranges"): ("LimitRange", True, "V1LimitRange"),
    ("", "services"): ("Service", True, "V1Service"),
    ("", "configmaps"): ("ConfigMap", True, "V1ConfigMap"),
    ("", "secrets"): ("Secret", True, "V1Secret"),
    ("", "pods"): ("Pod", True, "V1Pod"),
    ("apps", "deployments"): ("Deployment", True, "V1Deployment"),
    ("batch", "jobs"): ("Job", True, "V1Job"),
    ("networking.k8s.io", "networkpolicies"): ("NetworkPolicy", True, "V1NetworkPolicy"),
}
API_VERSION = {"": "v1", "apps": "apps/v1", "batch": "batch/v1", "networking.k8s.io": "networking.k8s.io/v1"}


# -- strict model check --------------------------------------------------------------------------------


class ManifestInvalid(ValueError):
    pass


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "datetime": (str,), "date": (str,),
}


def strict_check(body: Any, model: str, path: str = "") -> None:
    """Check a JSON-native manifest against a kubernetes_asyncio model, field by field: an unknown field or
    a value of the wrong type raises ManifestInvalid naming its path. Then deserialize it into the model,
    which checks required fields and enums."""
    _check(body, model, path or model)

    class _Resp:
        data = json.dumps(body)

    try:
        _deserializer().deserialize(_Resp(), model)
    except ValueError as exc:
        raise ManifestInvalid(f"{model}: {exc}") from exc


@functools.cache
def _deserializer() -> ApiClient:
    """An ApiClient used only to deserialize: made without its HTTP session (which would need closing)."""
    api = ApiClient.__new__(ApiClient)
    api.configuration = Configuration()
    api.client_side_validation = True
    return api


def _check(value: Any, type_name: str, path: str) -> None:
    if value is None:
        return
    if type_name == "object":
        return  # int-or-string and free-form fields
    if type_name in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise ManifestInvalid(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ManifestInvalid(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise ManifestInvalid(f"{path}: expected a map, got {type(value).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            _check(v, inner, f"{path}.{k}")
        return
    cls = getattr(models, type_name)
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            raise ManifestInvalid(f"{path}: unknown field {key!r} (strict decoding of {type_name})")
        _check(item, cls.openapi_types[by_json[key]], f"{path}.{key}")


# -- quantities ------------------------------------------------------------------------------------------

_SUFFIX = {
    "m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
}
_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def quantity(text: str | int) -> Decimal:
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}: {text!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]


def _fmt(q: Decimal) -> str:
    return format(q.normalize(), "f")


# -- the fake --------------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


class FakeKubeApiServer:
    """The FAKE API server's state and HTTP app. Start with `await fake.start()`; `fake.url` is the host to
    give the client; `stop()` / `start()` simulate an outage (the state survives, the port is reused)."""

    def __init__(self, *, terminating_s: float = 0.3, ready_delay_s: float = 0.05) -> None:
        self.terminating_s = terminating_s
        self.ready_delay_s = ready_delay_s
        self.withhold_images: set[str] = set()  # Deployments with these images never become ready
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> object
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []  # (rv, plural, ns, type, object)
        self.rv = 100
        self.logs: dict[tuple[str, str, str], str] = {}  # (namespace, pod, container) -> output
        self.calls: list[tuple[str, str, str]] = []  # (apiGroup, resource, verb) served
        self.deletes: list[tuple[str, str, str | None]] = []  # (resource, name, propagationPolicy)
        self.requests = 0
        self.job_workdirs: list[Path] = []
        #: None: healthy. A number: serve that many more requests, then answer every one 503 (an API server
        #: whose etcd is gone), until set back to None.
        self.fail_after: int | None = None
        self.fail_times: int | None = None  # with fail_after: how many 503s before recovering (None: forever)
        self.refused = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: TestServer | None = None
        self._port: int | None = None
        self.app = self._make_app()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = TestServer(self.app, host="127.0.0.1", port=self._port or 0)
        await self._server.start_server()
        self._port = self._server.port

    async def stop(self) -> None:
        """Take the server down (connections refused) without losing the cluster's state."""
        if self._server is not None:
            await self._server.close()
            self._server = None
            self.app = self._make_app()  # an aiohttp app cannot be started twice

    async def close(self) -> None:
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for folder in self.job_workdirs:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def url(self) -> str:
        assert self._port is not None
        return f"http://127.0.0.1:{self._port}"

    @web.middleware
    async def _faults(self, req: web.Request, handler: Any) -> web.StreamResponse:
        if self.fail_after is not None:
            if self.fail_after <= 0 and (self.fail_times is None or self.fail_times > 0):
                self.refused += 1
                if self.fail_times is not None:
                    self.fail_times -= 1
                return status(503, "ServiceUnavailable", "etcdserver: request timed out")
            self.fail_after -= 1
        response: web.StreamResponse = await handler(req)
        return response

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults])
        r = app.router
        r.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self._log)
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            r.add_route("*", prefix + "/namespaces/{ns}/{plural}", self._collection)
            r.add_route("*", prefix + "/namespaces/{ns}/{plural}/{name}", self._item)
            r.add_route("*", prefix + "/{plural}", self._collection)
            r.add_route("*", prefix + "/{plural}/{name}", self._item)
        return app

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- state helpers -----------------------------------------------------------------------------------

    def objects_of(self, plural: str, ns: str = "") -> list[dict[str, Any]]:
        return [o for (p, n, _), o in self.objects.items() if p == plural and n == ns]

    def namespaces(self) -> dict[str, dict[str, Any]]:
        return {name: o for (p, _, name), o in self.objects.items() if p == "namespaces"}

    def _emit(self, plural: str, ns: str, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, plural, ns, kind, copy.deepcopy(obj)))

    def _put(self, plural: str, ns: str, obj: dict[str, Any], kind: str = "MODIFIED") -> None:
        self.objects[(plural, ns, obj["metadata"]["name"])] = obj
        self._emit(plural, ns, kind, obj)

    def _remove(self, plural: str, ns: str, name: str) -> None:
        obj = self.objects.pop((plural, ns, name), None)
        if obj is not None:
            self._emit(plural, ns, "DELETED", obj)

    # -- HTTP --------------------------------------------------------------------------------------------

    def _resource(self, req: web.Request) -> tuple[str, str, str, bool, str] | None:
        group = req.match_info.get("group", "")
        plural = req.match_info["plural"]
        if (group, plural) not in RESOURCES:
            return None
        kind, namespaced, model = RESOURCES[(group, plural)]
        return group, plural, kind, namespaced, model

    def _record(self, group: str, resource: str, verb: str) -> None:
        self.requests += 1
        self.calls.append((group, resource, verb))

    async def _collection(self, req: web.Request) -> web.StreamResponse:
        res = self._resource(req)
        if res is None:
            return status(404, "NotFound", f"the server could not find the requested resource ({req.path})")
        group, plural, kind, namespaced, model = res
        ns = req.match_info.get("ns", "")
        watching = req.query.get("watch", "").lower() in ("true", "1")
        verb = {"GET": "watch" if watching else "list", "POST": "create"}.get(req.method)
        if verb is None:
            return status(405, "MethodNotAllowed", f"{req.method} is not supported on {plural}")
        self._record(group, plural, verb)
        if req.method == "POST":
            return await self._create(req, group, plural, kind, namespaced, model, ns)
        selected = _selector(req.query.get("labelSelector", "")), _selector(req.query.get("fieldSelector", ""))
        if watching:
            return await self._watch(req, plural, ns if namespaced else "", *selected)
        items = [o for o in self._all(plural, ns if namespaced else None) if _matches(o, *selected)]
        return web.json_response({
            "kind": f"{kind}List", "apiVersion": API_VERSION[group], "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        })

    def _all(self, plural: str, ns: str | None) -> list[dict[str, Any]]:
        return [o for (p, n, _), o in self.objects.items() if p == plural and (ns is None or n == ns)]

    async def _item(self, req: web.Request) -> web.StreamResponse:
        res = self._resource(req)
        if res is None:
            return status(404, "NotFound", f"the server could not find the requested resource ({req.path})")
        group, plural, _kind, namespaced, _ = res
        ns = req.match_info.get("ns", "") if namespaced else ""
        name = req.match_info["name"]
        verb = {"GET": "get", "DELETE": "delete"}.get(req.method)
        if verb is None:
            return status(405, "MethodNotAllowed", f"{req.method} is not supported on {plural} by this fake")
        self._record(group, plural, verb)
        obj = self.objects.get((plural, ns, name))
        if obj is None:
            return status(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
        if req.method == "GET":
            return web.json_response(obj)
        policy = req.query.get("propagationPolicy")
        if req.can_read_body:
            with contextlib.suppress(ValueError):
                policy = (await req.json()).get("propagationPolicy") or policy
        self.deletes.append((plural, name, policy))
        if plural == "namespaces":
            if obj["metadata"].get("deletionTimestamp") is None:
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["status"] = {"phase": "Terminating"}
                self._put(plural, "", obj)
                self._spawn(self._terminate(name))
            return web.json_response(obj)
        self._remove(plural, ns, name)
        if plural == "jobs" and policy in ("Foreground", "Background"):
            for pod in self._all("pods", ns):
                if pod["metadata"].get("labels", {}).get("job-name") == name:
                    self._remove("pods", ns, pod["metadata"]["name"])
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": name, "kind": plural}})

    async def _log(self, req: web.Request) -> web.StreamResponse:
        self._record("", "pods/log", "get")
        ns, name = req.match_info["ns"], req.match_info["name"]
        if ("pods", ns, name) not in self.objects:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        container = req.query.get("container", "")
        text = self.logs.get((ns, name, container))
        if text is None:
            return status(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start')
        return web.Response(text=text, content_type="text/plain")

    async def _create(
        self, req: web.Request, group: str, plural: str, kind: str, namespaced: bool, model: str, ns: str,
    ) -> web.Response:
        try:
            body = await req.json()
            strict_check(body, model)
        except (ValueError, ManifestInvalid) as exc:
            return status(400, "BadRequest", f"strict decoding error: {exc}")
        if body.get("kind") != kind or body.get("apiVersion") != API_VERSION[group]:
            return status(400, "BadRequest", f"expected {API_VERSION[group]} {kind}, got "
                                             f"{body.get('apiVersion')} {body.get('kind')}")
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return status(422, "Invalid", f"{kind} is invalid: metadata.name: Required value")
        if namespaced:
            owner = self.objects.get(("namespaces", "", ns))
            if owner is None:
                return status(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
            if owner["metadata"].get("deletionTimestamp"):
                return status(403, "Forbidden", f'{plural} "{name}" is forbidden: unable to create new content in '
                                                f"namespace {ns} because it is being terminated")
        else:
            ns = ""
        if (plural, ns, name) in self.objects:
            return status(409, "AlreadyExists", f'{plural} "{name}" already exists', name=name, kind=plural)
        if plural == "pods":
            refused = self._admit(ns, body)
            if refused:
                return status(403, "Forbidden", refused)
        meta = body["metadata"]
        meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1})
        if namespaced:
            meta["namespace"] = ns
        if plural == "namespaces":
            body["status"] = {"phase": "Active"}
        if plural == "resourcequotas":
            body["status"] = {"hard": dict(body["spec"].get("hard", {}))}
        self._put(plural, ns, body, "ADDED")
        if plural == "deployments":
            self._spawn(self._run_deployment(ns, name))
        elif plural == "jobs":
            self._spawn(self._run_job(ns, name))
        return web.json_response(body, status=201)

    async def _watch(
        self, req: web.Request, plural: str, ns: str, labels: Mapping[str, str], fields: Mapping[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(req.query.get("timeoutSeconds", "1800"))
        since = req.query.get("resourceVersion", "")
        if since in ("", "0"):
            for obj in self._all(plural, ns or None):
                if _matches(obj, labels, fields):
                    await resp.write((json.dumps({"type": "ADDED", "object": obj}) + "\n").encode())
            position = len(self.events)
        else:
            position = next((i for i, e in enumerate(self.events) if e[0] > int(since)), len(self.events))
        while loop.time() < deadline:
            while position < len(self.events):
                _, p, n, kind, obj = self.events[position]
                position += 1
                if p == plural and (not ns or n == ns) and _matches(obj, labels, fields):
                    await resp.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    # -- namespace termination -----------------------------------------------------------------------------

    async def _terminate(self, ns: str) -> None:
        await asyncio.sleep(self.terminating_s)
        for (plural, n, name) in list(self.objects):
            if n == ns:
                self._remove(plural, ns, name)
        self._remove("namespaces", "", ns)

    # -- quota admission ---------------------------------------------------------------------------------

    def _admit(self, ns: str, pod: dict[str, Any]) -> str | None:
        """None if the namespace's quotas admit the pod, else the real API server's refusal text.
        Fills in LimitRange defaults first, as the LimitRanger admission plugin does."""
        defaults: dict[str, dict[str, str]] = {"default": {}, "defaultRequest": {}}
        for lr in self.objects_of("limitranges", ns):
            for item in lr["spec"].get("limits", []):
                if item.get("type") == "Container":
                    defaults["default"].update(item.get("default", {}))
                    defaults["defaultRequest"].update(item.get("defaultRequest", {}))
        spec = pod["spec"]
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            res = c.setdefault("resources", {})
            limits = res.setdefault("limits", {})
            for k, v in defaults["default"].items():
                limits.setdefault(k, v)
            requests = res.setdefault("requests", {})
            for k, v in {**defaults["defaultRequest"], **limits}.items():
                requests.setdefault(k, v)
        name = pod["metadata"]["name"]
        for quota in self.objects_of("resourcequotas", ns):
            hard = quota["spec"].get("hard", {})
            want = _pod_usage(pod)
            missing = [k for k in hard if k != "pods" and k not in want]
            if missing:
                return (f'pods "{name}" is forbidden: failed quota: {quota["metadata"]["name"]}: must specify '
                        + ",".join(sorted(missing)))
            used: dict[str, Decimal] = {}
            for other in self.objects_of("pods", ns):
                if other.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                for k, v in _pod_usage(other).items():
                    used[k] = used.get(k, Decimal(0)) + v
            over = [k for k in sorted(hard) if used.get(k, Decimal(0)) + want.get(k, Decimal(0)) > quantity(hard[k])]
            if over:
                return (f'pods "{name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                        f"requested: {','.join(f'{k}={_fmt(want[k])}' for k in over)}, "
                        f"used: {','.join(f'{k}={_fmt(used.get(k, Decimal(0)))}' for k in over)}, "
                        f"limited: {','.join(f'{k}={hard[k]}' for k in over)}")
        return None

    def _new_pod(self, ns: str, template: dict[str, Any], name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        meta = copy.deepcopy(template.get("metadata", {}))
        meta["name"] = name
        meta["labels"] = {**meta.get("labels", {}), **labels}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"])}

    def _store_pod(self, ns: str, pod: dict[str, Any]) -> str | None:
        refused = self._admit(ns, pod)
        if refused:
            return refused
        pod["metadata"].update({"namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now()})
        pod["status"] = {"phase": "Pending"}
        self._put("pods", ns, pod, "ADDED")
        return None

    # -- the Deployment "controller" ------------------------------------------------------------------------

    async def _run_deployment(self, ns: str, name: str) -> None:
        await asyncio.sleep(0)
        dep = self.objects.get(("deployments", ns, name))
        if dep is None:
            return
        spec = dep["spec"]
        pod = self._new_pod(ns, spec["template"], f"{name}-{uuid.uuid4().hex[:5]}", {})
        refused = self._store_pod(ns, pod)
        if refused:
            dep["status"] = {"observedGeneration": 1, "replicas": 0, "conditions": [{
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refused,
                "lastUpdateTime": _now(), "lastTransitionTime": _now(),
            }]}
            self._put("deployments", ns, dep)
            return
        dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1}
        self._put("deployments", ns, dep)
        images = {c["image"] for c in spec["template"]["spec"]["containers"]}
        if images & self.withhold_images:
            return  # the image never starts: the readiness probe never passes
        await asyncio.sleep(self.ready_delay_s)
        if ("deployments", ns, name) not in self.objects:
            return
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        self._put("pods", ns, pod)
        dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                         "availableReplicas": 1}
        self._put("deployments", ns, dep)

    # -- the Job "controller" and "kubelet" -------------------------------------------------------------

    async def _run_job(self, ns: str, name: str) -> None:
        await asyncio.sleep(0)
        job = self.objects.get(("jobs", ns, name))
        if job is None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        job["status"] = {"startTime": _now(), "active": 1}
        labels = {"job-name": name, "batch.kubernetes.io/job-name": name,
                  "controller-uid": job["metadata"]["uid"]}
        pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
        pod = self._new_pod(ns, job["spec"]["template"], pod_name, labels)
        if self._store_pod(ns, pod):
            job["status"] = {"startTime": _now(), "active": 0}  # the real controller keeps trying; so do we
            self._put("jobs", ns, job)
            return
        self._put("jobs", ns, job)
        deadline = job["spec"].get("activeDeadlineSeconds")
        remaining = None if deadline is None else started + float(deadline) - loop.time()
        try:
            async with asyncio.timeout(remaining):
                await self._run_pod(ns, pod)
        except TimeoutError:
            self._remove("pods", ns, pod_name)
            job["status"] = {"startTime": job["status"]["startTime"], "failed": 1, "conditions": [{
                "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline", "lastTransitionTime": _now()}]}
            self._put("jobs", ns, job)
            return
        ok = pod["status"]["phase"] == "Succeeded"
        condition = {"type": "Complete", "status": "True"} if ok else {
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}
        job["status"] = {"startTime": job["status"]["startTime"], ("succeeded" if ok else "failed"): 1,
                         "completionTime": _now(), "conditions": [{**condition, "lastTransitionTime": _now()}]}
        self._put("jobs", ns, job)

    async def _run_pod(self, ns: str, pod: dict[str, Any]) -> None:
        """Run the pod's init containers, then its containers, as real subprocesses (see the module doc)."""
        spec, name = pod["spec"], pod["metadata"]["name"]
        workdir = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
        self.job_workdirs.append(workdir)
        volumes: dict[str, Path] = {}
        for vol in spec.get("volumes", []):
            folder = workdir / "volumes" / vol["name"]
            folder.mkdir(parents=True)
            if "secret" in vol:
                secret = self.objects.get(("secrets", ns, vol["secret"]["secretName"]))
                if secret is None:
                    pod["status"] = {"phase": "Pending", "reason": "ContainerCreating"}  # real: waits forever
                    self._put("pods", ns, pod)
                    await asyncio.Event().wait()
                for key, value in (secret or {}).get("data", {}).items():
                    (folder / key).write_bytes(base64.b64decode(value))
            volumes[vol["name"]] = folder
        pod["status"] = {"phase": "Running"}
        self._put("pods", ns, pod)
        init_statuses: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        for container, bucket in [*((c, init_statuses) for c in spec.get("initContainers", [])),
                                  *((c, statuses) for c in spec.get("containers", []))]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            code, output = await self._exec(ns, container, mounts, workdir)
            self.logs[(ns, name, container["name"])] = output
            bucket.append(_container_status(container, code))
            if code != 0 and bucket is init_statuses:
                pod["status"] = {"phase": "Failed", "initContainerStatuses": init_statuses}
                self._put("pods", ns, pod)
                return
        ok = all(s["state"]["terminated"]["exitCode"] == 0 for s in statuses)
        pod["status"] = {"phase": "Succeeded" if ok else "Failed", "initContainerStatuses": init_statuses,
                         "containerStatuses": statuses}
        self._put("pods", ns, pod)

    async def _exec(self, ns: str, container: dict[str, Any], mounts: Mapping[str, Path], workdir: Path,
                    ) -> tuple[int, str]:
        def mapped(arg: str) -> str:
            for mount in sorted(mounts, key=len, reverse=True):
                if arg == mount or arg.startswith(mount.rstrip("/") + "/"):
                    return str(mounts[mount]) + arg[len(mount.rstrip("/")):]
            return arg

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
        for source in container.get("envFrom", []):
            ref = source.get("secretRef")
            if ref:
                secret = self.objects.get(("secrets", ns, ref["name"]))
                env.update({k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()})
        env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
        argv = [mapped(a) for a in [*container.get("command", []), *container.get("args", [])]]
        cwd = mapped(container.get("workingDir", str(workdir)))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return 128, f"exec failed: {exc}\n"
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode("utf-8", "replace")


def _container_status(container: Mapping[str, Any], code: int) -> dict[str, Any]:
    return {
        "name": container["name"], "image": container["image"], "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                 "startedAt": _now(), "finishedAt": _now()}},
    }


def _pod_usage(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What a pod counts against a quota: per resource, the larger of the sum over its containers and the
    largest init container (they run one at a time, before the others)."""
    usage: dict[str, Decimal] = {"pods": Decimal(1)}
    spec = pod["spec"]
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            key = f"{section}.{resource}"

            def amount(c: Mapping[str, Any], s: str = section, r: str = resource) -> Decimal | None:
                value = c.get("resources", {}).get(s, {}).get(r)
                return None if value is None else quantity(value)

            amounts = [amount(c) for c in spec.get("containers", [])]
            inits = [amount(c) for c in spec.get("initContainers", [])]
            if any(a is None for a in [*amounts, *inits]):
                continue
            usage[key] = max(sum((a for a in amounts if a is not None), Decimal(0)),
                             max((a for a in inits if a is not None), default=Decimal(0)))
    return usage


def _selector(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"this fake supports only equality selectors, not {part!r}")
        out[key.strip()] = value.lstrip("=").strip()
    return out


def _matches(obj: Mapping[str, Any], labels: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    meta = obj.get("metadata", {})
    own = meta.get("labels") or {}
    if any(own.get(k) != v for k, v in labels.items()):
        return False
    known = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace", "")}
    return all(known.get(k) == v for k, v in fields.items())


__all__ = ["RESOURCES", "FakeKubeApiServer", "ManifestInvalid", "quantity", "strict_check"]
