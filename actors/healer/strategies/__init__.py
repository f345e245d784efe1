"""Every healing strategy, one small class per file (STYLE rule 11), behind the `Strategy` protocol.

`all_strategies()` is the one list the healer runs; order does not rank candidates (confidence does),
but it fixes the order proposals are produced in, so runs stay reproducible.
"""

from __future__ import annotations

from actors.healer.strategies.assertion_drift import AssertionDrift
from actors.healer.strategies.fixture_rename import FixtureRename
from actors.healer.strategies.flaky_quarantine import FlakyQuarantine
from actors.healer.strategies.import_path import ImportPath
from actors.healer.strategies.locator_drift import LocatorDrift
from actors.healer.strategies.renamed_symbol import RenamedSymbol
from actors.healer.strategies.signature_drift import SignatureDrift
from actors.healer.strategies.timeout import RaiseTimeout
from actors.healer.strategy import Strategy


def all_strategies() -> list[Strategy]:
    """A fresh instance of every strategy."""
    return [
        ImportPath(),
        RenamedSymbol(),
        SignatureDrift(),
        FixtureRename(),
        LocatorDrift(),
        RaiseTimeout(),
        AssertionDrift(),
        FlakyQuarantine(),
    ]


__all__ = [
    "AssertionDrift",
    "FixtureRename",
    "FlakyQuarantine",
    "ImportPath",
    "LocatorDrift",
    "RaiseTimeout",
    "RenamedSymbol",
    "SignatureDrift",
    "all_strategies",
]
