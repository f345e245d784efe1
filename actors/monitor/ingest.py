"""One entry point for test reports of any supported kind: JUnit XML or the CARS pytest plugin's JSON.

`cars report` and `POST /runs` hand the bytes here; the kind is told by the content, not by a file name.
"""

from __future__ import annotations

import json
from typing import Any

from actors.monitor.junit import (
    DEFAULT_MAX_BYTES,
    MAX_TRACEBACK,
    ReportError,
    bounded_id,
    clip,
    clip_middle,
    junit_results,
)
from contracts.codec import ContractError, structure
from contracts.limits import MAX_ID, MAX_RESULTS, MAX_TEXT
from contracts.runs import RunReported
from contracts.values import TestResult

PLUGIN_FORMAT = "cars-pytest"
PLUGIN_VERSION = 1
MAX_PAGE_HTML = 64 * MAX_TEXT

# Evidence text fields and how each is cut when a producer sends more than the contract allows.
_TEXT_LIMITS: dict[str, tuple[int, bool]] = {  # field: (limit, cut the middle instead of the tail)
    "exception_type": (MAX_ID, False),
    "message": (MAX_TEXT, False),
    "traceback": (MAX_TRACEBACK, True),
    "file": (MAX_ID, False),
    "failing_frame": (MAX_ID, False),
    "selector": (MAX_ID, False),
    "page_html": (MAX_PAGE_HTML, False),
}


def parse_report(
    data: bytes,
    *,
    project: str,
    run_id: str,
    commit: str | None = None,
    repo_path: str | None = None,
    source_hint: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RunReported:
    """The `run.reported` command for a report: JUnit XML (starts with `<`) or CARS plugin JSON (`{`).

    `source_hint` (e.g. "github-actions") becomes the message's `source`; without it the source names
    the format (`junit-pytest`, `cars-pytest`, ...). Raises ReportError with a reason for anything else.
    """
    if not isinstance(data, bytes | bytearray):
        raise ReportError(f"a report must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise ReportError(f"the report is {len(data)} bytes; the limit is {max_bytes}")
    start = bytes(data[:64]).lstrip(b"\xef\xbb\xbf \t\r\n")  # a UTF-8 byte order mark, whitespace
    if start.startswith(b"<"):
        flavour, results = junit_results(bytes(data), repo_path=repo_path, max_bytes=max_bytes)
        source = f"junit-{flavour.value}"
    elif start.startswith(b"{"):
        _collected, results = plugin_results(bytes(data), max_bytes=max_bytes)
        source = PLUGIN_FORMAT
    else:
        raise ReportError("the report is neither JUnit XML (starting with '<') nor CARS JSON (starting with '{')")
    try:
        return RunReported(
            project=project, run_id=run_id, commit=commit, repo_path=repo_path, results=results,
            source=source_hint or source,
        )
    except ValueError as exc:  # project, run_id, commit or source out of bounds
        raise ReportError(f"cannot report this run: {exc}") from None


def plugin_results(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[int, tuple[TestResult, ...]]:
    """(collected, results) of a report written by the CARS pytest plugin (`cars_pytest.py`).

    Results are structured through the contracts converter; a result that breaks the contract is a
    ReportError naming its path (`$.results[3].outcome: ...`).
    """
    if len(data) > max_bytes:
        raise ReportError(f"the report is {len(data)} bytes; the limit is {max_bytes}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportError(f"a CARS report is a JSON object, not {type(doc).__name__}")
    if doc.get("format") != PLUGIN_FORMAT:
        raise ReportError(f"unknown report format {doc.get('format')!r}; expected {PLUGIN_FORMAT!r}")
    if doc.get("version") != PLUGIN_VERSION:
        raise ReportError(f"unsupported {PLUGIN_FORMAT} version {doc.get('version')!r}; expected {PLUGIN_VERSION}")
    collected = doc.get("collected", -1)
    if isinstance(collected, bool) or not isinstance(collected, int) or collected < -1:
        raise ReportError(f"$.collected must be an integer >= -1, not {collected!r}")
    raw = doc.get("results")
    if not isinstance(raw, list):
        raise ReportError("$.results must be an array")
    if len(raw) > MAX_RESULTS:
        raise ReportError(f"the report has {len(raw)} results; the limit is {MAX_RESULTS}")
    results = []
    for i, item in enumerate(raw):
        try:
            results.append(structure(_within_limits(item), TestResult, root=f"$.results[{i}]"))
        except ContractError as exc:
            raise ReportError(f"a result breaks the contract: {exc}") from None
    return collected, tuple(results)


def _within_limits(item: Any) -> Any:
    # Cut over-long texts rather than refuse a whole run for one long traceback; anything of the wrong
    # type is left for the converter to report with its path.
    if not isinstance(item, dict):
        return item
    item = dict(item)
    if isinstance(item.get("test_id"), str):
        item["test_id"] = bounded_id(item["test_id"])
    evidence = item.get("evidence")
    if isinstance(evidence, dict):
        evidence = dict(evidence)
        for key, (limit, middle) in _TEXT_LIMITS.items():
            if isinstance(evidence.get(key), str):
                evidence[key] = (clip_middle if middle else clip)(evidence[key], limit)
        compared = evidence.get("compared")
        if isinstance(compared, dict):
            evidence["compared"] = {
                k: clip(v, MAX_TEXT) if k in ("left", "right") and isinstance(v, str) else v
                for k, v in compared.items()
            }
        item["evidence"] = evidence
    return item


__all__ = ["PLUGIN_FORMAT", "PLUGIN_VERSION", "ReportError", "parse_report", "plugin_results"]
