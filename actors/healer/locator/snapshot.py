"""The last-good element store: what each selector of a web test matched when the test last passed.

CARS's pytest plugin calls `element_snapshot(page_html, selector)` for every selector a passing web test
used and `save_snapshots` once per test. The `locator_drift` strategy loads them when the selector stops
matching, and looks for the element most like the one recorded.

One JSON file per test, `<repo>/.cars/locators/<safe name>.json`:

    {"version": 1, "test_id": "tests/test_shop.py::test_buy",
     "elements": {"#buy-button": {"tag": "button", "id": "buy-button", "classes": ["buy"],
                                  "text": "Buy now", "attributes": {"type": "submit"},
                                  "path": [{"tag": "html", "id": "", "classes": [], "index": 1}, ...]}}}

`path` runs from the top element down to the element itself; `index` is the 1-based position among the
parent's element children. Every field is bounded (`MAX_*`), so a file stays small whatever the page.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from attrs import field, frozen

from actors.healer.locator.dom import Element, is_visible, parse_html
from actors.healer.locator.errors import SelectorError, SnapshotStoreError
from contracts.codec import ContractError, structure, unstructure

STORE_DIR = ".cars/locators"
STORE_VERSION = 1
MAX_TEXT_CHARS = 200
MAX_CLASSES = 16
MAX_ATTRIBUTES = 24
MAX_ATTRIBUTE_CHARS = 200
MAX_PATH = 32
MAX_SELECTORS = 200
MAX_SELECTOR_CHARS = 512
MAX_STORE_BYTES = 512 * 1024
_MAX_NAME_CHARS = 100
# `id` and `class` have their own fields; `style` changes with every animation frame; `on*` is code.
_SKIPPED_ATTRIBUTES = frozenset({"id", "class", "style"})


@frozen(kw_only=True)
class PathStep:
    """One element on the way from the top of the page to the recorded element."""

    tag: str
    id: str = ""
    classes: tuple[str, ...] = ()
    index: int = 1


@frozen(kw_only=True)
class ElementSnapshot:
    """What an element looked like: its own features and its ancestry."""

    tag: str
    id: str = ""
    classes: tuple[str, ...] = ()
    text: str = ""
    attributes: dict[str, str] = field(factory=dict)
    path: tuple[PathStep, ...] = ()


@frozen(kw_only=True)
class LocatorRecord:
    """The store file of one test: selector -> the element it matched on the last passing run."""

    test_id: str
    elements: dict[str, ElementSnapshot] = field(factory=dict)
    version: int = STORE_VERSION


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def snapshot_of(element: Element) -> ElementSnapshot:
    """The bounded description of `element` that the store keeps and the scorer compares."""
    attributes: dict[str, str] = {}
    for name, value in element.attrs.items():
        if name in _SKIPPED_ATTRIBUTES or name.startswith("on") or len(attributes) >= MAX_ATTRIBUTES:
            continue
        attributes[_clip(name, MAX_ATTRIBUTE_CHARS)] = _clip(value, MAX_ATTRIBUTE_CHARS)
    chain = [element, *element.ancestors()][:MAX_PATH]  # keep the nearest ancestors when very deep
    path = tuple(
        PathStep(tag=e.tag, id=_clip(e.id, MAX_ATTRIBUTE_CHARS), classes=e.classes[:MAX_CLASSES], index=e.index)
        for e in reversed(chain)
    )
    return ElementSnapshot(
        tag=element.tag,
        id=_clip(element.id, MAX_ATTRIBUTE_CHARS),
        classes=element.classes[:MAX_CLASSES],
        text=_clip(element.text(), MAX_TEXT_CHARS),
        attributes=attributes,
        path=path,
    )


def element_snapshot(html: str, selector: str) -> ElementSnapshot | None:
    """The element `selector` matches in `html`, as the plugin records it on a passing run.

    Like a browser locator, the first visible match wins (the first match if none is visible). None
    when nothing matches or the selector is outside the supported CSS subset."""
    try:
        found = parse_html(html).select(selector)
    except SelectorError:
        return None
    if not found:
        return None
    return snapshot_of(next((e for e in found if is_visible(e)), found[0]))


def store_name(test_id: str) -> str:
    """A file name for `test_id` that is safe on every OS: readable characters of the id, clipped,
    plus a digest of the whole id, so that two ids never share a file."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", test_id).strip("._")[:_MAX_NAME_CHARS] or "test"
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:12]
    return f"{readable}-{digest}.json"


def store_relpath(test_id: str) -> str:
    """The store file of `test_id`, relative to the repository root (POSIX)."""
    return f"{STORE_DIR}/{store_name(test_id)}"


def read_record(path: Path) -> LocatorRecord | None:
    """The store file at `path`; None when there is none. Raises SnapshotStoreError when it is
    oversized or malformed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_STORE_BYTES:
        raise SnapshotStoreError(f"{path} is {size} bytes; the limit is {MAX_STORE_BYTES}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = structure(data, LocatorRecord)
    except (OSError, ValueError, ContractError) as exc:  # JSONDecodeError is a ValueError
        raise SnapshotStoreError(f"{path} is not a locator store file: {exc}") from exc
    if record.version != STORE_VERSION:
        raise SnapshotStoreError(f"{path} has store version {record.version}; expected {STORE_VERSION}")
    return record


def load_snapshots(root: str | Path, test_id: str) -> LocatorRecord | None:
    """The store file of `test_id` under the repository `root`; None when the test has none."""
    return read_record(Path(root) / store_relpath(test_id))


def _encode(record: LocatorRecord) -> str:
    return json.dumps(unstructure(record), ensure_ascii=False, sort_keys=True, indent=1) + "\n"


def save_snapshots(root: str | Path, test_id: str, elements: Mapping[str, ElementSnapshot]) -> Path:
    """Record what each selector of a passing test matched, merged over what was stored before (a test
    may use different selectors on different runs). Newer entries win; the oldest go first when the
    file would exceed MAX_SELECTORS entries or MAX_STORE_BYTES. The write is atomic."""
    root_path = Path(root).resolve()
    path = root_path / store_relpath(test_id)
    folder = path.parent.resolve()
    if root_path not in folder.parents:
        raise SnapshotStoreError(f"{STORE_DIR} leads outside {root_path} (through a symlink)")
    try:
        previous = read_record(path)
    except SnapshotStoreError:
        previous = None  # a damaged file is replaced by what this passing run saw
    merged: dict[str, ElementSnapshot] = {}
    if previous is not None and previous.test_id == test_id:
        merged.update((k, v) for k, v in previous.elements.items() if k not in elements)
    merged.update((k, v) for k, v in elements.items() if k.strip() and len(k) <= MAX_SELECTOR_CHARS)
    keys = list(merged)[-MAX_SELECTORS:]
    text = _encode(LocatorRecord(test_id=test_id, elements={k: merged[k] for k in keys}))
    while len(text.encode()) > MAX_STORE_BYTES and keys:
        keys = keys[1:]
        text = _encode(LocatorRecord(test_id=test_id, elements={k: merged[k] for k in keys}))
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "MAX_STORE_BYTES",
    "STORE_DIR",
    "ElementSnapshot",
    "LocatorRecord",
    "PathStep",
    "element_snapshot",
    "load_snapshots",
    "read_record",
    "save_snapshots",
    "snapshot_of",
    "store_name",
    "store_relpath",
]
