"""Failure classification (actors/monitor/classify.py): Given the evidence a runner reported for a
failing test, Then this class, a fingerprint stable across runs of the same cause, and a reason."""

from __future__ import annotations

from typing import Any

import pytest

from actors.monitor.classify import classify, is_test_path, normalize
from contracts.values import ComparedValues, FailureClass, FailureEvidence, Outcome, TestResult

C = FailureClass
TEST_ID = "tests/test_cart.py::test_total"


def failing(test_id: str = TEST_ID, outcome: Outcome = Outcome.FAILED, **evidence: Any) -> TestResult:
    return TestResult(test_id=test_id, outcome=outcome, evidence=FailureEvidence(**evidence))


def py_traceback(*frames: tuple[str, int, str], last: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for file, line, function in frames:
        lines += [f'  File "{file}", line {line}, in {function}', "    ..."]
    return "\n".join([*lines, last])


# Each case: the evidence as pytest (through the CARS plugin) or a JUnit XML report gives it.
CASES: dict[str, tuple[FailureClass, dict[str, Any]]] = {
    "module not found": (C.IMPORT_ERROR, dict(
        exception_type="ModuleNotFoundError", message="No module named 'shop.pricing'",
        file="tests/test_cart.py", line=3, failing_frame="<module>")),
    "junit NoClassDefFoundError": (C.IMPORT_ERROR, dict(
        traceback="java.lang.NoClassDefFoundError: com/shop/Pricing\n\tat com.shop.CartTest.total(CartTest.java:12)")),
    "circular import": (C.IMPORT_ERROR, dict(
        exception_type="ImportError",
        message="cannot import name 'Cart' from partially initialized module 'shop.cart' "
                "(most likely due to a circular import) (/src/shop/cart.py)")),
    "cannot import from unknown location": (C.IMPORT_ERROR, dict(
        exception_type="ImportError", message="cannot import name 'cart' from 'shop' (unknown location)")),
    "cannot import name from a module that exists": (C.RENAMED_SYMBOL, dict(
        exception_type="ImportError",
        message="cannot import name 'total_price' from 'shop.cart' (/home/ci/work/src/shop/cart.py)",
        file="tests/test_cart.py", line=2)),
    "module has no attribute": (C.RENAMED_SYMBOL, dict(
        exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
        file="tests/test_cart.py", line=12, failing_frame="test_total")),
    "name is not defined": (C.RENAMED_SYMBOL, dict(
        traceback=py_traceback(("/ci/tests/test_cart.py", 9, "test_total"),
                               last="NameError: name 'total_price' is not defined"))),
    "unexpected keyword argument": (C.SIGNATURE_DRIFT, dict(
        exception_type="TypeError", message="add_item() got an unexpected keyword argument 'qty'",
        file="tests/test_cart.py", line=20, failing_frame="test_add")),
    "missing positional argument": (C.SIGNATURE_DRIFT, dict(
        exception_type="TypeError", message="Cart.add() missing 1 required positional argument: 'price'",
        file="tests/test_cart.py", line=20)),
    "too many positional arguments": (C.SIGNATURE_DRIFT, dict(
        exception_type="TypeError", message="total() takes 1 positional argument but 2 were given",
        file="tests/test_cart.py", line=20)),
    "fixture not found": (C.FIXTURE_MISSING, dict(
        message="file /ci/tests/test_cart.py, line 14\n  def test_total(cart_db):\nE       fixture 'cart_db' "
                "not found\n>       available fixtures: cache, capfd, tmp_path\n",
        fixtures_available=("cache", "capfd", "tmp_path"))),
    "selenium no such element": (C.LOCATOR_DRIFT, dict(
        exception_type="selenium.common.exceptions.NoSuchElementException",
        message='Message: no such element: Unable to locate element: {"method":"css selector","selector":"#buy"}',
        selector="#buy", file="tests/ui/test_checkout.py", line=30)),
    "playwright timeout waiting for locator": (C.LOCATOR_DRIFT, dict(
        exception_type="playwright._impl._errors.TimeoutError",
        message='Locator.click: Timeout 30000ms exceeded.\nCall log:\n  - waiting for locator("#buy")',
        selector="#buy")),
    "timeout while a selector was awaited": (C.LOCATOR_DRIFT, dict(
        exception_type="TimeoutError", message="page did not settle", selector="button.checkout")),
    "pytest-timeout": (C.TIMEOUT, dict(
        message="Failed: Timeout >5.0s", file="tests/test_cart.py", line=40)),
    "builtin TimeoutError": (C.TIMEOUT, dict(
        exception_type="TimeoutError", message="operation did not complete in 2.0s", file="tests/test_cart.py")),
    "junit timed out": (C.TIMEOUT, dict(
        traceback="org.junit.runners.model.TestTimedOutException: test timed out after 100 milliseconds\n"
                  "\tat com.shop.CartTest.slow(CartTest.java:40)")),
    "assertion on drifted string": (C.ASSERTION_DRIFT, dict(
        exception_type="AssertionError", message="assert 'Total: 10.00 EUR' == 'Total: 10 EUR'",
        compared=ComparedValues(left="'Total: 10.00 EUR'", right="'Total: 10 EUR'"),
        file="tests/test_cart.py", line=12)),
    "assertion on drifted number, parsed from the message": (C.ASSERTION_DRIFT, dict(
        exception_type="AssertionError", message="assert 11.5 == 10")),
    "junit expected but was": (C.ASSERTION_DRIFT, dict(
        exception_type="org.opentest4j.AssertionFailedError", message="expected: <Total 10> but was: <Total: 10>")),
    "assertion on None": (C.PRODUCT_REGRESSION, dict(
        exception_type="AssertionError", message="assert None == 10",
        compared=ComparedValues(left="None", right="10"))),
    "assertion on an object": (C.PRODUCT_REGRESSION, dict(
        exception_type="AssertionError",
        compared=ComparedValues(left="<shop.cart.Cart object at 0x7f3a2b1c>", right="10"))),
    "bare assertion": (C.PRODUCT_REGRESSION, dict(
        exception_type="AssertionError", message="assert False")),
    "exception from inside the code under test": (C.PRODUCT_REGRESSION, dict(
        traceback=py_traceback(("/ci/tests/test_cart.py", 12, "test_total"), ("/ci/src/shop/cart.py", 40, "total"),
                               last="ZeroDivisionError: division by zero"))),
    "AttributeError raised in product code": (C.PRODUCT_REGRESSION, dict(
        traceback=py_traceback(("/ci/tests/test_cart.py", 12, "test_total"), ("/ci/src/shop/cart.py", 40, "total"),
                               last="AttributeError: 'Item' object has no attribute 'price'"))),
    "connection refused": (C.ENVIRONMENT, dict(
        exception_type="ConnectionRefusedError", message="[Errno 111] Connection refused")),
    "redis down": (C.ENVIRONMENT, dict(
        exception_type="redis.exceptions.ConnectionError",
        message="Error 111 connecting to localhost:6379. Connection refused.")),
    "postgres down": (C.ENVIRONMENT, dict(
        exception_type="psycopg.OperationalError",
        message='connection failed: connection to server at "127.0.0.1", port 5432 failed: server closed the '
                "connection unexpectedly")),
    "dns": (C.ENVIRONMENT, dict(
        exception_type="socket.gaierror", message="[Errno -3] Temporary failure in name resolution")),
    "disk full": (C.ENVIRONMENT, dict(
        exception_type="OSError", message="[Errno 28] No space left on device: '/tmp/out.bin'")),
    "assertion about a timeout": (C.ASSERTION_DRIFT, dict(
        exception_type="AssertionError", message="assert 'job timed out' == 'job done'")),
    "playwright expect on a locator": (C.LOCATOR_DRIFT, dict(
        exception_type="AssertionError",
        message="Locator expected to be visible\nActual value: None\nCall log:\n  - waiting for locator(\"#buy\")",
        selector="#buy")),
    "KeyError in the test": (C.UNKNOWN, dict(
        traceback=py_traceback(("/ci/tests/test_cart.py", 12, "test_total"), last="KeyError: 'sku'"))),
    "no evidence at all": (C.UNKNOWN, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_class_from_realistic_evidence(case: str) -> None:
    expected, evidence = CASES[case]
    # When the failing test is classified
    found = classify(failing(**evidence))
    # Then it has the class, and the reason names the evidence
    assert found.category is expected, found.reason
    assert found.reason
    assert len(found.fingerprint) == 16 and int(found.fingerprint, 16) >= 0


@pytest.mark.parametrize("message", [
    # pytest 8.4 and later
    "Regex pattern did not match.\n  Expected regex: 'Document is not a Mapping'\n"
    "  Actual message: 'Document must be a Mapping'",
    # earlier pytest
    "Regex pattern did not match.\n Regex: 'Document is not a Mapping'\n Input: 'Document must be a Mapping'",
])
def test_a_raises_pattern_that_no_longer_matches_is_assertion_drift_with_both_sides(message: str) -> None:
    found = classify(failing(exception_type="AssertionError", message=message, file="tests/test_db.py", line=9))
    assert found.category is C.ASSERTION_DRIFT, found.reason
    assert found.compared == ComparedValues(left="'Document must be a Mapping'", right="'Document is not a Mapping'",
                                            operator="match")


def test_an_exception_that_was_not_raised_is_not_drift() -> None:
    found = classify(failing(exception_type="Failed", message="DID NOT RAISE <class 'ValueError'>",
                             file="tests/test_db.py", line=9))
    assert found.category is not C.ASSERTION_DRIFT and found.compared is None


SWALLOWED = """    def test_create(tmp_path):
>       s = Storage(str(tmp_path / "x"), create_dirs=True)

tests/test_storage.py:5:
    def __init__(self, path, make_dirs=False, **kwargs):
>       self.handle = open(path, "a", **kwargs)
E       TypeError: 'create_dirs' is an invalid keyword argument for open()

db/storage.py:3: TypeError"""


def test_a_keyword_the_test_passes_refused_inside_the_code_is_signature_drift() -> None:
    # Given the code took the test's old keyword into **kwargs and open() refused it
    message = "'create_dirs' is an invalid keyword argument for open()"
    found = classify(failing(exception_type="TypeError", message=message, traceback=SWALLOWED,
                             file="tests/test_storage.py", line=5, failing_frame="db/storage.py:3 in __init__"))
    assert found.category is C.SIGNATURE_DRIFT, found.reason
    # But when the test's own line does not pass that keyword, the code is what is wrong
    mine = SWALLOWED.replace("create_dirs=True", "True")
    found = classify(failing(exception_type="TypeError", message=message, traceback=mine,
                             file="tests/test_storage.py", line=5, failing_frame="db/storage.py:3 in __init__"))
    assert found.category is C.PRODUCT_REGRESSION, found.reason


def test_an_error_outcome_without_evidence_is_unknown() -> None:
    found = classify(TestResult(test_id=TEST_ID, outcome=Outcome.ERROR))
    assert found.category is C.UNKNOWN


def test_the_reason_names_type_message_and_place() -> None:
    found = classify(failing(exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
                             file="tests/test_cart.py", line=12))
    assert found.reason.startswith(
        "AttributeError: module 'cart' has no attribute 'total_price' at tests/test_cart.py:12")


def test_an_assertion_mentioning_a_connection_is_not_environment() -> None:
    found = classify(failing(exception_type="AssertionError", message="assert 'Connection refused' == 'OK'"))
    assert found.category is C.ASSERTION_DRIFT


def test_fingerprint_is_stable_across_runs_of_the_same_cause() -> None:
    # Given the same failure in two runs, with different addresses, uuids, tmp paths and line numbers
    def run(tmp: str, addr: str, uid: str, line: int) -> TestResult:
        return failing(
            exception_type="ValueError",
            message=f"cannot load {tmp}/pytest-of-ci/pytest-{line}/test_total0/cart.json for <Cart at {addr}> "
                    f"order {uid}",
            traceback=py_traceback(("/ci/tests/test_cart.py", line, "test_total"),
                                   last="ValueError: see above"),
        )

    first = classify(run("/tmp", "0x7f00aa12", "3fa85f64-5717-4562-b3fc-2c963f66afa6", 12))
    second = classify(run("/tmp", "0x7f99bb34", "9c1b2e8a-0000-4bbb-8ccc-123456789abc", 14))
    # Then their fingerprints are equal
    assert first.fingerprint == second.fingerprint


def test_instances_of_a_parametrized_test_failing_for_one_cause_share_a_fingerprint() -> None:
    # Given the instances of one parametrized test, failing with the same error
    ev = dict(exception_type="AttributeError", message="module 'inflection' has no attribute 'ordinal'")
    ids = ["tests/test_infl.py::test_ordinal[1-st]", "tests/test_infl.py::test_ordinal[2-nd]",
           "tests/test_infl.py::test_ordinal[foo[bar]]"]
    # Then they are one failure (one repair); another test, or another cause, is not
    prints = {classify(failing(test_id=t, **ev)).fingerprint for t in ids}
    assert len(prints) == 1
    assert classify(failing(test_id="tests/test_infl.py::test_ordinalize[1]", **ev)).fingerprint not in prints
    other = {**ev, "message": "module 'inflection' has no attribute 'camelize'"}
    assert classify(failing(test_id=ids[0], **other)).fingerprint not in prints


def test_fingerprint_differs_across_causes_and_tests() -> None:
    base = dict(exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
                failing_frame="test_total")
    other_symbol = {**base, "message": "module 'cart' has no attribute 'subtotal'"}
    other_type = {**base, "exception_type": "NameError"}
    prints = {
        classify(failing(**base)).fingerprint,
        classify(failing(**other_symbol)).fingerprint,
        classify(failing(**other_type)).fingerprint,
        classify(failing(test_id="tests/test_cart.py::test_other", **base)).fingerprint,
        classify(failing(**{**base, "failing_frame": "helper"})).fingerprint,
    }
    assert len(prints) == 5


def test_normalize_keeps_symbol_names_and_drops_dynamic_values() -> None:
    text = ("at 0x7f33aa file /tmp/pytest-of-u/pytest-12/x0/db.sqlite line 12 id 3fa85f64-5717-4562-b3fc-2c963f66afa6 "
            "value 'order-20250301-17' name 'total_price' count 42 in cart.py:88")
    assert normalize(text) == (
        "at <hex> file <tmp> line <line> id <uuid> value '<q>' name 'total_price' count <n> in cart.py:<line>"
    )


@pytest.mark.parametrize(("path", "is_test"), [
    ("tests/test_cart.py", True), ("test_cart.py", True), ("src/cart_test.py", True), ("conftest.py", True),
    ("src/test/java/com/shop/CartTest.java", True), ("web/cart.spec.ts", True),
    ("src/shop/cart.py", False), ("src/main/java/com/shop/Cart.java", False), ("shop/testing_utils.py", False),
])
def test_is_test_path(path: str, is_test: bool) -> None:
    assert is_test_path(path) is is_test
