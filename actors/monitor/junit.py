"""Read JUnit XML test reports (pytest, Maven Surefire, jest-junit, gotestsum) into a `RunReported`.

The XML comes from outside, so it is parsed defensively: the size is checked before parsing, and
`defusedxml` refuses DTDs, entity declarations and external references (billion laughs, XXE). Anything
that cannot be read becomes a `ReportError` with a reason, never another exception.

Over-long texts are cut to the contract limits instead of failing validation: a CI report with one huge
traceback is still a good report.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

from actors.errors import Rejected
from contracts.limits import MAX_ID, MAX_RESULTS, MAX_TEXT
from contracts.runs import RunReported
from contracts.values import FailureEvidence, Outcome, TestResult

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_TRACEBACK = 4 * MAX_TEXT  # FailureEvidence.traceback's bound
MAX_DEPTH = 32  # nested <testsuite> levels; real reports use one or two


class ReportError(Rejected):
    """A test report that cannot be read: too big, not XML or JSON, hostile, or of an unknown shape."""


class Flavour(enum.Enum):
    """Which tool wrote a JUnit report; it decides how test ids and tracebacks are read."""

    PYTEST = "pytest"
    SUREFIRE = "surefire"
    JEST = "jest"
    GO = "go"
    GENERIC = "generic"


# ---- text limits (shared with ingest.py)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, keeping its head."""
    if len(text) <= limit:
        return text
    marker = "…"
    return text[: limit - len(marker)] + marker


def clip_middle(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters by removing its middle.

    Tracebacks keep their useful parts at both ends: Python prints the innermost frame last, Java first.
    """
    if len(text) <= limit:
        return text
    marker = f"\n… [{len(text) - limit} characters cut] …\n"
    keep = max(limit - len(marker) - 16, 0)  # 16: room for the count growing by a digit
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def bounded_id(test_id: str) -> str:
    """A test id within MAX_ID. A longer one keeps its head and a hash of the whole, so that two long
    ids that share a prefix stay distinct and the same id always maps to the same result."""
    if len(test_id) <= MAX_ID:
        return test_id
    digest = hashlib.sha256(test_id.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{test_id[: MAX_ID - 18]}…#{digest}"


# ---- parsing


def parse_junit(
    data: bytes,
    *,
    project: str,
    run_id: str,
    commit: str | None = None,
    repo_path: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RunReported:
    """The `run.reported` command for one JUnit XML report.

    Test ids: pytest reports map back to pytest node ids (`tests/test_cart.py::TestX::test_y`), using
    the `file` attribute when present; other tools give `classname::name`. `source` is `junit-<tool>`.
    Raises ReportError for input that is too big, not XML, hostile, or not a JUnit report.
    """
    flavour, results = junit_results(data, repo_path=repo_path, max_bytes=max_bytes)
    try:
        return RunReported(
            project=project, run_id=run_id, commit=commit, repo_path=repo_path, results=results,
            source=f"junit-{flavour.value}",
        )
    except ValueError as exc:  # project, run_id or commit out of bounds
        raise ReportError(f"cannot report this run: {exc}") from None


def junit_results(
    data: bytes, *, repo_path: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[Flavour, tuple[TestResult, ...]]:
    """The tool that wrote a JUnit XML report, and its test results."""
    root = _parse(data, max_bytes)
    flavour = _flavour(root)
    results = []
    for suite, case in _testcases(root):
        results.append(_result(suite, case, flavour, repo_path))
        if len(results) > MAX_RESULTS:
            raise ReportError(f"the report has more than {MAX_RESULTS} test cases")
    return flavour, tuple(results)


def _parse(data: bytes, max_bytes: int) -> Element:
    if not isinstance(data, bytes | bytearray):
        raise ReportError(f"a report must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise ReportError(f"the report is {len(data)} bytes; the limit is {max_bytes}")
    # Leading whitespace before the XML declaration is a writer's slip, not worth refusing a report for.
    data = bytes(data).removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not data:
        raise ReportError("the report is empty")
    try:
        # forbid_dtd: a JUnit report never needs one, and refusing it stops entity tricks at the door.
        root: Element = safe_xml.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                            forbid_external=True)
    except DefusedXmlException as exc:
        raise ReportError(f"refused unsafe XML: {type(exc).__name__}: {exc}") from None
    except ParseError as exc:
        raise ReportError(f"not well-formed XML: {exc}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ReportError(f"unreadable XML: {type(exc).__name__}: {exc}") from None
    if _local(root.tag) not in ("testsuites", "testsuite"):
        raise ReportError(f"the root element is <{_local(root.tag)}>; a JUnit report has <testsuites> or <testsuite>")
    return root


def _local(tag: Any) -> str:
    # Some writers put the report in a namespace; the element names are what matter.
    text = tag if isinstance(tag, str) else ""
    return text.rpartition("}")[2]


def _testcases(root: Element) -> Iterator[tuple[Element, Element]]:
    """(innermost suite, testcase) pairs in document order. Iterative, with a depth bound, so a deeply
    nested hostile document cannot exhaust the stack."""
    stack: list[tuple[Element, Element, int]] = [(root, root, 0)]
    while stack:
        node, suite, depth = stack.pop()
        children = []
        for child in node:
            name = _local(child.tag)
            if name == "testcase":
                children.append(("case", child))
            elif name in ("testsuite", "testsuites"):
                if depth >= MAX_DEPTH:
                    raise ReportError(f"<testsuite> elements nest deeper than {MAX_DEPTH} levels")
                children.append(("suite", child))
        # Suites are pushed in reverse to come out in document order; cases are yielded in place.
        pending: list[tuple[Element, Element, int]] = []
        for kind, child in children:
            if kind == "case":
                yield suite, child
            else:
                pending.append((child, child, depth + 1))
        stack.extend(reversed(pending))


def _flavour(root: Element) -> Flavour:
    suites = [root, *(s for s in root.iter() if _local(s.tag) == "testsuite")][:50]
    names = [(s.get("name") or "").strip().lower() for s in suites]
    if any(n in ("pytest", "pytest tests") for n in names):
        return Flavour.PYTEST
    if any(n.startswith("jest") for n in names):
        return Flavour.JEST
    for suite in suites:
        for prop in suite.iter():
            if _local(prop.tag) == "property":
                key = (prop.get("name") or "").lower()
                if key.startswith("go.") or key == "go.version":
                    return Flavour.GO
                if key.startswith(("maven.", "surefire.", "java.")):
                    return Flavour.SUREFIRE
    for case in root.iter():
        if _local(case.tag) != "testcase":
            continue
        if any(_local(c.tag) in ("flakyFailure", "rerunFailure", "flakyError", "rerunError") for c in case):
            return Flavour.SUREFIRE
        break
    return Flavour.GENERIC


# ---- one test case


def _result(suite: Element, case: Element, flavour: Flavour, repo_path: str | None) -> TestResult:
    test_id = bounded_id(_test_id(suite, case, flavour))
    children = {_local(c.tag): c for c in reversed(list(case))}  # the first of each kind wins
    evidence_node: Element | None = None
    if "failure" in children:
        outcome, evidence_node = Outcome.FAILED, children["failure"]
    elif "error" in children:
        outcome, evidence_node = Outcome.ERROR, children["error"]
    elif "skipped" in children:
        outcome = Outcome.SKIPPED
    else:
        # Surefire's <flakyFailure> on a case with no <failure>: it failed, then passed on a rerun.
        outcome = Outcome.PASSED
    evidence = None
    if evidence_node is not None:
        evidence = _evidence(evidence_node, case, test_id, flavour, repo_path)
    return TestResult(test_id=test_id, outcome=outcome, duration_s=_seconds(case.get("time")), evidence=evidence)


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        value = float(text.replace(",", ""))  # Surefire writes 1,234.5 for long runs
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _test_id(suite: Element, case: Element, flavour: Flavour) -> str:
    name = (case.get("name") or "").strip()
    classname = (case.get("classname") or "").strip()
    if flavour is Flavour.PYTEST:
        return _pytest_id(classname, name, case.get("file"))
    if flavour is Flavour.JEST:
        # jest-junit's default templates put the describe path and title in both attributes; the
        # suite (the file, or its top describe) is what keeps equal titles in two files apart.
        owner = (case.get("file") or "").strip() or (suite.get("file") or "").strip()
        if not owner and (not classname or classname == name):
            owner = (suite.get("name") or "").strip()
        elif not owner:
            owner = classname
        if owner and name:
            return f"{owner}::{name}"
    if classname and name:
        return f"{classname}::{name}"
    if name or classname:
        return name or classname
    raise ReportError(f"a <testcase> in suite {suite.get('name')!r} has neither a name nor a classname")


def _pytest_id(classname: str, name: str, file: str | None) -> str:
    """pytest's node id from its JUnit classname, reversing `mangle_test_address` in junitxml.py."""
    if not classname:
        # A collection error: pytest writes the module's dotted path as the name.
        if file:
            return file.replace("\\", "/")
        return _dotted_to_path(name.split(".")) if name else ""
    parts = classname.split(".")
    if file:
        file = file.replace("\\", "/")
        module = PurePosixPath(file).with_suffix("").as_posix().replace("/", ".")
        rest = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
        classes = rest.split(".") if rest else []
        return "::".join([file, *classes, name])
    # Without `file` the module/class split is a guess: classes are the trailing parts that start with
    # an upper-case letter (pytest collects `Test*` classes), the rest is the module path.
    split = len(parts)
    while split > 1 and parts[split - 1][:1].isupper():
        split -= 1
    return "::".join([_dotted_to_path(parts[:split]), *parts[split:], name])


def _dotted_to_path(parts: list[str]) -> str:
    return "/".join(parts) + ".py"


# ---- evidence

# "XError: message" at the start of a line; a dotted name allowed (java.lang.AssertionError, a.b.Err).
_EXC_LINE = re.compile(r"^\s*(?:E\s+)?([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)*)(?::\s?(.*))?$")
_EXC_SUFFIXES = ("Error", "Exception", "Exit", "Interrupt", "Failure", "Warning", "Timeout", "Throwable")
FIXTURE_LOOKUP_ERROR = "_pytest.fixtures.FixtureLookupError"  # the spelling the CARS plugin uses too

# Frames, each normalised to (path, line, function).
_PY_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_PYTEST_FRAME = re.compile(r"^(?P<path>[^\s:][^:]*\.py):(?P<line>\d+)(?::(?: in (?P<func>.+)| (?P<exc>[\w.]+))?)?$")
_JAVA_FRAME = re.compile(r"^\s*at (?P<func>[\w$.<>]+)\((?P<file>[\w$.-]+\.(?:java|kt|groovy|scala)):(?P<line>\d+)\)")
_JS_FRAME = re.compile(r"^\s*at (?:(?P<func>.+?) \()?(?P<path>[^()\s]+?\.[cm]?[jt]sx?):(?P<line>\d+):\d+\)?$")
_GO_FRAME = re.compile(r"^\s*(?P<path>[\w./-]+_test\.go):(?P<line>\d+):(?P<said>.*)$")

_TEST_FILE = re.compile(
    r"(^|/)(test_[^/]*\.py|[^/]*_test\.py|conftest\.py|[^/]*Tests?\.(java|kt|groovy|scala)|[^/]*IT\.java"
    r"|[^/]*\.(test|spec)\.[cm]?[jt]sx?|[^/]*_test\.go)$|(^|/)(tests?|__tests__|spec)/"
)


def _evidence(node: Element, case: Element, test_id: str, flavour: Flavour, repo_path: str | None) -> FailureEvidence:
    text = (node.text or "").strip("\n")
    exc_type, message = _exception(node, text, flavour)
    frames = _frames(text, case, flavour, repo_path)
    in_tests = [f for f in frames if _TEST_FILE.search(f[0])]
    test_file = test_id.partition("::")[0] if flavour is Flavour.PYTEST else None
    if test_file:  # the frame in the test's own file is the line to look at
        in_tests = [f for f in frames if f[0] == test_file] or in_tests
    file, line = (in_tests[-1][0], in_tests[-1][1]) if in_tests else (test_file, None)
    failing_frame = None
    if frames:
        path, fline, func = frames[-1]
        failing_frame = clip(f"{path}:{fline} in {func}" if func else f"{path}:{fline}", MAX_ID)
    fixtures: tuple[str, ...] = ()
    if match := re.search(r"available fixtures:\s*(.*)", text):
        fixtures = tuple(sorted({n.strip()[:MAX_ID] for n in match.group(1).split(",") if n.strip()}))
    return FailureEvidence(
        exception_type=clip(exc_type, MAX_ID) if exc_type else None,
        message=clip(message, MAX_TEXT) if message else None,
        traceback=clip_middle(text, MAX_TRACEBACK) if text else None,
        file=clip(file, MAX_ID) if file else None,
        line=line,
        failing_frame=failing_frame,
        fixtures_available=fixtures,
    )


def _exception(node: Element, text: str, flavour: Flavour) -> tuple[str | None, str]:
    """The exception type and message of a <failure> or <error>, from its attributes or its text."""
    exc_type = (node.get("type") or "").strip() or None
    message = (node.get("message") or "").strip()
    if flavour is Flavour.PYTEST and (e_lines := _pytest_e_lines(text)):
        # pytest marks the exception's lines with "E"; its message attribute may be a summary
        # ("collection failure", "failed on setup with ...").
        if parsed := _exception_line(e_lines[0]):
            return exc_type or parsed[0], "\n".join([parsed[1], *e_lines[1:]]).strip()
        if re.match(r"fixture '[^']+' not found", e_lines[0]):
            return exc_type or FIXTURE_LOOKUP_ERROR, e_lines[0]
        return exc_type or _pytest_final_type(text), "\n".join(e_lines)
    if flavour is Flavour.GO:
        # `go test` has no exception; the t.Errorf lines ("cart_test.go:12: got 3, want 4") say what failed.
        said = [m.group("said").strip() for ln in text.splitlines() if (m := _GO_FRAME.match(ln))]
        return exc_type, "\n".join(said) or message
    header = []
    for line in text.splitlines()[:200]:
        if _is_frame(line):
            break
        header.append(line.rstrip())
    while header and not header[-1].strip():
        header.pop()
    for candidate in (message, header[0] if header else ""):
        if parsed := _exception_line(candidate):
            exc_type = exc_type or parsed[0]
            if candidate is not message or parsed[1]:
                message = "\n".join([parsed[1], *header[1:]]).strip() if candidate is not message else parsed[1]
            break
    if not message:
        message = "\n".join(header).strip()
    if exc_type is None and flavour is Flavour.PYTEST:
        exc_type = _pytest_final_type(text)
    return exc_type, message


def _is_frame(line: str) -> bool:
    return any(p.match(line.rstrip()) for p in (_PY_FRAME, _JAVA_FRAME, _JS_FRAME)) or line.startswith("Traceback")


def _exception_line(line: str) -> tuple[str, str] | None:
    """("XError", "msg") from "XError: msg" (a dotted name allowed), or None when it names no exception."""
    first, _, more = line.partition("\n")
    match = _EXC_LINE.match(first)
    if not match:
        return None
    name, rest = match.group(1), match.group(2)
    if not name.rpartition(".")[2].endswith(_EXC_SUFFIXES):
        return None  # "Expected: 3" or "assert 3 == 4" is a message, not a type
    return name, ((rest or "") + ("\n" + more if more else "")).strip()


def _pytest_e_lines(text: str) -> list[str]:
    # pytest marks the exception lines with "E   "; the first of them names the exception.
    return [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]


def _pytest_final_type(text: str) -> str | None:
    # pytest's long report ends with "tests/test_x.py:12: AssertionError".
    for line in reversed(text.splitlines()):
        match = _PYTEST_FRAME.match(line.strip())
        if match and match.group("exc"):
            return match.group("exc")
    return None


def _frames(text: str, case: Element, flavour: Flavour, repo_path: str | None) -> list[tuple[str, int, str]]:
    """The traceback's frames, outermost first (Java and JavaScript print innermost first)."""
    python: list[tuple[str, int, str]] = []
    inner_first: list[tuple[str, int, str]] = []
    go: list[tuple[str, int, str]] = []
    for raw in text.splitlines()[:2000]:
        line = raw.rstrip()
        if m := _PY_FRAME.match(line):
            python.append((m["path"], int(m["line"]), m["func"].strip()))
        elif m := _PYTEST_FRAME.match(line):
            python.append((m["path"], int(m["line"]), (m["func"] or "").strip()))
        elif m := _JAVA_FRAME.match(line):
            qualified = m["func"]
            owner = qualified.rpartition(".")[0]
            package = owner.rpartition(".")[0]
            # The frame gives only the file name; the class's package gives its path under the source root.
            path = "/".join([*package.split("."), m["file"]]) if package else m["file"]
            inner_first.append((path, int(m["line"]), qualified.rpartition(".")[2]))
        elif m := _JS_FRAME.match(line):
            path = m["path"].removeprefix("file://")
            if "node_modules/" in path or path.startswith("node:"):
                continue
            inner_first.append((path, int(m["line"]), (m["func"] or "").strip()))
        elif m := _GO_FRAME.match(line):
            go.append((m["path"], int(m["line"]), ""))
    frames = python + list(reversed(inner_first)) + go
    relative = []
    for path, lineno, func in frames:
        rel = _relative(path, repo_path, case)
        if rel is not None:
            relative.append((rel, lineno, func))
    return relative


def _relative(path: str, repo_path: str | None, case: Element) -> str | None:
    """A frame's path relative to the repository, or None when that cannot be known."""
    path = path.replace("\\", "/")
    if not path.startswith("/"):
        return path.removeprefix("./")
    if repo_path:
        root = repo_path.replace("\\", "/").rstrip("/") + "/"
        if path.startswith(root):
            return path[len(root):]
    # A writer's `file` attribute (relative) that ends the absolute path tells where the root was.
    for attr in (case.get("file"),):
        if attr and not attr.startswith("/") and path.endswith("/" + attr.removeprefix("./")):
            return attr.removeprefix("./")
    return None  # an absolute path elsewhere (the stdlib, a CI runner's checkout we cannot place)


__all__ = [
    "DEFAULT_MAX_BYTES", "Flavour", "ReportError", "bounded_id", "clip", "clip_middle", "junit_results",
    "parse_junit",
]
