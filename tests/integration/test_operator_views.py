"""The operator views (statistics, repair timeline, flaky tests, run trends) over a real event store and
view database, on SQLite and PostgreSQL: the figures a mixed history must give, folding it live as it
is written, and `replay --check` of every view (all of `default_views`) after it."""

from __future__ import annotations

import asyncio
import json

import pytest

from bus.store import EventStore
from contracts.runs import StormDetected
from projections.db import ViewDB
from projections.flaky import list_flaky, quarantined_tests
from projections.replay import check, rebuild
from projections.runner import ProjectionRunner
from projections.statistics import StatisticsReader, read_statistics
from projections.timeline import repair_event_positions
from projections.trends import run_trends
from projections.views import default_views
from tests.integration.operator_history import R1, TEST_C, write_operator_history
from tests.integration.store_views import StoreAndViews


class OperatorViewsContract(StoreAndViews):
    def test_statistics_of_a_mixed_history(self, store: EventStore, db: ViewDB) -> None:
        # Given the mixed history, When the views catch up
        write_operator_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        stats = read_statistics(db)
        # Then four repairs were tried: f1 and f4 healed, fc quarantined, f2 abandoned; f2 and the product
        # regression f3 (never tried) are unrepairable
        assert stats["repairs"] == {"repairs": 4, "healed": 2, "abandoned": 1, "unrepairable": 2,
                                    "quarantined": 1, "heal_rate": 0.5, "rejected_candidates": 2}
        by_class = stats["heal_rate"]["by_class"]
        assert (by_class["renamed_symbol"]["repairs"], by_class["renamed_symbol"]["healed"]) == (2, 1)
        assert by_class["import_error"]["heal_rate"] == 1.0
        assert by_class["product_regression"] == {"repairs": 0, "healed": 0, "abandoned": 0, "unrepairable": 1,
                                                  "quarantined": 0, "heal_rate": None}
        assert stats["heal_rate"]["by_project"]["web"]["heal_rate"] == 1.0
        assert stats["heal_rate"]["by_strategy"]["renamed_symbol"] == {
            "proposed": 2, "validated": 0, "rejected": 2, "completed": 0, "heal_rate": 0.0}
        assert stats["heal_rate"]["by_strategy"]["import_path"] == {
            "proposed": 2, "validated": 2, "rejected": 0, "completed": 2, "heal_rate": 1.0}
        # And of two validated repairs, both applied, f1 failed again the same way: precision 1/2
        precision = stats["verified_precision"]
        assert {k: precision[k] for k in ("validated", "applied", "reverted", "rebroken", "verified", "precision")} == {
            "validated": 2, "applied": 2, "reverted": 0, "rebroken": 1, "verified": 1, "precision": 0.5}
        assert precision["by_project"]["web"]["precision"] == 1.0
        # And failure to validated repair took 210 s (f1) and 100 s (f4)
        assert stats["time_to_validated_repair"]["repairs"] == 2
        assert stats["time_to_validated_repair"]["mean_seconds"] == 155.0
        # And rejections and abandons are grouped by reason
        assert stats["rejected_candidates"] == {
            "total": 2, "by_reason": {"guardrail: assertion_removed": 1, "rerun failed": 1}}
        assert stats["abandoned_repairs"] == {"total": 1, "by_reason": {"every candidate was rejected (N tried)": 1}}
        # And the storm, and f1's two environments (60 s + 120 s) for one repair
        assert stats["storms"]["total"] == 1 and stats["storms"]["by_project"] == {"web": 1}
        assert [s["run_id"] for s in stats["storms"]["recent"]] == ["w1"]
        assert {k: stats["environment_minutes"][k] for k in ("environments", "minutes", "repairs",
                                                              "minutes_per_repair")} == {
            "environments": 2, "minutes": 3.0, "repairs": 1, "minutes_per_repair": 3.0}
        assert stats["position"] == store.max_position()

    def test_the_statistics_reader_follows_the_view_and_remembers_between_moves(
        self, store: EventStore, db: ViewDB
    ) -> None:
        writer = write_operator_history(store)
        runner = ProjectionRunner(store, db, default_views())
        runner.catch_up()
        reader = StatisticsReader(db, max_age_s=3600.0)
        first = reader.encoded()
        assert reader.recent() is first  # checked just now: served from memory
        # When another storm is recorded and folded
        writer.run("web", "w9", [StormDetected(project="web", run_id="w9", failed_share=1.0, reason="all failed")],
                   90000, failed=10)
        runner.catch_up()
        # Then a reader that checks again sees it, and a reader within its max age still has the old answer
        assert StatisticsReader(db, max_age_s=0.0)()["storms"]["total"] == 2
        assert reader.recent() is first
        assert reader.encoded() != first and reader()["storms"]["total"] == 2

    async def test_concurrent_statistics_requests_share_one_check_of_the_view(
        self, store: EventStore, db: ViewDB
    ) -> None:
        writer = write_operator_history(store)
        runner = ProjectionRunner(store, db, default_views())
        runner.catch_up()
        reader = StatisticsReader(db, max_age_s=0.5)
        # When 50 requests arrive together at a reader that has checked nothing yet
        answers = await asyncio.gather(*(reader.answer() for _ in range(50)))
        # Then one of them read the view, and every one got its answer
        assert reader.checks == 1 and len(set(answers)) == 1
        assert json.loads(answers[0]) == read_statistics(db)
        # When a storm is folded, within the max age the remembered answer still stands; after it, the new one
        writer.run("web", "w9", [StormDetected(project="web", run_id="w9", failed_share=1.0, reason="all failed")],
                   90000, failed=10)
        runner.catch_up()
        assert await reader.answer() == answers[0] and reader.checks == 1
        await asyncio.sleep(0.55)
        # After it, the requests that arrive while one check runs are answered from memory at once; the check
        # then gives the new answer to the requests after it
        later = await asyncio.gather(*(reader.answer() for _ in range(50)))
        assert set(later) == {answers[0]}
        for _ in range(500):
            if reader.checks == 2 and reader.recent() is not None:
                break
            await asyncio.sleep(0.01)
        assert json.loads(await reader.answer())["storms"]["total"] == 2 == read_statistics(db)["storms"]["total"]
        assert reader.checks == 2

    async def test_statistics_requests_wait_for_a_check_once_the_answer_is_too_old(
        self, store: EventStore, db: ViewDB
    ) -> None:
        write_operator_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        reader = StatisticsReader(db, max_age_s=0.0, stale_after_s=60.0)
        first = await reader.answer()
        # When the view can no longer be read (here: its tables are looked for under another prefix)
        reader.prefix = "cars_missing_"
        # Then, while the last answer is younger than stale_after_s, requests still get it without waiting
        assert await reader.answer() == first
        for _ in range(500):
            if reader._checking is None:
                break
            await asyncio.sleep(0.01)
        # But once it is older, a request waits for the check and gets its error, not the old answer
        reader.stale_after_s = 0.0
        with pytest.raises(Exception, match="cars_missing_tracking"):
            await reader.answer()

    def test_timeline_flaky_tests_and_trends(self, store: EventStore, db: ViewDB) -> None:
        write_operator_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        # The timeline of f1 holds both failures, every decision and both environments, in log order
        positions, total = repair_event_positions(db, str(R1))
        types = [t for _, t in positions]
        assert total == len(positions) == 13
        assert types[0] == "failure.detected" and types[-1] == "failure.detected"
        assert types.count("environment.requested") == types.count("environment.released") == 2
        assert [p for p, _ in positions] == sorted(p for p, _ in positions)
        # test_c flipped twice, is flaky since r3 and its quarantine is applied
        [flaky] = list_flaky(db, project="shop")
        assert (flaky["test_id"], flaky["flaky"], flaky["flips"], flaky["observations"]) == (TEST_C, True, 2, 3)
        assert [f["run_id"] for f in flaky["last_flips"]] == ["r2", "r3"]
        assert flaky["flaky_since"] == "2026-03-02T09:07:30.000000+00:00"
        assert flaky["quarantine"]["state"] == "applied"
        assert flaky["quarantine"]["since"] == "2026-03-02T09:07:50.000000+00:00"
        assert [t["test_id"] for t in quarantined_tests(db, "shop")] == [TEST_C]
        assert list_flaky(db, project="web") == []
        # Run trends: shop ran 3 times on one day; web twice, on two days, one a storm
        trends = {p["project"]: p for p in run_trends(db)["projects"]}
        assert trends["shop"]["totals"]["runs"] == 3 and trends["shop"]["totals"]["failed"] == 5
        assert [d["day"] for d in trends["web"]["days"]] == ["2026-03-02", "2026-03-03"]
        assert trends["web"]["days"][0]["storms"] == 1
        assert trends["web"]["last_run"]["run_id"] == "w2"
        assert [d["day"] for d in run_trends(db, project="web", since="2026-03-03")["projects"][0]["days"]] == [
            "2026-03-03"]

    def test_views_folded_live_event_by_event_equal_a_replay_from_zero(self, store: EventStore, db: ViewDB) -> None:
        # Given every view folded after each append (many small batches), as a running platform does
        runner = ProjectionRunner(store, db, default_views())
        original = store.append

        def append_and_fold(*args: object, **kwargs: object) -> list[int]:
            positions = original(*args, **kwargs)  # type: ignore[arg-type]
            runner.catch_up()
            return positions

        store.append = append_and_fold  # type: ignore[method-assign]
        write_operator_history(store)
        # When every view is rebuilt from position 0 and compared
        report = check(store, db, default_views())
        # Then nothing differs, for every view
        assert report.ok, report.render()
        assert {v.view for v in report.views} == {v.name for v in default_views()}
        before = read_statistics(db)
        rebuild(store, db, default_views())
        assert read_statistics(db) == before


class TestSQLite(OperatorViewsContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(OperatorViewsContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
