"""The strategy list the healer runs."""

from __future__ import annotations

from actors.healer.strategies import all_strategies


def test_every_strategy_has_a_unique_name_and_the_protocol_methods() -> None:
    # When the list is built
    strategies = all_strategies()
    names = [s.name for s in strategies]
    # Then names are unique and cover the Python strategies, and every one is callable through the protocol
    assert len(names) == len(set(names))
    assert {
        "import_path", "renamed_symbol", "signature_drift", "fixture_rename", "timeout", "assertion_drift",
        "flaky_quarantine",
    } <= set(names)
    assert all(callable(s.applies) and callable(s.propose) for s in strategies)
    # And each call gives fresh instances (no shared state between healer runs)
    assert all(a is not b for a, b in zip(strategies, all_strategies(), strict=True))
