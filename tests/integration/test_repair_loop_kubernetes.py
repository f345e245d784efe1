"""The whole repair loop with CARS_ENV_BACKEND=kubernetes: the provisioner makes a namespace per
candidate and the validator runs its tests as Jobs, through the composition root's wiring, against the
FAKE Kubernetes API server on loopback (tests/fakes/k8s_apiserver.py; its Jobs run their command as real
subprocesses). There is no cluster here; the kubeconfig points the real client at the fake.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from bus.settings import Settings
from tests.fakes.k8s_apiserver import FakeKubeApiServer
from tests.integration.test_k8s_backend import not_allowed
from tests.integration.test_repair_loop import SHOP, make_repo, one, pytest_passes, run_loop


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubeApiServer]:
    server = FakeKubeApiServer(terminating_s=0.2, ready_delay_s=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def kube_settings(redis_url: str, tmp_path: Path, fake: FakeKubeApiServer,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
    }))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the Jobs' pytest: only the CARS plugin
    yield Settings.from_env({
        "REDIS_URL": redis_url, "CARS_HOME": str(tmp_path / "cars-home"), "CARS_CONSUMER": f"k8s-{tmp_path.name}",
        "CARS_ENV_BACKEND": "kubernetes", "PATH": os.environ.get("PATH", ""),
    })


@pytest.mark.slow
async def test_a_repair_is_validated_by_jobs_in_its_own_namespace(
    kube_settings: Settings, fake: FakeKubeApiServer, tmp_path: Path
) -> None:
    # Given a renamed function that breaks a test
    repo = make_repo(tmp_path / "renamed", SHOP, {
        "shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "cart_total")})
    # When the loop runs with the kubernetes backend
    result = await run_loop(kube_settings, repo)
    # Then the repair was validated (its reruns ran as Jobs on the cluster) and applied
    assert one(result) == ("renamed_symbol", "validated", "renamed_symbol", True)
    assert pytest_passes(repo)
    served = set(fake.calls)
    assert {("", "namespaces", "create"), ("batch", "jobs", "create"), ("", "pods/log", "get"),
            ("", "namespaces", "delete")} <= served, served
    # And every call was one the provisioner's RBAC allows
    assert not_allowed(served) == set()
