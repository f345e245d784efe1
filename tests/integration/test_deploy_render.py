"""`kubectl kustomize` renders the base and the example overlay, and what it renders is valid.

kubectl (with its built-in kustomize) is the one real tool here: there is no cluster. Every rendered
object except KEDA's ScaledObject (a CRD) is validated against the kubernetes_asyncio models.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import unavailable
from tests.unit.test_deploy_manifests import BASE, NAMESPACE, OVERLAY, ROOT, by_kind, objects, validate_all


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable("no kubectl on PATH (its built-in kustomize renders deploy/k8s)")
    assert kubectl is not None
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {"base": render(BASE), "overlay": render(OVERLAY)}


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_the_rendered_objects_are_the_files_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # kustomize includes exactly what the resources lists name (resolved by hand in the unit tests)
    names = {(d["kind"], d["metadata"]["name"]) for d in objects(BASE)}
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered["base"]} == names
    # The overlay adds the ScaledObjects and removes the CPU HPAs they replace
    overlay = {(d["kind"], d["metadata"]["name"]) for d in rendered["overlay"]}
    scaled = {name for kind, name in overlay if kind == "ScaledObject"}
    assert scaled == {"cars-monitor", "cars-healer", "cars-validator"}
    assert overlay == (names - {("HorizontalPodAutoscaler", n) for n in scaled}) | {("ScaledObject", n) for n in scaled}


def test_every_rendered_kubernetes_object_is_valid(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        core = [d for d in docs if d["kind"] != "ScaledObject"]
        assert len(validate_all(core)) == len(core)


def test_namespace_image_and_patches_are_applied(rendered: dict[str, list[dict[str, Any]]]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] not in cluster_scoped:
                assert doc["metadata"]["namespace"] == NAMESPACE, (name, doc["kind"], doc["metadata"]["name"])
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cars"
        images = {c["image"] for d in by_kind(docs, "Deployment").values()
                  for c in d["spec"]["template"]["spec"]["containers"]}
        expected = f"cars:{version()}" if name == "base" else f"registry.example.com/cars:{version()}"
        assert images == {expected}, name
    validator = by_kind(rendered["overlay"], "Deployment")["cars-validator"]["spec"]["template"]["spec"]
    resources = validator["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    # The patch merged into the container: its probes and command are still there
    assert validator["containers"][0]["args"] == ["worker", "--actors", "validator"]
    assert validator["containers"][0]["livenessProbe"]["exec"]["command"] == ["cars", "probe"]
