"""The operator surface of the HTTP API over real stores (SQLite and PostgreSQL) and real Redis:
GET /repairs (filters, paging), GET /repairs/{id} (timeline, evidence, candidates, patch),
GET /statistics, GET /tests/flaky, GET /runs, GET /dlq, GET /audit/{id}?at_version=N, and the
append-only promise: no route deletes or edits anything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from bus.audit import aggregate_state
from bus.dlq import dead_letter, dlq_size, list_dead_letters
from bus.store import EventStore
from contracts.runs import StormDetected
from projections.db import ViewDB
from projections.runner import ProjectionRunner
from projections.views import default_views
from tests.integration.operator_history import R1, R2, RC, TEST_A, TEST_C, Writer, write_operator_history
from tests.integration.test_api import http, make_deps


async def _letters(client: aioredis.Redis, after: str, count: int) -> tuple[list[dict[str, Any]], int]:
    return [d.as_dict() for d in await list_dead_letters(client, after=after, count=count)], await dlq_size(client)


class OperatorApiContract:
    @pytest.fixture
    def store_env(self) -> dict[str, str]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, store_env: dict[str, str]) -> Iterator[EventStore]:
        es = EventStore(store_env)
        write_operator_history(es)
        yield es
        es.close()

    @pytest.fixture
    def views(self, store: EventStore, store_env: dict[str, str], tmp_path: Path) -> Iterator[ViewDB]:
        db = ViewDB.from_store_env(store_env, tmp_path)
        ProjectionRunner(store, db, default_views()).catch_up()
        yield db
        db.close()

    @pytest.fixture
    async def bus(self, redis_url: str) -> AsyncIterator[aioredis.Redis]:
        client = aioredis.Redis.from_url(redis_url)
        yield client
        await client.aclose()

    @pytest.fixture
    async def api(self, bus: aioredis.Redis, store: EventStore, views: ViewDB) -> AsyncIterator[httpx.AsyncClient]:
        deps = make_deps(bus, store, views=views, fold_aggregate=aggregate_state,
                         dead_letters=lambda after, count: _letters(bus, after, count))
        async with http(deps) as client:
            yield client

    async def test_repairs_filter_and_page(self, api: httpx.AsyncClient) -> None:
        # Filters: project, status, class, strategy
        async def fingerprints(**params: Any) -> list[str]:
            answer = await api.get("/repairs", params=params)
            assert answer.status_code == 200, answer.text
            return sorted(r["fingerprint"] for r in answer.json()["repairs"])

        assert await fingerprints() == ["f1", "f2", "f3", "f4", "fc"]
        assert await fingerprints(project="web") == ["f4"]
        assert await fingerprints(status="abandoned") == ["f2"]
        assert await fingerprints(**{"class": "renamed_symbol"}) == ["f1", "f2"]
        assert await fingerprints(strategy="import_path") == ["f1", "f4"]
        assert await fingerprints(project="shop", strategy="import_path") == ["f1"]
        # Paging with a cursor visits every repair once, newest change first
        seen, cursor = [], None
        while True:
            page = (await api.get("/repairs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
            seen += [r["updated_position"] for r in page["repairs"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert len(seen) == 5 and seen == sorted(seen, reverse=True)
        # Paging with an offset gives the same order
        by_offset = (await api.get("/repairs", params={"limit": 2, "offset": 2})).json()
        assert [r["updated_position"] for r in by_offset["repairs"]] == seen[2:4]
        # Bad input is a clear 400/422
        for params in ({"status": "exploded"}, {"cursor": "abc"}, {"cursor": "5", "offset": 1}):
            answer = await api.get("/repairs", params=params)
            assert answer.status_code == 400 and answer.json()["errors"], params
        assert (await api.get("/repairs", params={"limit": 0})).status_code == 422

    async def test_one_repair_shows_its_timeline_candidates_evidence_and_patch(self, api: httpx.AsyncClient) -> None:
        detail = (await api.get(f"/repairs/{R1}")).json()
        assert detail["status"] == "applied" and detail["strategy"] == "import_path"
        # The failure and its evidence, from the first detection
        assert detail["failure"]["test_id"] == TEST_A and detail["failure"]["category"] == "renamed_symbol"
        # Candidates with scores, patches, verdicts and the validation evidence
        cands = detail["candidates"]
        assert [(c["rank"], c["strategy"], c["verdict"]) for c in cands] == [
            (1, "renamed_symbol", "rejected"), (2, "import_path", "validated")]
        assert all(c["confidence"] > 0 and "+++ b/tests/test_a.py" in c["patch"] for c in cands)
        assert cands[0]["evidence"]["guardrails"][0]["rule"] == "assertion_removed"
        assert cands[1]["evidence"]["passes"] == 3 and cands[1]["environment_id"]
        assert detail["patch"] == cands[1]["patch"]
        # The timeline: every event of the repair and its failures, environments included, in log order
        types = [e["type"] for e in detail["timeline"]]
        assert types == [
            "failure.detected", "heal.requested", "heal.proposed", "heal.proposed", "environment.requested",
            "environment.released", "heal.rejected", "environment.requested", "environment.released",
            "heal.validated", "repair.completed", "repair.applied", "failure.detected"]
        positions = [e["position"] for e in detail["timeline"]]
        assert positions == sorted(positions) and detail["timeline_truncated"] is False
        assert (await api.get(f"/repairs/{uuid.uuid4()}")).status_code == 404
        assert (await api.get("/repairs/not-a-uuid")).status_code == 422

    async def test_statistics(self, api: httpx.AsyncClient) -> None:
        answer = await api.get("/statistics")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        stats = answer.json()
        assert stats["repairs"]["heal_rate"] == 0.5
        assert stats["verified_precision"]["precision"] == 0.5
        assert stats["time_to_validated_repair"]["mean_seconds"] == 155.0
        assert stats["environment_minutes"]["minutes_per_repair"] == 3.0
        assert stats["storms"]["total"] == 1
        # Asked again without new events: the same answer (served from the remembered encoding)
        assert (await api.get("/statistics")).json() == stats

    async def test_statistics_answer_changes_once_a_new_event_is_projected(
        self, api: httpx.AsyncClient, store: EventStore, views: ViewDB
    ) -> None:
        before = (await api.get("/statistics")).json()
        # When another storm is recorded and the statistics view folds it
        Writer(store).run("web", "w9", [StormDetected(project="web", run_id="w9", failed_share=1.0,
                                                      reason="all failed")], 90000, failed=10)
        ProjectionRunner(store, views, default_views()).catch_up()
        # Then, once the reader's max age (50 ms) and one check have passed, GET /statistics says so, at the
        # new position
        for _ in range(500):
            after = (await api.get("/statistics")).json()
            if after != before:
                break
            await asyncio.sleep(0.01)
        assert after["storms"]["total"] == before["storms"]["total"] + 1 == 2
        assert after["position"] == store.max_position() > before["position"]
        assert after["repairs"] == before["repairs"]

    async def test_flaky_tests_and_run_trends(self, api: httpx.AsyncClient) -> None:
        [test] = (await api.get("/tests/flaky", params={"project": "shop", "current": True})).json()["tests"]
        assert test["test_id"] == TEST_C and test["flip_rate"] == 1.0 and len(test["last_flips"]) == 2
        assert test["quarantine"]["state"] == "applied" and test["quarantine"]["repair_id"] == str(RC)
        runs = (await api.get("/runs", params={"project": "shop"})).json()["projects"]
        assert [(p["project"], p["totals"]["runs"]) for p in runs] == [("shop", 3)]
        assert (await api.get("/runs", params={"since": "2026-03-03", "until": "2026-03-02"})).status_code == 400
        assert (await api.get("/runs", params={"since": "yesterday"})).status_code == 422

    async def test_dead_letters_are_listed_with_their_reasons(self, api: httpx.AsyncClient,
                                                              bus: aioredis.Redis) -> None:
        # Given two dead letters in cars.dlq
        for n in range(2):
            await dead_letter(bus, stream="cars.ingest", group="monitor", original_id=f"1-{n}",
                              raw_message=b"not json", reason=f"not JSON #{n}", deliveries=1, maxlen=1000)
        # When they are read one page at a time
        first = (await api.get("/dlq", params={"count": 1})).json()
        second = (await api.get("/dlq", params={"count": 1, "after": first["next"]})).json()
        # Then each comes with its reason and origin, and the total
        assert [d["reason"] for d in first["dead_letters"] + second["dead_letters"]] == ["not JSON #0", "not JSON #1"]
        assert first["total"] == 2 and first["dead_letters"][0]["stream"] == "cars.ingest"
        assert (await api.get("/dlq", params={"after": "DROP TABLE"})).status_code == 422

    async def test_audit_at_a_version_folds_the_first_n_events(self, api: httpx.AsyncClient) -> None:
        now = (await api.get(f"/audit/{R2}")).json()
        assert now["version"] == now["latest_version"] == len(now["events"])
        assert now["state"]["kind"] == "repair" and now["state"]["state"]["status"] == "abandoned"
        # After its first two events (requested, proposed), the repair was validating one candidate
        then = (await api.get(f"/audit/{R2}", params={"at_version": 2})).json()
        assert [e["type"] for e in then["events"]] == ["heal.requested", "heal.proposed"]
        assert then["version"] == 2 and then["latest_version"] == now["version"]
        assert then["state"]["state"]["status"] == "validating"
        assert [c["verdict"] for c in then["state"]["state"]["candidates"]] == [None]
        assert (await api.get(f"/audit/{R2}", params={"at_version": 99})).status_code == 404
        assert (await api.get(f"/audit/{R2}", params={"at_version": 0})).status_code == 422

    async def test_the_api_has_no_route_that_deletes_or_edits(self, api: httpx.AsyncClient) -> None:
        document = (await api.get("/openapi.json")).json()
        methods = {method.upper() for item in document["paths"].values() for method in item}
        assert methods <= {"GET", "POST"}
        assert not methods & {"DELETE", "PUT", "PATCH"}
        # And no POST route takes an event: only commands, which CARS turns into new events
        posts = [path for path, item in document["paths"].items() if "post" in item]
        assert posts and all(not any(w in path for w in ("delete", "edit", "events")) for path in posts)


class TestSQLite(OperatorApiContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(OperatorApiContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
