"""`locator_drift`: real pages before and after a redesign, a test file using the old selector, and the
patch the strategy proposes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from actors.healer.locator.dom import parse_html
from actors.healer.locator.snapshot import element_snapshot, save_snapshots, store_relpath
from actors.healer.strategies.locator_drift import FALLBACK_FACTOR, LocatorDrift
from actors.healer.strategy import Strategy
from actors.patching import make_patch, patch_files
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass, FailureEvidence

PAGES = Path(__file__).parent / "pages"

SHOP_TEST = '''"""Checkout smoke tests."""

from playwright.sync_api import Page, expect


def test_buy(page: Page) -> None:
    page.goto("/p/kettle")
    page.click("#buy-button")
    expect(page).to_have_url("/cart")


def test_buy_button_is_unique(page: Page) -> None:
    page.goto("/p/kettle")
    assert page.locator("#buy-button").count() == 1
'''

# The new selector holds double quotes, so the edited literal switches to single quotes.
BUY_CLICK = """page.click('[data-testid="buy"]')"""

LOGIN_TEST = '''def test_login(page):
    page.goto("/login")
    page.fill("#username", "alice")
    page.fill("#password", "s3cret")
    page.click("#login")
'''

TODOS_TEST = '''COUNTER = ".todo-count"


class TestTodos:
    def test_counter(self, page):
        page.goto("/")
        assert page.text_content(COUNTER) == "2 items left"
'''

PRODUCTS_TEST = """def test_add_gadget(page):
    page.goto('/products')
    page.click('#add-gadget')
    assert page.text_content('.cart-count') == '1'
"""

CHECKOUT_TEST = '''def test_promo(page):
    page.goto("/checkout")
    page.fill("#promo-code", "SPRING")
'''


def _page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


def _line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), start=1) if needle in line)


def _workspace(tmp_path: Path, files: dict[str, str]) -> Workspace:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Workspace(tmp_path)


def _record(workspace: Workspace, test_id: str, page: str, selector: str) -> None:
    """What CARS's plugin does when the test passes against the old page."""
    snap = element_snapshot(_page(page), selector)
    assert snap is not None
    save_snapshots(workspace.root, test_id, {selector: snap})


def _failure(
    test_id: str,
    selector: str,
    page: str,
    *,
    file: str | None = None,
    line: int | None = None,
    category: FailureClass = FailureClass.LOCATOR_DRIFT,
) -> FailureDetected:
    return FailureDetected(
        project="acme-web",
        test_id=test_id,
        run_id="run-42",
        fingerprint="fp-1",
        category=category,
        evidence=FailureEvidence(
            exception_type="playwright._impl._errors.TimeoutError",
            message=f'Timeout 30000ms exceeded waiting for locator("{selector}")',
            file=file,
            line=line,
            selector=selector,
            page_html=_page(page),
        ),
    )


def test_it_is_a_strategy() -> None:
    strategy: Strategy = LocatorDrift()
    assert strategy.name == "locator_drift"


def test_buy_button_redesigned_with_a_test_id(tmp_path: Path) -> None:
    # Given a shop test that clicks `#buy-button`, recorded on a passing run against the old page
    ws = _workspace(tmp_path, {"tests/test_shop.py": SHOP_TEST})
    _record(ws, "tests/test_shop.py::test_buy", "shop_before.html", "#buy-button")
    failure = _failure(
        "tests/test_shop.py::test_buy", "#buy-button", "shop_after.html",
        file="tests/test_shop.py", line=_line_of(SHOP_TEST, 'page.click("#buy-button")'),
    )
    # When the redesigned page (the button now `<button class="btn btn-primary" data-testid="buy">`) fails it
    proposals = LocatorDrift().propose(failure, ws)
    # Then the best proposal clicks the test id, in test_buy only; the other test keeps its literal
    best = proposals[0]
    assert best.strategy == "locator_drift"
    assert best.edits[0].path == "tests/test_shop.py"
    assert best.edits[0].before == SHOP_TEST
    assert best.edits[0].after == SHOP_TEST.replace('page.click("#buy-button")', BUY_CLICK)
    assert 'page.locator("#buy-button").count()' in best.edits[0].after
    # And it is confident (a clear lead over the wishlist button) and says why, with the breakdown
    assert best.confidence > 0.5
    assert "'[data-testid=\"buy\"]' matches exactly one visible element" in best.explanation
    assert "tag 1.00*0.15, id 0.00*0.20, classes 0.00*0.15, text 1.00*0.20" in best.explanation
    assert "last-good element recorded" in best.explanation
    assert patch_files(make_patch(best.edits)) == ["tests/test_shop.py"]
    # And every proposed selector matches one element of the new page
    doc = parse_html(_page("shop_after.html"))
    for proposal in proposals:
        new = proposal.edits[0].after.splitlines()[_line_of(SHOP_TEST, "page.click") - 1]
        selector = ast.literal_eval(new.strip()[len("page.click(") : -1])
        assert len(doc.select(selector)) == 1
    assert [p.confidence for p in proposals] == sorted((p.confidence for p in proposals), reverse=True)


def test_login_field_whose_id_changed(tmp_path: Path) -> None:
    # Given a login test filling `#username`, recorded against the old form
    ws = _workspace(tmp_path, {"tests/test_login.py": LOGIN_TEST})
    _record(ws, "tests/test_login.py::test_login", "login_before.html", "#username")
    # When the form now names its fields login-email / login-password
    failure = _failure("tests/test_login.py::test_login", "#username", "login_after.html")
    proposals = LocatorDrift().propose(failure, ws)
    # Then the username field maps to `#login-email`; `#password` is left for its own failure
    assert proposals[0].edits[0].after == LOGIN_TEST.replace('"#username"', '"#login-email"')
    # And the password field, which looks alike, is the runner-up with lower confidence
    assert proposals[1].edits[0].after == LOGIN_TEST.replace('"#username"', '"#login-password"')
    assert proposals[0].confidence > proposals[1].confidence


def test_renamed_class_in_a_list_page_through_a_module_constant(tmp_path: Path) -> None:
    # Given a todo test reading the counter through a module-level constant
    ws = _workspace(tmp_path, {"tests/test_todos.py": TODOS_TEST})
    test_id = "tests/test_todos.py::TestTodos::test_counter"
    _record(ws, test_id, "todos_before.html", ".todo-count")
    # When the list was restyled and `.todo-count` became `.todo-counter`
    proposals = LocatorDrift().propose(_failure(test_id, ".todo-count", "todos_after.html"), ws)
    # Then the constant is patched (the literal is not inside the test function)
    assert [p.edits[0].after for p in proposals] == [TODOS_TEST.replace('".todo-count"', '"span.todo-counter"')]
    assert "(module level)" in proposals[0].explanation


def test_near_identical_candidates_get_unique_selectors_and_low_confidence(tmp_path: Path) -> None:
    # Given a test clicking the Gadget's `#add-gadget`, and a new grid where both cards' buttons are alike
    ws = _workspace(tmp_path, {"tests/test_products.py": PRODUCTS_TEST})
    _record(ws, "tests/test_products.py::test_add_gadget", "products_before.html", "#add-gadget")
    doc = parse_html(_page("products_after.html"))
    assert len(doc.select("button.btn.add-to-cart")) == 2  # the obvious selector would be ambiguous
    # When the strategy proposes
    failure = _failure("tests/test_products.py::test_add_gadget", "#add-gadget", "products_after.html")
    proposals = LocatorDrift().propose(failure, ws)
    # Then each proposal pins one button by position, the Gadget's (second card) first
    afters = [p.edits[0].after for p in proposals]
    assert afters == [
        PRODUCTS_TEST.replace("'#add-gadget'", "'#products > li:nth-child(2) > button'"),
        PRODUCTS_TEST.replace("'#add-gadget'", "'#products > li:nth-child(1) > button'"),
    ]
    # And a near tie means low confidence: the validator, not the score, has to decide
    assert proposals[0].confidence < 0.5
    assert proposals[0].confidence > proposals[1].confidence


def test_the_hidden_best_match_is_never_chosen(tmp_path: Path) -> None:
    # Given a checkout test filling `#promo-code`
    ws = _workspace(tmp_path, {"tests/test_checkout.py": CHECKOUT_TEST})
    _record(ws, "tests/test_checkout.py::test_promo", "checkout_before.html", "#promo-code")
    # When the new page keeps the old field in a display:none block and a <template> (near-perfect
    # copies) and shows a new discount field
    proposals = LocatorDrift().propose(
        _failure("tests/test_checkout.py::test_promo", "#promo-code", "checkout_after.html"), ws
    )
    # Then only the visible field is proposed
    assert [p.edits[0].after for p in proposals] == [CHECKOUT_TEST.replace("#promo-code", "#discount-code")]
    assert "legacy" not in proposals[0].explanation and "tpl" not in proposals[0].explanation


@pytest.mark.parametrize("recorded", [True, False])
def test_nothing_similar_enough_means_no_proposal(tmp_path: Path, recorded: bool) -> None:
    # Given the shop test, with or without a recording
    ws = _workspace(tmp_path, {"tests/test_shop.py": SHOP_TEST})
    if recorded:
        _record(ws, "tests/test_shop.py::test_buy", "shop_before.html", "#buy-button")
    # When the product is sold out and the page has no buy button at all
    failure = _failure("tests/test_shop.py::test_buy", "#buy-button", "shop_sold_out.html")
    # Then nothing is proposed: that is a product change, not a drifted locator
    assert LocatorDrift().propose(failure, ws) == []


def test_without_a_recording_the_selector_words_stand_in_with_lower_confidence(tmp_path: Path) -> None:
    # Given the shop test, once with and once without a recording of the last-good element
    recorded_ws = _workspace(tmp_path / "recorded", {"tests/test_shop.py": SHOP_TEST})
    _record(recorded_ws, "tests/test_shop.py::test_buy", "shop_before.html", "#buy-button")
    bare_ws = _workspace(tmp_path / "bare", {"tests/test_shop.py": SHOP_TEST})
    failure = _failure("tests/test_shop.py::test_buy", "#buy-button", "shop_after.html")
    # When both propose
    recorded = LocatorDrift().propose(failure, recorded_ws)
    bare = LocatorDrift().propose(failure, bare_ws)
    # Then "buy" + "button" still find the same button, with confidence capped by the fallback factor
    assert bare[0].edits == recorded[0].edits
    assert bare[0].confidence <= FALLBACK_FACTOR
    assert "words of the old selector" in bare[0].explanation
    assert "names 1.00*0.55" in bare[0].explanation


def test_a_damaged_store_falls_back_and_says_so(tmp_path: Path) -> None:
    # Given a store file that is not JSON
    ws = _workspace(tmp_path, {"tests/test_shop.py": SHOP_TEST})
    (tmp_path / store_relpath("tests/test_shop.py::test_buy")).parent.mkdir(parents=True)
    (tmp_path / store_relpath("tests/test_shop.py::test_buy")).write_text("{oops", encoding="utf-8")
    # When the strategy proposes
    proposals = LocatorDrift().propose(_failure("tests/test_shop.py::test_buy", "#buy-button", "shop_after.html"), ws)
    # Then it still proposes from the selector's words, and the explanation names the damaged store
    assert proposals[0].edits[0].after == SHOP_TEST.replace('page.click("#buy-button")', BUY_CLICK)
    assert "is not a locator store file" in proposals[0].explanation


def test_a_parametrized_test_uses_its_base_recording(tmp_path: Path) -> None:
    # Given a recording under the base test id
    ws = _workspace(tmp_path, {"tests/test_login.py": LOGIN_TEST})
    _record(ws, "tests/test_login.py::test_login", "login_before.html", "#username")
    # When the chromium variant fails
    failure = _failure("tests/test_login.py::test_login[chromium]", "#username", "login_after.html")
    proposals = LocatorDrift().propose(failure, ws)
    # Then the recording is used (not the word fallback, which would rank by "username" alone)
    assert "last-good element recorded" in proposals[0].explanation
    assert '"#login-email"' in proposals[0].edits[0].after


def test_the_failing_line_decides_between_functions(tmp_path: Path) -> None:
    # Given a helper in the test file that holds the selector, called by the failing test
    source = '''def buy(page):
    page.click("#buy-button")


def test_buy(page):
    buy(page)


def test_other(page):
    page.click("#buy-button")
'''
    ws = _workspace(tmp_path, {"tests/test_shop.py": source})
    # When the evidence points at the helper's line
    failure = _failure(
        "tests/test_shop.py::test_buy", "#buy-button", "shop_after.html", file="tests/test_shop.py", line=2
    )
    proposals = LocatorDrift().propose(failure, ws)
    # Then only the helper's literal changes
    after = proposals[0].edits[0].after
    assert after.splitlines()[1] == "    " + BUY_CLICK
    assert after.splitlines()[9] == '    page.click("#buy-button")'


def test_literals_in_other_tests_and_f_strings_are_left_alone(tmp_path: Path) -> None:
    # Given the selector only in another test, and in an f-string in the failing one
    source = '''def test_buy(page):
    sel = "buy"
    page.click(f"#{sel}-button")


def test_other(page):
    page.click("#buy-button")
'''
    ws = _workspace(tmp_path, {"tests/test_shop.py": source})
    # When the strategy proposes, Then there is nothing it may edit
    failure = _failure("tests/test_shop.py::test_buy", "#buy-button", "shop_after.html")
    assert LocatorDrift().propose(failure, ws) == []


def test_only_test_files_are_edited(tmp_path: Path) -> None:
    # Given the selector lives in a page object outside the test globs
    ws = _workspace(tmp_path, {
        "app/pages.py": 'BUY = "#buy-button"\n',
        "tests/test_shop.py": "from app.pages import BUY\n\n\ndef test_buy(page):\n    page.click(BUY)\n",
    })
    # When the evidence names the page object
    failure = _failure("tests/test_shop.py::test_buy", "#buy-button", "shop_after.html", file="app/pages.py", line=1)
    # Then no proposal touches product code
    assert LocatorDrift().propose(failure, ws) == []


def test_no_proposal_when_the_old_selector_still_matches(tmp_path: Path) -> None:
    # Given a failure classified as locator drift, but the selector still finds a visible element
    ws = _workspace(tmp_path, {"tests/test_shop.py": SHOP_TEST})
    failure = _failure("tests/test_shop.py::test_buy", "#buy-button", "shop_before.html")
    # When the strategy proposes, Then nothing: the locator is not what broke
    assert LocatorDrift().propose(failure, ws) == []


@pytest.mark.parametrize(
    ("category", "selector", "page", "applies"),
    [
        (FailureClass.LOCATOR_DRIFT, "#buy-button", "shop_after.html", True),
        (FailureClass.TIMEOUT, "#buy-button", "shop_after.html", False),
        (FailureClass.LOCATOR_DRIFT, None, "shop_after.html", False),
        (FailureClass.LOCATOR_DRIFT, "#buy-button", None, False),
    ],
)
def test_applies_only_to_locator_drift_with_selector_and_page(
    category: FailureClass, selector: str | None, page: str | None, applies: bool
) -> None:
    # Given a failure with or without the locator evidence, When asked, Then it applies only with both
    failure = FailureDetected(
        project="p", test_id="tests/test_a.py::test_a", run_id="r", fingerprint="f", category=category,
        evidence=FailureEvidence(selector=selector, page_html=_page(page) if page else None),
    )
    assert LocatorDrift().applies(failure) is applies
    if not applies:
        assert LocatorDrift().propose(failure, Workspace(PAGES)) == []
