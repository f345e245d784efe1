"""Classify one failing test from the evidence its runner gave (pure: no I/O, no clock).

The rules, first match wins (DESIGN.md lists the classes):

1. `fixture_missing`: pytest's "fixture 'x' not found".
2. `environment`: the infrastructure failed (connection refused, DNS, out of disk, a database
   driver's connection error). Checked early because such an error surfaces as many exception types;
   never for an assertion failure, whose message may merely *mention* a connection.
3. `import_error`: a module could not be found or loaded (ModuleNotFoundError, "No module named",
   a circular import, Java's NoClassDefFoundError/ClassNotFoundException).
4. `renamed_symbol`: a name is missing where the test uses it (AttributeError "has no attribute",
   NameError "is not defined", Java's NoSuchMethodError/NoSuchFieldError). **ImportError "cannot
   import name X from M (path)" is `renamed_symbol`**: Python only says that after module M was found
   and loaded, so the module exists and the *name* moved or was renamed. When M was not really found
   ("unknown location") or was only partially initialised (a circular import) it is `import_error`.
   The healer's import-path and renamed-symbol strategies may both propose for either class.
5. `signature_drift`: a call no longer matches its callee (TypeError "unexpected keyword argument",
   "missing N required ... argument", "takes N positional arguments but M were given").
6. `locator_drift`: a UI locator no longer matches (NoSuchElement, "waiting for locator",
   "no element matches", or a timeout while a selector was being waited for).
7. `timeout`: TimeoutError, pytest-timeout's "Timeout >", JUnit's "timed out after".
8. `assertion_drift`: an assertion compared two literal values of the same kind that differ
   (`assert 'Total: 10' == 'Total 10'`, `expected: <4> but was: <3>`); the product changed an output
   the test pinned. An assertion without that shape (objects, None, booleans, `>`) is
   `product_regression`: a real failure that must never be "healed" into green.
9. Rules 4 and 5 hold only when the error was raised in test code (or where is unknown): the same
   errors raised inside the code under test are the product's own bug. Any other exception whose
   innermost frame is in non-test code is `product_regression`.
10. Otherwise `unknown`. `flaky` is never decided here: only history can tell.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable

from attrs import frozen

from contracts.values import ComparedValues, FailureClass, FailureEvidence, TestResult

MAX_REASON = 300


@frozen(kw_only=True)
class Classification:
    """What a failure is, a fingerprint stable across runs of the same cause, and why."""

    category: FailureClass
    fingerprint: str
    reason: str
    #: The two sides of the failed check when only the message tells them (a `pytest.raises(match=)`
    #: that did not match: operator "match", left the actual message, right the expected pattern).
    compared: ComparedValues | None = None


@frozen(kw_only=True)
class Frame:
    """Where an exception was raised: the innermost frame of its traceback."""

    file: str | None = None
    line: int | None = None
    function: str | None = None


# ---------------------------------------------------------------------------------------------
# Patterns. Each names the evidence it stands for; match on the exception's text (message plus
# traceback), case-sensitive where runners print fixed English text.

_FIXTURE = re.compile(r"fixture '[^']+' not found")

_ENV_TYPES = frozenset({
    "ConnectionRefusedError", "ConnectionResetError", "gaierror", "ConnectException",
    "UnknownHostException", "NoRouteToHostException",
})
_ENV_TEXT = re.compile(
    r"Connection refused|Name or service not known|Temporary failure in name resolution"
    r"|nodename nor servname provided|No space left on device|getaddrinfo failed"
    r"|\bECONNREFUSED\b|\bENOSPC\b|\bEAI_AGAIN\b|\[Errno (?:111|28|-2|-3)\]"
    r"|could not connect to server|Error \d+ connecting to|connection to server at .* failed"
    r"|Can't connect to (?:MySQL|local MySQL) server|Cannot connect to the Docker daemon",
    re.IGNORECASE,
)
# A driver's OperationalError is infrastructure only when its text is about the connection.
_ENV_OPERATIONAL = re.compile(r"connect|timeout expired|server closed the connection|terminating connection",
                              re.IGNORECASE)

_NO_MODULE = re.compile(r"No module named|ModuleNotFoundError")
_CANNOT_IMPORT = re.compile(r"cannot import name '?(?P<name>[\w.]+)'?(?: from '?(?P<module>[\w.]+)'?)?(?P<rest>.*)")
_IMPORT_TYPES = frozenset({"ModuleNotFoundError", "NoClassDefFoundError", "ClassNotFoundException"})

_NO_ATTRIBUTE = re.compile(r"has no attribute '?(?P<name>\w+)'?")
_NOT_DEFINED = re.compile(r"name '(?P<name>\w+)' is not defined")
_NONE_ATTRIBUTE = re.compile(r"'NoneType' object has no attribute")
_SYMBOL_TYPES = frozenset({"NoSuchMethodError", "NoSuchFieldError"})

_KEYWORD_NAMED = re.compile(r"unexpected keyword argument '(\w+)'|'(\w+)' is an invalid keyword argument")
_SIGNATURE = re.compile(
    r"unexpected keyword argument|is an invalid keyword argument for"
    r"|missing \d+ required (?:positional|keyword-only) arguments?"
    r"|takes (?:from \d+ to )?\d+ positional arguments? but \d+ (?:were|was) given"
    r"|got multiple values for (?:keyword )?argument|takes no (?:keyword )?arguments"
)

_LOCATOR_TYPES = frozenset({"NoSuchElementException", "ElementNotFoundException", "NoSuchElementError"})
_LOCATOR_TEXT = re.compile(
    r"waiting for (?:locator|selector)|no element matches|Unable to locate element|element not found"
    r"|resolved to 0 elements|No node found for selector",
    re.IGNORECASE,
)

_TIMEOUT_TYPES = frozenset({"TimeoutError", "TimeoutException", "TestTimedOutException", "Timeout",
                            "ReadTimeout", "ConnectTimeout", "CancelledError"})
_TIMEOUT_TEXT = re.compile(r"Timeout >|\btimed out\b|Timeout \d+ ?ms exceeded|TimeoutError", re.IGNORECASE)

_ASSERTION_TYPES = frozenset({"AssertionError", "AssertionFailedError", "ComparisonFailure",
                              "AssertionFailure", "ExpectationFailed"})
# `pytest.raises(match=...)` whose pattern did not match the message: pytest 8.4+ ("Expected regex" /
# "Actual message") and earlier ("Regex" / "Input"); both print the two as Python reprs.
_RAISES_MATCH = re.compile(
    r"Regex pattern did not match[^\n]*\.\n\s*(?:Expected regex|Regex): (?P<right>.+)\n\s*(?:Actual message|Input): "
    r"(?P<left>.+)$", re.MULTILINE)
_PYTEST_COMPARE = re.compile(r"^(?:AssertionError: )?assert (?P<left>.+?) == (?P<right>.+?)$", re.MULTILINE)
_JUNIT_COMPARE = re.compile(r"expected:? ?<\[?(?P<right>.*?)\]?> but was:? ?<\[?(?P<left>.*?)\]?>", re.DOTALL)
_OBJECT_REPR = re.compile(r"^<.*>$|\bat 0x[0-9a-fA-F]+")

# Python traceback frames, innermost last; then Java's "at pkg.Class.method(File.java:12)".
_PY_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>[\w<>.]+)')
_PYTEST_FRAME = re.compile(r"^(?P<file>[^\s:]+\.py):(?P<line>\d+): \w+", re.MULTILINE)
_JAVA_FRAME = re.compile(r"at (?P<function>[\w$.]+)\((?P<file>[\w$]+\.\w+):(?P<line>\d+)\)")
_EXC_LINE = re.compile(r"^(?:E\s+)?(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Failed|Timeout|Failure))"
                       r"(?::\s?(?P<message>.*))?$", re.MULTILINE)

_TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|spec|__tests__|e2e)/|(?:^|/)test_[^/]*\.py$|_test\.py$|(?:^|/)conftest\.py$"
    r"|(?:^|/)Test\w*\.\w+$|Tests?\.\w+$|\.(?:spec|test)\.[jt]sx?$|IT\.java$"
)


def classify(result: TestResult) -> Classification:
    """Classify one failing test (outcome failed or error) from its evidence."""
    evidence = result.evidence or FailureEvidence()
    exc_type, message = _exception(evidence)
    text = "\n".join(t for t in (message, evidence.traceback) if t)
    frame = _innermost_frame(evidence)
    category = _category(exc_type, message, text, evidence, frame)
    derived = _compared_from(text) if evidence.compared is None else None
    return Classification(
        category=category,
        fingerprint=fingerprint(exc_type, message, test_function(result.test_id), frame.function),
        reason=_reason(category, exc_type, message, frame),
        compared=derived if derived is not None and derived.operator == "match" else None,
    )


def test_function(test_id: str) -> str:
    """The test id without its parameters (`test_ordinal[1-st]` -> `test_ordinal`): the instances of a
    parametrized test that fail for the same cause are one failure, with one repair."""
    return test_id.split("[", 1)[0] if test_id.endswith("]") else test_id


def fingerprint(exc_type: str | None, message: str | None, test_id: str, function: str | None) -> str:
    """sha256 (16 hex digits) of the exception type, normalised message, test id and failing function.

    Numbers, addresses, uuids, temp paths, line numbers and quoted dynamic values are normalised, so
    two runs failing for the same cause give the same fingerprint.
    """
    key = "\x1f".join([exc_type or "", normalize(message or ""), test_id, function or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_TMP = re.compile(
    r"(?:/private)?/(?:tmp|var/folders|var/tmp)/[^\s'\":,)\]]*"
    r"|[A-Za-z]:\\[^\s'\":]*\\(?:Temp|tmp)\\[^\s'\":,)\]]*"
    r"|\S*pytest-of-[^\s'\":,)\]]*"
)
_LINE_WORD = re.compile(r"\bline \d+")
_LINE_SUFFIX = re.compile(r"(?<=\.py):\d+|(?<=\.java):\d+")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.]*$")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACE = re.compile(r"\s+")


def normalize(message: str) -> str:
    """`message` with its run-specific parts replaced by placeholders.

    A quoted value is kept when it is an identifier (a symbol, module or fixture name is the cause
    itself) and replaced otherwise (ids, paths, data the test generated).
    """
    text = _UUID.sub("<uuid>", message)
    text = _HEX.sub("<hex>", text)
    text = _TMP.sub("<tmp>", text)
    text = _LINE_WORD.sub("line <line>", text)
    text = _LINE_SUFFIX.sub(":<line>", text)

    def quoted(m: re.Match[str]) -> str:
        inner = m.group(0)[1:-1]
        return m.group(0) if _IDENTIFIER.match(inner) else "'<q>'"

    text = _QUOTED.sub(quoted, text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()


# ---------------------------------------------------------------------------------------------


def _short_type(name: str | None) -> str | None:
    # "builtins.AttributeError", "java.lang.AssertionError" and "AttributeError" are one type.
    return name.rsplit(".", 1)[-1] if name else None


def _exception(evidence: FailureEvidence) -> tuple[str | None, str | None]:
    """The exception type and message, read from the traceback's last "Type: message" line when the
    runner did not give them separately (JUnit XML often carries only the stack trace)."""
    exc_type, message = _short_type(evidence.exception_type), evidence.message
    if (exc_type is None or message is None) and (evidence.traceback or evidence.message):
        found = list(_EXC_LINE.finditer(evidence.traceback or evidence.message or ""))
        if found:
            last = found[-1]
            exc_type = exc_type or _short_type(last.group("type"))
            if message is None and last.group("message"):
                message = last.group("message").strip()
    if message and exc_type and message.startswith(f"{exc_type}: "):
        message = message[len(exc_type) + 2:]
    return exc_type, message


def _innermost_frame(evidence: FailureEvidence) -> Frame:
    """The frame the exception was raised in: the traceback's innermost frame when it has one, else
    what the runner named (`file`, `line`, `failing_frame`)."""
    tb = evidence.traceback or ""
    frames: list[Frame] = [
        Frame(file=m.group("file"), line=int(m.group("line")), function=m.group("function"))
        for m in _PY_FRAME.finditer(tb)
    ]
    if not frames:
        # Java prints the innermost frame first.
        java = _JAVA_FRAME.search(tb)
        if java:
            frames = [Frame(file=java.group("file"), line=int(java.group("line")), function=java.group("function"))]
    if not frames:
        # pytest's short form: "src/cart.py:12: AttributeError", innermost last.
        frames = [Frame(file=m.group("file"), line=int(m.group("line"))) for m in _PYTEST_FRAME.finditer(tb)]
    if frames:
        inner = frames[-1]
        return Frame(file=inner.file, line=inner.line, function=inner.function or evidence.failing_frame)
    return Frame(file=evidence.file, line=evidence.line, function=evidence.failing_frame)


def is_test_path(path: str) -> bool:
    """Whether `path` looks like test code (test folders and the usual test file names)."""
    return bool(_TEST_PATH.search(path.replace("\\", "/")))


def _in_product_code(frame: Frame) -> bool:
    if frame.file is None:
        return False
    # Only the tail of an absolute path says what the file is: a checkout may itself live under a
    # folder called "tests", and pytest's tmp folders are called "test_x0".
    return not is_test_path("/".join(frame.file.replace("\\", "/").split("/")[-4:]))


def _category(exc_type: str | None, message: str | None, text: str, evidence: FailureEvidence,
              frame: Frame) -> FailureClass:
    for rule in _RULES:
        found = rule(exc_type, message, text, evidence, frame)
        if found is not None:
            return found
    return FailureClass.UNKNOWN


Rule = Callable[[str | None, str | None, str, FailureEvidence, Frame], FailureClass | None]


def _fixture(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
             frame: Frame) -> FailureClass | None:
    return FailureClass.FIXTURE_MISSING if _FIXTURE.search(text) else None


def _environment(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
                 frame: Frame) -> FailureClass | None:
    if exc_type in _ASSERTION_TYPES:
        return None
    if exc_type in _ENV_TYPES or _ENV_TEXT.search(text):
        return FailureClass.ENVIRONMENT
    if exc_type == "OperationalError" and _ENV_OPERATIONAL.search(message or text):
        return FailureClass.ENVIRONMENT
    return None


def _import(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
            frame: Frame) -> FailureClass | None:
    if exc_type in _IMPORT_TYPES or _NO_MODULE.search(text):
        return FailureClass.IMPORT_ERROR
    cannot = _CANNOT_IMPORT.search(message or text)
    if cannot:
        said = cannot.group(0)
        if "unknown location" in said or "partially initialized module" in said or cannot.group("module") is None:
            return FailureClass.IMPORT_ERROR
        return FailureClass.RENAMED_SYMBOL  # the module was found: the name is what moved
    return None


def _symbol(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
            frame: Frame) -> FailureClass | None:
    if exc_type in _SYMBOL_TYPES:
        return None if _in_product_code(frame) else FailureClass.RENAMED_SYMBOL
    subject = message or text
    if exc_type in {"AttributeError", None} and _NO_ATTRIBUTE.search(subject) and not _NONE_ATTRIBUTE.search(subject):
        return None if _in_product_code(frame) else FailureClass.RENAMED_SYMBOL
    if exc_type in {"NameError", None} and _NOT_DEFINED.search(subject):
        return None if _in_product_code(frame) else FailureClass.RENAMED_SYMBOL
    return None


def _signature(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
               frame: Frame) -> FailureClass | None:
    if exc_type in {"TypeError", None} and _SIGNATURE.search(message or text):
        if _in_product_code(frame) and not _keyword_from_test(message or "", text):
            return None
        return FailureClass.SIGNATURE_DRIFT
    return None


def _keyword_from_test(message: str, text: str) -> bool:
    """A keyword the code refuses deep inside (`'create_dirs' is an invalid keyword argument for open()`)
    that the test itself passes, on its failing line (the first `>` line of pytest's traceback): a
    function took it into `**kwargs` and handed it on, so it is the test's call that drifted."""
    m = _KEYWORD_NAMED.search(message)
    if m is None:
        return False
    keyword = m.group(1) or m.group(2)
    first = next((line for line in text.splitlines() if line.startswith(">")), None)
    return first is not None and re.search(rf"\b{re.escape(keyword)}\s*=", first) is not None


def _locator(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
             frame: Frame) -> FailureClass | None:
    if exc_type in _LOCATOR_TYPES or _LOCATOR_TEXT.search(text):
        return FailureClass.LOCATOR_DRIFT
    if ev.selector and (exc_type in _TIMEOUT_TYPES or _TIMEOUT_TEXT.search(text)):
        return FailureClass.LOCATOR_DRIFT  # timed out while waiting for a selector
    return None


def _timeout(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
             frame: Frame) -> FailureClass | None:
    if exc_type in _ASSERTION_TYPES:
        return None  # an assertion about a timeout ("assert 'timed out' == 'done'") is still an assertion
    if exc_type in _TIMEOUT_TYPES or _TIMEOUT_TEXT.search(message or text):
        return FailureClass.TIMEOUT
    return None


def _assertion(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
               frame: Frame) -> FailureClass | None:
    compared = ev.compared or _compared_from(message or text)
    is_assertion = exc_type in _ASSERTION_TYPES or (exc_type is None and compared is not None)
    if not is_assertion:
        return None
    if compared is not None and _drift_shape(compared):
        return FailureClass.ASSERTION_DRIFT
    return FailureClass.PRODUCT_REGRESSION


def _product_code(exc_type: str | None, message: str | None, text: str, ev: FailureEvidence,
                  frame: Frame) -> FailureClass | None:
    return FailureClass.PRODUCT_REGRESSION if exc_type and _in_product_code(frame) else None


_RULES: tuple[Rule, ...] = (_fixture, _environment, _import, _symbol, _signature, _locator, _timeout,
                            _assertion, _product_code)


def _compared_from(text: str) -> ComparedValues | None:
    """The two sides of a failed equality (or of a `pytest.raises(match=)`), from pytest's or JUnit's
    message."""
    m = _RAISES_MATCH.search(text)
    if m:
        return ComparedValues(left=m.group("left").strip(), right=m.group("right").strip(), operator="match")
    m = _PYTEST_COMPARE.search(text)
    if m:
        return ComparedValues(left=m.group("left").strip(), right=m.group("right").strip())
    m = _JUNIT_COMPARE.search(text)
    if m:
        # JUnit prints the expected value first; "was" is what the code under test returned.
        return ComparedValues(left=m.group("left"), right=m.group("right"))
    return None


def _kind(value: str) -> str | None:
    """The kind of literal `value` is ("number", "str", "list", ...), or None when it is not a plain
    value (an object repr, None, a boolean): only plain values can have drifted."""
    text = value.strip()
    if not text or _OBJECT_REPR.search(text):
        return None
    try:
        literal = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # JUnit prints values unquoted ("Total: 10"); pytest truncates long reprs with "...".
        return "str"
    if literal is None or isinstance(literal, bool):
        return None
    if isinstance(literal, int | float):
        return "number"
    if isinstance(literal, str | bytes):
        return "str"
    return type(literal).__name__


def _drift_shape(compared: ComparedValues) -> bool:
    """An equality between two literal values of the same kind that differ, or an expected message
    pattern that no longer matches the message (both strings)."""
    if compared.operator not in ("==", "match") or compared.left.strip() == compared.right.strip():
        return False
    left, right = _kind(compared.left), _kind(compared.right)
    return left is not None and left == right


def _reason(category: FailureClass, exc_type: str | None, message: str | None, frame: Frame) -> str:
    first_line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    what = ": ".join(p for p in (exc_type, first_line[:200]) if p) or "no exception evidence"
    where = f" at {frame.file}:{frame.line}" if frame.file and frame.line else f" in {frame.file}" if frame.file else ""
    return f"{what}{where} ({category.value})"[:MAX_REASON]
