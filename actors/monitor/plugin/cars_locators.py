"""CARS locator recorder: what each selector of a passing web test matched (its last-good elements).

Loaded by ``cars_pytest`` from this folder; like it, it imports only the standard library and pytest.
For a test with a Playwright ``page`` fixture (sync API), the selectors the test hands to the page
(``page.locator(sel)``, ``page.click(sel)``, ``page.fill(sel, ...)``, ...) are noted. The element each one
matches is described by the browser itself (tag, id, classes, text, attributes and the path from the
top of the page), at first use when it is there already, else when the test has passed. When the test
passes, the descriptions are merged into ``<rootdir>/.cars/locators/<name>.json``: the store that CARS's
``locator_drift`` strategy reads when a selector stops matching (``actors/healer/locator/snapshot.py``;
this file writes that format within its limits, and CARS's tests check that both agree).

``CARS_LOCATORS=0`` turns recording off. Nothing here may break the user's test run: it never raises.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
from typing import Any

import pytest

# Mirrors actors/healer/locator/snapshot.py.
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

# The sync Page methods whose first argument is a selector.
PAGE_METHODS = (
    "check", "click", "dblclick", "dispatch_event", "eval_on_selector", "eval_on_selector_all", "fill", "focus",
    "get_attribute", "hover", "inner_html", "inner_text", "input_value", "is_checked", "is_disabled",
    "is_editable", "is_enabled", "is_hidden", "is_visible", "locator", "press", "query_selector",
    "query_selector_all", "select_option", "set_checked", "set_input_files", "tap", "text_content", "type",
    "uncheck", "wait_for_selector",
)

# Runs in the page: the first visible match (else the first match) described as the store keeps it.
# Text as CARS's HTML parser reads it: text nodes joined by spaces, whitespace collapsed, the contents of
# script/style/template/head/noscript skipped.
_DESCRIBE = """(els) => {
  const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
  const el = els.find(visible) || els[0];
  if (!el) return null;
  const SKIP = new Set(["SCRIPT", "STYLE", "TEMPLATE", "HEAD", "NOSCRIPT"]);
  const parts = [];
  const walk = (n) => {
    for (const c of n.childNodes) {
      if (c.nodeType === 3) parts.push(c.data);
      else if (c.nodeType === 1 && !SKIP.has(c.tagName)) walk(c);
    }
  };
  walk(el);
  const classes = (e) => [...new Set((e.getAttribute("class") || "").split(/\\s+/).filter(Boolean))];
  const path = [];
  for (let e = el; e; e = e.parentElement) {
    const index = e.parentElement ? [...e.parentElement.children].indexOf(e) + 1 : 1;
    path.unshift({tag: e.tagName.toLowerCase(), id: e.id || "", classes: classes(e), index: index});
  }
  const attributes = {};
  for (const a of el.attributes) {
    if (!["id", "class", "style"].includes(a.name) && !a.name.startsWith("on")) attributes[a.name] = a.value;
  }
  return {tag: el.tagName.toLowerCase(), id: el.id || "", classes: classes(el),
          text: parts.join(" ").split(/\\s+/).filter(Boolean).join(" "), attributes: attributes, path: path};
}"""


def store_name(test_id: str) -> str:
    """The store file name of `test_id` (as `actors.healer.locator.snapshot.store_name` makes it)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", test_id).strip("._")[:_MAX_NAME_CHARS] or "test"
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:12]
    return f"{readable}-{digest}.json"


def _clip(value: Any, limit: int) -> str:
    text: str = value if isinstance(value, str) else ""
    return text if len(text) <= limit else text[:limit]


def _bounded(found: dict[str, Any]) -> dict[str, Any]:
    """A browser description clipped to the store's limits (the nearest ancestors kept)."""
    attributes: dict[str, str] = {}
    for name, value in dict(found.get("attributes") or {}).items():
        if len(attributes) >= MAX_ATTRIBUTES:
            break
        attributes[_clip(name, MAX_ATTRIBUTE_CHARS)] = _clip(value, MAX_ATTRIBUTE_CHARS)
    path = [
        {"tag": _clip(s.get("tag"), MAX_ATTRIBUTE_CHARS), "id": _clip(s.get("id"), MAX_ATTRIBUTE_CHARS),
         "classes": [_clip(c, MAX_ATTRIBUTE_CHARS) for c in list(s.get("classes") or [])[:MAX_CLASSES]],
         "index": int(s.get("index") or 1)}
        for s in list(found.get("path") or [])[-MAX_PATH:]
    ]
    return {
        "tag": _clip(found.get("tag"), MAX_ATTRIBUTE_CHARS), "id": _clip(found.get("id"), MAX_ATTRIBUTE_CHARS),
        "classes": [_clip(c, MAX_ATTRIBUTE_CHARS) for c in list(found.get("classes") or [])[:MAX_CLASSES]],
        "text": _clip(found.get("text"), MAX_TEXT_CHARS), "attributes": attributes, "path": path,
    }


class _Watch:
    """The selectors one test used on its page, and what they matched."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.locate = page.locator  # the page's own, before it is wrapped
        self.elements: dict[str, dict[str, Any] | None] = {}

    def note(self, selector: Any, *, now: bool) -> None:
        if not isinstance(selector, str) or not selector.strip() or len(selector) > MAX_SELECTOR_CHARS:
            return
        if self.elements.get(selector) is None:
            self.elements[selector] = self.describe(selector) if now else None

    def describe(self, selector: str) -> dict[str, Any] | None:
        try:
            found = self.locate(selector).evaluate_all(_DESCRIBE)
        except Exception:
            return None  # not there (yet), or the page is gone
        if inspect.iscoroutine(found):
            found.close()  # an async page: cannot be awaited from a sync hook
            return None
        return _bounded(found) if isinstance(found, dict) else None

    def finish(self) -> dict[str, dict[str, Any]]:
        for selector, element in list(self.elements.items()):
            if element is None:
                self.elements[selector] = self.describe(selector)
        return {s: e for s, e in self.elements.items() if e is not None}


def _wrapped(watch: _Watch, name: str, original: Any) -> Any:
    def call(selector: Any, *args: Any, **kwargs: Any) -> Any:
        # An action's element is described before it acts (a click may leave the page); a locator is
        # lazy, so its element is described once the test has passed.
        try:
            watch.note(selector, now=name != "locator")
        except Exception:
            pass
        return original(selector, *args, **kwargs)

    call.__name__ = getattr(original, "__name__", name)
    call.__doc__ = getattr(original, "__doc__", None)
    return call


def save(rootdir: str, test_id: str, elements: dict[str, dict[str, Any]]) -> str | None:
    """Merge `elements` into the store file of `test_id` (newest first to stay; atomic). Returns its path,
    or None when nothing was written (nothing to write, or the folder leads outside the rootdir)."""
    if not elements:
        return None
    root = os.path.realpath(rootdir)
    folder = os.path.join(root, *STORE_DIR.split("/"))
    os.makedirs(folder, exist_ok=True)
    if not os.path.realpath(folder).startswith(root + os.sep):
        return None  # a symlink out of the project: write nothing there
    path = os.path.join(folder, store_name(test_id))
    merged: dict[str, Any] = {}
    try:
        if os.path.getsize(path) <= MAX_STORE_BYTES:
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
            if previous.get("version") == STORE_VERSION and previous.get("test_id") == test_id:
                merged.update((k, v) for k, v in dict(previous.get("elements") or {}).items() if k not in elements)
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or damaged: replaced by what this passing run saw
    merged.update(elements)
    keys = list(merged)[-MAX_SELECTORS:]

    def encode(names: list[str]) -> str:
        record = {"elements": {k: merged[k] for k in names}, "test_id": test_id, "version": STORE_VERSION}
        return json.dumps(record, ensure_ascii=False, sort_keys=True, indent=1) + "\n"

    text = encode(keys)
    while len(text.encode()) > MAX_STORE_BYTES and keys:
        keys = keys[1:]
        text = encode(keys)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


class LocatorRecorder:
    """The pytest hooks: watch a test's page while it runs, store what it matched when it passes."""

    def __init__(self, rootdir: str) -> None:
        self.rootdir = rootdir
        self.watches: dict[str, _Watch] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        page: Any = None
        try:
            funcargs = getattr(item, "funcargs", None) or {}
            page = funcargs.get("page") if isinstance(funcargs, dict) else None
            if page is None or not callable(getattr(page, "locator", None)) or \
                    not callable(getattr(page, "content", None)):
                page = None
            else:
                watch = _Watch(page)
                for name in PAGE_METHODS:
                    original = getattr(page, name, None)
                    if callable(original):
                        setattr(page, name, _wrapped(watch, name, original))
                self.watches[item.nodeid] = watch
        except Exception:
            pass
        try:
            yield
        finally:
            # The page's own methods again: a page shared by several tests is watched by one at a time.
            for name in PAGE_METHODS if page is not None else ():
                try:
                    if name in vars(page):
                        delattr(page, name)
                except Exception:
                    pass

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        outcome = yield
        if call.when != "call":
            return
        watch = self.watches.pop(item.nodeid, None)
        try:
            if watch is not None and outcome.get_result().passed:
                save(self.rootdir, item.nodeid, watch.finish())
        except Exception:
            pass  # a recording is a help, never a reason to fail a run


def enabled() -> bool:
    return os.environ.get("CARS_LOCATORS", "1").strip().lower() not in ("0", "false", "no", "off")


__all__ = ["PAGE_METHODS", "LocatorRecorder", "enabled", "save", "store_name"]
