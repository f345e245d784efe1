"""Locators of web tests: a light DOM with a CSS matcher, the last-good element store, and the
similarity score the `locator_drift` strategy ranks candidates with."""

from __future__ import annotations

from actors.healer.locator.dom import Document, Element, css_path, is_unique, is_visible, parse_html, parse_selector
from actors.healer.locator.errors import LocatorError, SelectorError, SnapshotStoreError
from actors.healer.locator.score import Part, Score, SelectorDescription, describe_selector, score, score_description
from actors.healer.locator.snapshot import (
    ElementSnapshot,
    LocatorRecord,
    PathStep,
    element_snapshot,
    load_snapshots,
    read_record,
    save_snapshots,
    snapshot_of,
    store_relpath,
)

__all__ = [
    "Document",
    "Element",
    "ElementSnapshot",
    "LocatorError",
    "LocatorRecord",
    "Part",
    "PathStep",
    "Score",
    "SelectorDescription",
    "SelectorError",
    "SnapshotStoreError",
    "css_path",
    "describe_selector",
    "element_snapshot",
    "is_unique",
    "is_visible",
    "load_snapshots",
    "parse_html",
    "parse_selector",
    "read_record",
    "save_snapshots",
    "score",
    "score_description",
    "snapshot_of",
    "store_relpath",
]
