"""JUnit XML and CARS JSON reports become one `run.reported`; hostile or broken input is a ReportError.

Pure: the sample reports are written here, in the shape each tool writes them.
"""

from __future__ import annotations

import json

import pytest

from actors.errors import Rejected
from actors.monitor.ingest import parse_report
from actors.monitor.junit import Flavour, ReportError, junit_results, parse_junit
from contracts.limits import MAX_ID, MAX_TEXT
from contracts.values import Outcome, TestResult

PYTEST_XUNIT2 = b"""<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="2" failures="2" skipped="1" tests="6" time="0.3"><testcase classname=""
 name="tests.test_broken" time="0.000"><error
 message="collection failure">ImportError while importing test module '/ci/shop/tests/test_broken.py'.
Traceback:
/usr/lib/python3.11/importlib/__init__.py:126: in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
tests/test_broken.py:1: in &lt;module&gt;
    import nope_missing
E   ModuleNotFoundError: No module named 'nope_missing'</error></testcase><testcase
 classname="tests.test_cart.TestCart" name="test_attr" time="0.25"><failure
 message="AttributeError: 'Cart' object has no attribute 'totl'">self = &lt;test_cart.TestCart object at 0x7f&gt;

    def test_attr(self):
        c = Cart()
&gt;       assert c.totl == 3
E       AttributeError: 'Cart' object has no attribute 'totl'

tests/test_cart.py:6: AttributeError</failure></testcase><testcase classname="tests.test_cart.TestCart"
 name="test_p[1-a.b]" time="0.006"><failure message="assert 2 == 4&#10; +  where 2 = add(1, 1)">    def test_p(self, x):
&gt;       assert add(x, 1) == 4
E       assert 2 == 4
E        +  where 2 = add(1, 1)

tests/test_cart.py:9: AssertionError</failure></testcase><testcase classname="tests.test_cart" name="test_fx"
 time="0.005"><error
 message="failed on setup with &quot;file /ci/shop/tests/test_cart.py, line 10&quot;"
>file /ci/shop/tests/test_cart.py, line 10
  def test_fx(dbx):
E       fixture 'dbx' not found
&gt;       available fixtures: capsys, db, monkeypatch, tmp_path
&gt;       use 'pytest --fixtures [testpath]' for help on them.

/ci/shop/tests/test_cart.py:10</error></testcase><testcase classname="tests.test_cart" name="test_skip"
 time="0.000"><skipped type="pytest.skip"
 message="nope">/ci/shop/tests/test_cart.py:12: nope</skipped></testcase><testcase
 classname="tests.test_cart" name="test_ok" time="0.001" /></testsuite></testsuites>"""

PYTEST_XUNIT1 = b"""<?xml version="1.0" encoding="utf-8"?><testsuite name="pytest" tests="2"><testcase
 classname="pkg.tests.test_api.TestApi" name="test_get" file="pkg/tests/test_api.py" line="3" time="0.1"/><testcase
 classname="pkg.tests.test_api" name="test_post" file="pkg/tests/test_api.py" line="9" time="0.2"/></testsuite>"""

SUREFIRE = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" name="com.shop.CartTest" time="1,234.5" tests="4"
  errors="1" skipped="1" failures="1">
  <properties><property name="java.version" value="17.0.2"/><property name="maven.repo.local" value="/m2"/></properties>
  <testcase name="totalAddsUp" classname="com.shop.CartTest" time="0.012">
    <failure message="expected:&lt;4&gt; but was:&lt;3&gt;"
      type="java.lang.AssertionError">java.lang.AssertionError: expected:&lt;4&gt; but was:&lt;3&gt;
	at org.junit.Assert.fail(Assert.java:89)
	at org.junit.Assert.assertEquals(Assert.java:146)
	at com.shop.CartTest.totalAddsUp(CartTest.java:27)
	at java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
</failure>
  </testcase>
  <testcase name="loadsDb" classname="com.shop.CartTest" time="0.003">
    <error type="java.lang.NullPointerException">java.lang.NullPointerException
	at com.shop.Cart.load(Cart.java:40)
	at com.shop.CartTest.loadsDb(CartTest.java:33)
</error>
  </testcase>
  <testcase name="later" classname="com.shop.CartTest" time="0"><skipped message="not yet"/></testcase>
  <testcase name="sometimes" classname="com.shop.CartTest" time="0.2">
    <flakyFailure message="boom" type="java.lang.IllegalStateException">java.lang.IllegalStateException: boom
	at com.shop.CartTest.sometimes(CartTest.java:50)</flakyFailure>
  </testcase>
</testsuite>"""

JEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="3" failures="1" errors="0" time="1.2">
  <testsuite name="src/cart.test.js" errors="0" failures="1" skipped="0"
    timestamp="2024-05-01T12:00:00" time="0.8" tests="2">
    <testcase classname="Cart total adds items" name="Cart total adds items" time="0.004">
      <failure>Error: expect(received).toBe(expected) // Object.is equality

Expected: 4
Received: 3
    at Object.toBe (/home/ci/shop/src/cart.test.js:12:23)
    at Promise.then.completed (/home/ci/shop/node_modules/jest-circus/build/utils.js:298:28)</failure>
    </testcase>
    <testcase classname="Cart empty" name="Cart empty" time="0.001"/>
  </testsuite>
  <testsuite name="src/user.test.js" tests="1">
    <testcase classname="Cart empty" name="Cart empty" time="0.001"/></testsuite>
</testsuites>"""

GOTESTSUM = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1" errors="0" time="0.5">
  <testsuite tests="3" failures="1" time="0.5" name="example.com/shop/cart" timestamp="2024-05-01T12:00:00Z">
    <properties><property name="go.version" value="go1.22.1 linux/amd64"/></properties>
    <testcase classname="example.com/shop/cart" name="TestTotal" time="0.00">
      <failure message="Failed" type="">=== RUN   TestTotal
    cart_test.go:12: got 3, want 4
--- FAIL: TestTotal (0.00s)
</failure>
    </testcase>
    <testcase classname="example.com/shop/cart" name="TestEmpty" time="0.01"/>
    <testcase classname="example.com/shop/cart" name="TestLater" time="0.00">
      <skipped message="=== RUN TestLater"/></testcase>
  </testsuite>
</testsuites>"""


def by_id(results: tuple[TestResult, ...]) -> dict[str, TestResult]:
    return {r.test_id: r for r in results}


# ---- flavours


def test_pytest_report_maps_classnames_back_to_node_ids() -> None:
    # Given a pytest --junitxml report (xunit2: no file attribute)
    # When it is parsed
    run = parse_junit(PYTEST_XUNIT2, project="shop", run_id="r1", commit="abc", repo_path="/ci/shop")

    # Then test ids are pytest node ids, outcomes and durations are kept, and the source names the tool
    assert [r.test_id for r in run.results] == [
        "tests/test_broken.py",
        "tests/test_cart.py::TestCart::test_attr",
        "tests/test_cart.py::TestCart::test_p[1-a.b]",
        "tests/test_cart.py::test_fx",
        "tests/test_cart.py::test_skip",
        "tests/test_cart.py::test_ok",
    ]
    outcomes = [r.outcome for r in run.results]
    assert outcomes == [Outcome.ERROR, Outcome.FAILED, Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED, Outcome.PASSED]
    assert run.results[1].duration_s == pytest.approx(0.25)
    assert (run.project, run.run_id, run.commit, run.source) == ("shop", "r1", "abc", "junit-pytest")
    assert run.results[5].evidence is None


def test_pytest_failure_evidence() -> None:
    # Given the same pytest report
    results = by_id(parse_junit(PYTEST_XUNIT2, project="shop", run_id="r1", repo_path="/ci/shop").results)

    # Then an exception's type and message come from the "E" lines, the line from the test file's frame
    attr = results["tests/test_cart.py::TestCart::test_attr"].evidence
    assert attr is not None
    assert (attr.exception_type, attr.message) == ("AttributeError", "'Cart' object has no attribute 'totl'")
    assert (attr.file, attr.line) == ("tests/test_cart.py", 6)
    assert attr.traceback is not None and "assert c.totl == 3" in attr.traceback
    # and a bare assert is an AssertionError whose message is pytest's explanation
    cmp = results["tests/test_cart.py::TestCart::test_p[1-a.b]"].evidence
    assert cmp is not None
    assert cmp.exception_type == "AssertionError"
    assert cmp.message == "assert 2 == 4\n+  where 2 = add(1, 1)"
    # and a collection error names the module and the import line
    broken = results["tests/test_broken.py"].evidence
    assert broken is not None
    assert (broken.exception_type, broken.message) == ("ModuleNotFoundError", "No module named 'nope_missing'")
    assert (broken.file, broken.line) == ("tests/test_broken.py", 1)
    # and a missing fixture lists the fixtures pytest offered
    fx = results["tests/test_cart.py::test_fx"].evidence
    assert fx is not None
    assert fx.message == "fixture 'dbx' not found"
    assert fx.exception_type == "_pytest.fixtures.FixtureLookupError"
    assert fx.fixtures_available == ("capsys", "db", "monkeypatch", "tmp_path")
    assert (fx.file, fx.line) == ("tests/test_cart.py", 10)


def test_pytest_file_attribute_decides_the_module_path() -> None:
    # Given an xunit1 report, whose testcases carry the file
    flavour, results = junit_results(PYTEST_XUNIT1)

    # Then the module part of the classname is taken from the file, the rest are classes
    assert flavour is Flavour.PYTEST
    assert [r.test_id for r in results] == [
        "pkg/tests/test_api.py::TestApi::test_get", "pkg/tests/test_api.py::test_post",
    ]


def test_surefire_report() -> None:
    # Given a Maven Surefire report with a failure, an error, a skip and a flaky pass
    flavour, results = junit_results(SUREFIRE)
    found = by_id(results)

    # Then ids are classname::name and the flaky test counts as passed
    assert flavour is Flavour.SUREFIRE
    assert {k: v.outcome for k, v in found.items()} == {
        "com.shop.CartTest::totalAddsUp": Outcome.FAILED,
        "com.shop.CartTest::loadsDb": Outcome.ERROR,
        "com.shop.CartTest::later": Outcome.SKIPPED,
        "com.shop.CartTest::sometimes": Outcome.PASSED,
    }
    # and evidence comes from the type attribute, the message and the test class's frame
    failure = found["com.shop.CartTest::totalAddsUp"].evidence
    assert failure is not None
    assert (failure.exception_type, failure.message) == ("java.lang.AssertionError", "expected:<4> but was:<3>")
    assert (failure.file, failure.line) == ("com/shop/CartTest.java", 27)
    assert failure.failing_frame == "org/junit/Assert.java:89 in fail"
    # and an error without a message still gets the innermost frame of the test, not of product code
    error = found["com.shop.CartTest::loadsDb"].evidence
    assert error is not None
    assert error.exception_type == "java.lang.NullPointerException"
    assert (error.file, error.line) == ("com/shop/CartTest.java", 33)
    assert error.failing_frame == "com/shop/Cart.java:40 in load"


def test_jest_report() -> None:
    # Given a jest-junit report where two files hold a test with the same title
    flavour, results = junit_results(JEST, repo_path="/home/ci/shop")
    found = by_id(results)

    # Then the suite keeps the ids apart
    assert flavour is Flavour.JEST
    assert sorted(found) == [
        "src/cart.test.js::Cart empty", "src/cart.test.js::Cart total adds items", "src/user.test.js::Cart empty",
    ]
    # and the evidence reads the JS error and the test file's frame, relative to the repository
    ev = found["src/cart.test.js::Cart total adds items"].evidence
    assert ev is not None
    assert ev.exception_type == "Error"
    assert ev.message is not None and ev.message.startswith("expect(received).toBe(expected)")
    assert "Received: 3" in ev.message
    assert (ev.file, ev.line) == ("src/cart.test.js", 12)


def test_gotestsum_report() -> None:
    # Given a gotestsum --junitfile report
    flavour, results = junit_results(GOTESTSUM)
    found = by_id(results)

    # Then ids are package::TestName and the t.Errorf line is the message and location
    assert flavour is Flavour.GO
    assert found["example.com/shop/cart::TestTotal"].outcome is Outcome.FAILED
    assert found["example.com/shop/cart::TestLater"].outcome is Outcome.SKIPPED
    assert found["example.com/shop/cart::TestEmpty"].outcome is Outcome.PASSED
    ev = found["example.com/shop/cart::TestTotal"].evidence
    assert ev is not None
    assert ev.message == "got 3, want 4"
    assert (ev.file, ev.line) == ("cart_test.go", 12)


# ---- limits


def test_over_long_texts_are_cut_to_the_contract_limits() -> None:
    # Given a failure with a huge message and traceback, and a test name longer than MAX_ID
    long_name = "test_" + "x" * (MAX_ID * 2)
    lines = "line\n" * 20_000
    data = (
        f'<testsuite name="suite"><testcase classname="a.B" name="{long_name}"><failure message="{"m" * 50_000}"'
        f' type="a.BoomError">{lines}</failure></testcase>'
        f'<testcase classname="a.B" name="{long_name}y"/></testsuite>'
    ).encode()

    # When it is parsed
    _, results = junit_results(data)

    # Then the report is accepted, texts are cut, and the two long ids stay distinct
    ev = results[0].evidence
    assert ev is not None and ev.message is not None and ev.traceback is not None
    assert len(ev.message) == MAX_TEXT
    assert len(ev.traceback) <= 4 * MAX_TEXT and "characters cut" in ev.traceback
    assert all(len(r.test_id) <= MAX_ID for r in results)
    assert results[0].test_id != results[1].test_id


# ---- hostile and broken input


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><testsuite name="x">&lol3;</testsuite>',
            "refused unsafe XML", id="billion-laughs",
        ),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<testsuite name="x"><testcase name="a" classname="b"><failure>&xxe;</failure></testcase></testsuite>',
            "refused unsafe XML", id="external-entity",
        ),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "http://evil.example/x.dtd"><testsuite name="x"/>',
            "refused unsafe XML", id="external-dtd",
        ),
        pytest.param(b"PK\x03\x04 not xml at all", "not well-formed XML", id="not-xml"),
        pytest.param(b"<testsuite><testcase name='a'>", "not well-formed XML", id="truncated"),
        pytest.param(b"<html><body>502 Bad Gateway</body></html>", "root element is <html>", id="wrong-root"),
        pytest.param(b"   \n", "empty", id="empty"),
        pytest.param(b"<testsuite name='x'><testcase/></testsuite>", "neither a name nor a classname", id="no-name"),
        pytest.param(b"<testsuites>" + b"<testsuite>" * 100 + b"</testsuite>" * 100 + b"</testsuites>",
                     "nest deeper", id="deep-nesting"),
    ],
)
def test_hostile_or_broken_xml_is_a_report_error(data: bytes, reason: str) -> None:
    # Given input that is hostile or not a JUnit report
    # When it is parsed
    with pytest.raises(ReportError) as raised:
        parse_junit(data, project="shop", run_id="r1")

    # Then it is rejected (dead-lettered, not retried) with a reason that says why
    assert reason in str(raised.value)
    assert isinstance(raised.value, Rejected)


def test_a_huge_report_is_refused_before_parsing() -> None:
    # Given a report over the size limit
    data = b"<testsuite name='x'>" + b" " * 2_000 + b"</testsuite>"

    # When it is parsed with a 1 KB limit
    with pytest.raises(ReportError) as raised:
        parse_junit(data, project="shop", run_id="r1", max_bytes=1024)

    # Then the size is what it complains about
    assert "limit is 1024" in str(raised.value)


# ---- parse_report: detection by content


def test_parse_report_detects_junit_and_plugin_json() -> None:
    # Given the same project reported as JUnit XML and as the CARS plugin's JSON
    plugin_doc = {
        "format": "cars-pytest", "version": 1, "collected": 2,
        "results": [
            {"test_id": "tests/test_a.py::test_ok", "outcome": "passed", "duration_s": 0.1, "evidence": None},
            {"test_id": "tests/test_a.py::test_bad", "outcome": "failed", "duration_s": 0.2, "evidence": {
                "exception_type": "AssertionError", "message": "assert 3 == 4", "traceback": "t" * 100_000,
                "file": "tests/test_a.py", "line": 7, "failing_frame": "tests/test_a.py:7 in test_bad",
                "compared": {"left": "3", "right": "4", "operator": "=="}, "fixtures_available": [],
                "selector": None, "page_html": None,
            }},
        ],
    }

    # When each is parsed
    from_xml = parse_report(b"\xef\xbb\xbf\n" + PYTEST_XUNIT1, project="shop", run_id="r1")
    from_json = parse_report(json.dumps(plugin_doc).encode(), project="shop", run_id="r2", source_hint="ci")

    # Then each kind is recognised, the plugin's evidence is structured, and over-long text is cut
    assert from_xml.source == "junit-pytest" and len(from_xml.results) == 2
    assert from_json.source == "ci"
    bad = from_json.results[1]
    assert bad.outcome is Outcome.FAILED and bad.evidence is not None
    assert bad.evidence.compared is not None and bad.evidence.compared.right == "4"
    assert bad.evidence.traceback is not None and len(bad.evidence.traceback) <= 4 * MAX_TEXT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"hello", "neither JUnit XML", id="neither"),
        pytest.param(b"{not json", "not valid JSON", id="bad-json"),
        pytest.param(b'{"format": "other"}', "unknown report format", id="other-format"),
        pytest.param(b'{"format": "cars-pytest", "version": 1, "collected": 1, "results": [{"test_id": "a",'
                     b' "outcome": "exploded"}]}', "$.results[0].outcome", id="bad-outcome"),
        pytest.param(b'{"format": "cars-pytest", "version": 1, "results": {}}', "$.results must be an array",
                     id="results-not-array"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "neither JUnit XML", id="deep-json-array"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON", id="deep-json-object"),
    ],
)
def test_parse_report_rejects_what_it_cannot_read(data: bytes, reason: str) -> None:
    # Given a report of no supported kind, or a broken plugin report
    # When it is parsed
    with pytest.raises(ReportError) as raised:
        parse_report(data, project="shop", run_id="r1")

    # Then the reason points at the problem
    assert reason in str(raised.value)
