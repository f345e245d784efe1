"""CARS pytest plugin: writes one JSON report of a test session, with failure evidence.

Standalone: it imports only the standard library, pytest and its sibling ``cars_locators``, so it can be
loaded into any project's Python environment (``PYTHONPATH=<this folder> PYTEST_PLUGINS=cars_pytest``).

It is inert unless ``--cars-report=PATH`` is given or the ``CARS_REPORT`` environment variable is set.
Then, at session end, it writes (atomically) to PATH::

    {"format": "cars-pytest", "version": 1, "collected": N,
     "results": [{"test_id", "outcome", "duration_s", "evidence": {...} | null}, ...]}

Each result has the shape of ``contracts.values.TestResult``. Evidence is gathered only for failures and
errors: exception type and message, the failing frame, the test file and the failing line in it, the
two sides of a failed comparison, the fixtures available to the test (setup errors), and for web tests
with a ``page`` fixture the page HTML and the selector the failing call used. Collection errors (an
ImportError in a test module) are reported as an ``error`` result whose test id is the module's path.

Quarantine: whenever the plugin is loaded (with or without a report), the tests listed in the project's
quarantine file (``.cars-quarantine`` at the rootdir, or ``CARS_QUARANTINE_FILE``; one test id per line,
``#`` comments) are skipped with the reason "quarantined by CARS". Load the plugin in CI
(``-p cars_pytest``) for the quarantine CARS writes to take effect there too.

Last-good locators: whenever the plugin is loaded, a passing test with a Playwright ``page`` records
what each selector it used matched, for the ``locator_drift`` strategy (``cars_locators``;
``CARS_LOCATORS=0`` turns it off).

Nothing here may break the user's test run: evidence gathering never raises.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import traceback
import types
from typing import Any

import pytest

try:  # public since pytest 7
    from pytest import CollectReport
except ImportError:  # pragma: no cover
    from _pytest.reports import CollectReport

try:  # the sibling module, when this folder is on the path (it always is when CARS runs the tests)
    import cars_locators
except ImportError:  # pragma: no cover
    cars_locators = None

FORMAT = "cars-pytest"
VERSION = 1

# Copied from contracts/limits.py (this file must not import CARS code).
MAX_ID = 512
MAX_TEXT = 8 * 1024
MAX_TRACEBACK = 4 * MAX_TEXT
MAX_PAGE_HTML = 64 * MAX_TEXT  # 512 KiB
MAX_OPERATOR = 8
MAX_FIXTURES = 1000

# Path parts that mark code that is not the project's own, even inside the rootdir.
_FOREIGN_PARTS = frozenset({"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox"})

# How web-test libraries name the element a failing call was after.
_SELECTOR_PATTERNS = (
    # Playwright: 'waiting for locator("#buy")' / 'Locator.click: ... locator("#buy")'
    re.compile(r"""locator\((?P<q>["'])(?P<sel>(?:\\.|(?!(?P=q)).)*)(?P=q)"""),
    # Playwright's get_by_* locators: keep the whole call, it is the selector
    re.compile(r"""(?P<sel>get_by_[a-z_]+\((?:[^()"']|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')*\))"""),
    # Selenium: 'Unable to locate element: {"method":"css selector","selector":"#buy"}'
    re.compile(r'''"selector"\s*:\s*"(?P<sel>(?:\\.|[^"\\])*)"'''),
)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, keeping its head; surrogates made encodable."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= limit:
        return text
    marker = "…"
    return text[: limit - len(marker)] + marker


def clip_middle(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters by removing its middle.

    Tracebacks keep their useful parts at both ends: Python prints the innermost frame last, Java first.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= limit:
        return text
    marker = f"\n… [{len(text) - limit} characters cut] …\n"
    keep = max(limit - len(marker) - 16, 0)  # 16: room for the count growing by a digit
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def _safe_repr(value: object) -> str:
    try:
        return clip(repr(value), MAX_TEXT)
    except Exception as exc:  # a user's __repr__ may raise anything
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _type_name(exc: BaseException) -> str:
    # The same spelling Python's traceback uses: builtins bare, everything else module-qualified.
    cls = type(exc)
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _root_exception(exc: BaseException) -> BaseException:
    # pytest wraps an ImportError or SyntaxError in a test module into a CollectError raised `from` it;
    # the cause is what the user has to fix.
    seen = 0
    while type(exc).__name__ == "CollectError" and exc.__cause__ is not None and seen < 10:
        exc = exc.__cause__
        seen += 1
    return exc


def _selector_of(exc: BaseException, message: str) -> str | None:
    attr = getattr(exc, "selector", None)
    if isinstance(attr, str) and attr.strip():
        return clip(attr, MAX_ID)
    for pattern in _SELECTOR_PATTERNS:
        match = pattern.search(message)
        if match:
            sel = match.group("sel")
            if pattern is not _SELECTOR_PATTERNS[1]:
                try:
                    sel = json.loads(f'"{sel}"')  # undo \" and \\ escapes
                except ValueError:
                    pass
            return clip(sel, MAX_ID)
    return None


def _fixture_names_from(text: str) -> list[str]:
    # FixtureLookupError's text lists them: ">       available fixtures: a, b, c"
    match = re.search(r"available fixtures:\s*(.*)", text)
    if not match:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


class _Recorder:
    """Collects results and evidence during one session; registered only when a report is wanted."""

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.config = config
        self.path = path
        # `rootpath` since pytest 6.1; `rootdir` (a py.path) before.
        self.rootdir = str(getattr(config, "rootpath", None) or getattr(config, "rootdir", "") or os.getcwd())
        self.collected = -1
        self.results: dict[str, dict[str, Any]] = {}
        self.evidence: dict[str, dict[str, Any]] = {}
        self.compared: dict[str, str] | None = None

    # ---- paths and frames

    def _relative(self, path: str) -> str | None:
        """`path` relative to the rootdir (POSIX), or None when it is not the project's own code."""
        try:
            absolute = os.path.abspath(path)
            rel = os.path.relpath(absolute, self.rootdir)
        except ValueError:  # another drive on Windows
            return None
        parts = rel.replace(os.sep, "/").split("/")
        if rel.startswith("..") or os.path.isabs(rel) or _FOREIGN_PARTS.intersection(parts):
            return None
        return "/".join(parts)

    def _frames(self, exc: BaseException) -> list[tuple[str, int, str]]:
        """(relative path, line, function) of the frames in the project's code, outermost first."""
        frames = []
        try:
            for frame in traceback.extract_tb(exc.__traceback__):
                rel = self._relative(frame.filename) if not frame.filename.startswith("<") else None
                if rel is not None:
                    frames.append((rel, frame.lineno or 0, frame.name))
        except Exception:
            pass
        if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
            rel = self._relative(exc.filename)
            if rel is not None:  # the offending line is not a frame of the traceback
                frames.append((rel, exc.lineno, "<module>"))
        return frames

    # ---- evidence

    def _evidence(
        self,
        exc: BaseException,
        *,
        longrepr: str,
        test_file: str | None,
        test_line: int | None,
        item: pytest.Item | None = None,
        setup: bool = False,
    ) -> dict[str, Any]:
        exc = _root_exception(exc)
        message = self._message(exc)
        frames = self._frames(exc)
        failing_frame = None
        if frames:
            path, lineno, func = frames[-1]
            failing_frame = clip(f"{path}:{lineno} in {func}", MAX_ID)
        # The line to look at is the last one the test file itself reached; the def line otherwise.
        in_test = [f for f in frames if f[0] == test_file]
        line = in_test[-1][1] if in_test else test_line
        fixtures: list[str] = []
        if type(exc).__name__ == "FixtureLookupError" or setup:
            fixtures = _fixture_names_from(longrepr) or self._fixtures_of(item)
        compared = None
        if isinstance(exc, AssertionError) and self.compared is not None:
            compared = self.compared
        selector = _selector_of(exc, message)
        page_html = self._page_html(item) if item is not None else None
        return {
            "exception_type": clip(_type_name(exc), MAX_ID),
            "message": clip(message, MAX_TEXT),
            "traceback": clip_middle(longrepr, MAX_TRACEBACK) if longrepr else None,
            "file": clip(test_file, MAX_ID) if test_file else None,
            "line": line,
            "failing_frame": failing_frame,
            "compared": compared,
            "fixtures_available": [clip(f, MAX_ID) for f in sorted(set(fixtures))[:MAX_FIXTURES]],
            "selector": selector,
            "page_html": page_html,
        }

    @staticmethod
    def _message(exc: BaseException) -> str:
        if type(exc).__name__ == "FixtureLookupError":
            # Its str() is an args tuple; the readable text comes from formatrepr().
            try:
                text = str(exc.formatrepr().errorstring)  # type: ignore[attr-defined]
                return text.splitlines()[0].strip() if text.strip() else text
            except Exception:
                pass
            argname = getattr(exc, "argname", None)
            if argname:
                return f"fixture {argname!r} not found"
        try:
            if isinstance(exc, pytest.fail.Exception):
                return str(exc.msg)
            return str(exc)
        except Exception:
            return f"<unprintable {type(exc).__name__}>"

    def _fixtures_of(self, item: pytest.Item | None) -> list[str]:
        # When pytest's text does not list them: ask the fixture manager which fixtures this item sees.
        # Private API that varies between pytest versions, hence the guard.
        if item is None:
            return []
        try:
            fm: Any = item.session._fixturemanager
            known = getattr(fm, "_arg2fixturedefs", None) or getattr(fm, "_arg2node2fixturedefs", None) or {}
            return [name for name in list(known) if fm.getfixturedefs(name, item)]
        except Exception:
            info = getattr(item, "_fixtureinfo", None)
            return list(getattr(info, "names_closure", []) or [])

    @staticmethod
    def _page_html(item: pytest.Item) -> str | None:
        funcargs = getattr(item, "funcargs", None) or {}
        page = funcargs.get("page") if isinstance(funcargs, dict) else None
        content = getattr(page, "content", None)
        if not callable(content):
            return None
        try:
            html = content()
        except Exception:
            return None
        if isinstance(html, types.CoroutineType):
            html.close()  # an async page: cannot be awaited from a sync hook
            return None
        return clip(html, MAX_PAGE_HTML) if isinstance(html, str) else None

    # ---- hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_assertrepr_compare(self, config: pytest.Config, op: str, left: object, right: object) -> None:
        # Called while pytest explains a failed comparison; returning None leaves its output alone.
        if len(op) <= MAX_OPERATOR:
            self.compared = {"left": _safe_repr(left), "right": _safe_repr(right), "operator": op}
        return None

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.compared = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        outcome = yield
        report = outcome.get_result()
        # Evidence is taken here, not in logreport: the item's fixtures (a `page`) are still alive.
        if not report.failed or call.excinfo is None:
            return
        try:
            test_file, test_line0, _ = item.location
            self.evidence.setdefault(report.nodeid, self._evidence(
                call.excinfo.value,
                longrepr=report.longreprtext,
                test_file=test_file.replace(os.sep, "/"),
                test_line=(test_line0 + 1) if test_line0 is not None else None,
                item=item,
                setup=report.when == "setup",
            ))
        except Exception:
            pass
        finally:
            self.compared = None

    def pytest_exception_interact(self, node: Any, call: pytest.CallInfo[Any], report: Any) -> None:
        # The one hook that sees a collection error's exception (pytest_collectreport only gets text).
        if not isinstance(report, CollectReport) or call.excinfo is None:
            return
        try:
            path = self._relative(str(getattr(node, "path", None) or node.fspath))
            self.evidence.setdefault(self._collect_id(report, path), self._evidence(
                call.excinfo.value, longrepr=report.longreprtext, test_file=path, test_line=None,
            ))
        except Exception:
            pass

    @staticmethod
    def _collect_id(report: CollectReport, path: str | None) -> str:
        return report.nodeid or path or "<collection>"

    def pytest_collectreport(self, report: CollectReport) -> None:
        if not report.failed:
            return
        path = None
        try:
            path = self._relative(str(report.fspath))
        except Exception:
            pass
        test_id = self._collect_id(report, path)
        self.results[test_id] = {"test_id": clip(test_id, MAX_ID), "outcome": "error", "duration_s": 0.0}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.setdefault(
            report.nodeid, {"test_id": clip(report.nodeid, MAX_ID), "outcome": "passed", "duration_s": 0.0},
        )
        duration = report.duration
        if isinstance(duration, (int, float)) and duration == duration and duration >= 0:
            result["duration_s"] += float(duration)
        if report.when == "setup":
            if report.failed:
                result["outcome"] = "error"
            elif report.skipped:
                result["outcome"] = "skipped"
        elif report.when == "call":
            if report.failed:
                result["outcome"] = "failed"
            elif report.skipped:  # skip() in the body, or an expected failure (xfail)
                result["outcome"] = "skipped"
        elif report.when == "teardown" and report.failed and result["outcome"] in ("passed", "skipped"):
            result["outcome"] = "error"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        results = []
        for test_id, result in self.results.items():
            evidence = self.evidence.get(test_id) if result["outcome"] in ("failed", "error") else None
            if result["outcome"] in ("failed", "error") and evidence is None:
                evidence = self._evidence_from_text(test_id)
            results.append({**result, "evidence": evidence})
        if self.collected < 0:
            self.collected = len(getattr(session, "items", []) or [])
        document = {"format": FORMAT, "version": VERSION, "collected": self.collected, "results": results}
        self._write(document)

    def _evidence_from_text(self, test_id: str) -> dict[str, Any] | None:
        # A failure whose exception we did not see (another plugin made the report): keep what we know.
        return {
            "exception_type": None, "message": None, "traceback": None,
            "file": clip(test_id.partition("::")[0], MAX_ID), "line": None, "failing_frame": None,
            "compared": None, "fixtures_available": [], "selector": None, "page_html": None,
        }

    def _write(self, document: dict[str, Any]) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        # Written to a temporary file and renamed, so a reader never sees half a report.
        fd, tmp = tempfile.mkstemp(prefix=".cars-report-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, ensure_ascii=False, allow_nan=False)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cars", "CARS (Continuous Auto-Repair Service)")
    group.addoption(
        "--cars-report", dest="cars_report", metavar="PATH", default=None,
        help="write a CARS JSON report of this session to PATH (also: env CARS_REPORT)",
    )


def quarantined_ids(text: str) -> set[str]:
    """The test ids a quarantine file lists (comments and blank lines ignored)."""
    ids = set()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    name = os.environ.get("CARS_QUARANTINE_FILE") or ".cars-quarantine"
    path = os.path.join(str(config.rootpath), name)
    try:
        with open(path, encoding="utf-8") as f:
            listed = quarantined_ids(f.read(1024 * 1024))
    except OSError:
        return
    for item in items:
        if item.nodeid in listed or item.nodeid.split("[", 1)[0] in listed:
            item.add_marker(pytest.mark.skip(reason="quarantined by CARS (flaky): see " + name))


def pytest_configure(config: pytest.Config) -> None:
    if cars_locators is not None and cars_locators.enabled():
        rootdir = str(getattr(config, "rootpath", None) or getattr(config, "rootdir", "") or os.getcwd())
        config.pluginmanager.register(cars_locators.LocatorRecorder(rootdir), "cars-locators")
    path = config.getoption("cars_report", None) or os.environ.get("CARS_REPORT")
    if not path:
        return
    if hasattr(config, "workerinput"):
        return  # a pytest-xdist worker: its controller writes the report
    config.pluginmanager.register(_Recorder(config, str(path)), "cars-recorder")


__all__ = [
    "FORMAT", "VERSION", "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure", "quarantined_ids",
]
