"""The last-good element store: what a passing web test's selectors matched, one JSON file per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.healer.locator.errors import SnapshotStoreError
from actors.healer.locator.snapshot import (
    MAX_SELECTORS,
    MAX_STORE_BYTES,
    MAX_TEXT_CHARS,
    ElementSnapshot,
    PathStep,
    element_snapshot,
    load_snapshots,
    save_snapshots,
    store_name,
    store_relpath,
)

PAGES = Path(__file__).parent / "pages"
TEST_ID = "tests/test_shop.py::TestShop::test_buy[chromium]"


def _page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


def test_element_snapshot_records_features_and_path() -> None:
    # Given the shop page before the redesign
    # When the plugin records what `#buy-button` matched
    snap = element_snapshot(_page("shop_before.html"), "#buy-button")
    # Then the element's own features and its path from the top are kept
    assert snap is not None
    assert (snap.tag, snap.id, snap.classes, snap.text) == ("button", "buy-button", ("buy",), "Buy now")
    assert snap.attributes == {"type": "submit"}
    assert [s.tag for s in snap.path] == ["html", "body", "main", "div", "div", "form", "button"]
    assert snap.path[-1] == PathStep(tag="button", id="buy-button", classes=("buy",), index=4)
    assert snap.path[2] == PathStep(tag="main", id="content", classes=(), index=2)


def test_element_snapshot_prefers_the_first_visible_match() -> None:
    # Given a hidden and a visible element matching the same selector
    html = '<div hidden><a class="go">old</a></div><a class="go">new</a>'
    # When recorded, Then the visible one is what a browser locator would have used
    snap = element_snapshot(html, "a.go")
    assert snap is not None and snap.text == "new"


@pytest.mark.parametrize("selector", ["#nope", "text=Buy now"])
def test_element_snapshot_is_none_without_a_css_match(selector: str) -> None:
    # Given a selector matching nothing, or outside the CSS subset, When recorded, Then there is no snapshot
    assert element_snapshot(_page("shop_before.html"), selector) is None


def test_element_snapshot_bounds_its_fields() -> None:
    # Given an element with a huge text and many attributes
    attrs = " ".join(f'data-x{i}="{"v" * 500}"' for i in range(40))
    html = f'<p id="t" {attrs} onclick="steal()" style="color:red">{"word " * 1000}</p>'
    # When recorded
    snap = element_snapshot(html, "#t")
    # Then text, attribute count and values are clipped; style and handlers are not kept
    assert snap is not None
    assert len(snap.text) == MAX_TEXT_CHARS
    assert len(snap.attributes) == 24 and all(len(v) == 200 for v in snap.attributes.values())
    assert "onclick" not in snap.attributes and "style" not in snap.attributes


def test_store_names_are_safe_and_distinct() -> None:
    # Given test ids with path separators, brackets and colons, two of them differing only in punctuation
    a = store_name("tests/a.py::test_x[1:2]")
    b = store_name("tests/a.py::test_x[1/2]")
    # When named, Then names are plain file names, distinct, and bounded
    assert a != b
    for name in (a, b, store_name("../../etc/passwd"), store_name("x" * 5000)):
        assert "/" not in name and "\\" not in name and ":" not in name and not name.startswith(".")
        assert name.endswith(".json") and len(name) <= 120
    assert store_relpath(TEST_ID).startswith(".cars/locators/")


def test_save_then_load_round_trips_in_the_documented_shape(tmp_path: Path) -> None:
    # Given a snapshot recorded on a passing run
    snap = element_snapshot(_page("shop_before.html"), "#buy-button")
    assert snap is not None
    # When it is saved and loaded again
    path = save_snapshots(tmp_path, TEST_ID, {"#buy-button": snap})
    record = load_snapshots(tmp_path, TEST_ID)
    # Then the same snapshot comes back, from the documented JSON shape under .cars/locators
    assert path == tmp_path / store_relpath(TEST_ID)
    assert record is not None and record.test_id == TEST_ID and record.elements == {"#buy-button": snap}
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["test_id"] == TEST_ID
    element = data["elements"]["#buy-button"]
    assert set(element) == {"tag", "id", "classes", "text", "attributes", "path"}
    assert set(element["path"][0]) == {"tag", "id", "classes", "index"}
    assert not list(path.parent.glob(".tmp-*"))  # the atomic write left no temporary file


def test_save_merges_with_what_was_recorded_before(tmp_path: Path) -> None:
    # Given a store holding two selectors
    old = ElementSnapshot(tag="a", text="old")
    save_snapshots(tmp_path, TEST_ID, {"#a": old, "#b": old})
    # When a later run records one of them again and a new one
    new = ElementSnapshot(tag="a", text="new")
    save_snapshots(tmp_path, TEST_ID, {"#b": new, "#c": new})
    # Then newer entries win and older ones stay
    record = load_snapshots(tmp_path, TEST_ID)
    assert record is not None
    assert record.elements == {"#a": old, "#b": new, "#c": new}


def test_save_keeps_the_newest_selectors_within_bounds(tmp_path: Path) -> None:
    # Given more selectors than a store keeps, each with a long text
    many = {f"#s{i}": ElementSnapshot(tag="p", text="t" * MAX_TEXT_CHARS) for i in range(MAX_SELECTORS + 50)}
    # When saved
    path = save_snapshots(tmp_path, TEST_ID, many)
    # Then only the newest MAX_SELECTORS are kept and the file stays under its size limit
    record = load_snapshots(tmp_path, TEST_ID)
    assert record is not None and len(record.elements) == MAX_SELECTORS
    assert "#s0" not in record.elements and f"#s{MAX_SELECTORS + 49}" in record.elements
    assert path.stat().st_size <= MAX_STORE_BYTES


def test_load_without_a_store_is_none(tmp_path: Path) -> None:
    # Given a repository where the test never passed under CARS, When loaded, Then there is no record
    assert load_snapshots(tmp_path, TEST_ID) is None


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"test_id": "t", "elements": {"#a": {"tag": 3}}}', '{"test_id": "t", "elements": [], "x": 1}'],
)
def test_load_rejects_malformed_stores(tmp_path: Path, content: str) -> None:
    # Given a damaged store file
    path = tmp_path / store_relpath(TEST_ID)
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    # When loaded, Then a SnapshotStoreError names the file
    with pytest.raises(SnapshotStoreError, match="locators"):
        load_snapshots(tmp_path, TEST_ID)
    # And the next passing run replaces it
    save_snapshots(tmp_path, TEST_ID, {"#a": ElementSnapshot(tag="a")})
    record = load_snapshots(tmp_path, TEST_ID)
    assert record is not None and list(record.elements) == ["#a"]


def test_load_refuses_oversized_stores(tmp_path: Path) -> None:
    # Given a store file larger than the limit
    path = tmp_path / store_relpath(TEST_ID)
    path.parent.mkdir(parents=True)
    path.write_text(" " * (MAX_STORE_BYTES + 1), encoding="utf-8")
    # When loaded, Then it is refused before being parsed
    with pytest.raises(SnapshotStoreError, match="limit"):
        load_snapshots(tmp_path, TEST_ID)
