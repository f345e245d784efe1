"""The similarity score between a last-good element and candidates on the redesigned page."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.healer.locator.dom import is_visible, parse_html
from actors.healer.locator.score import (
    WEIGHTS,
    SelectorDescription,
    describe_selector,
    path_similarity,
    score,
    score_description,
    text_similarity,
    words,
)
from actors.healer.locator.snapshot import ElementSnapshot, PathStep, element_snapshot, snapshot_of

PAGES = Path(__file__).parent / "pages"


def _page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


def _ranked(before: str, after: str, selector: str) -> list[tuple[float, str]]:
    last_good = element_snapshot(_page(before), selector)
    assert last_good is not None
    doc = parse_html(_page(after))
    scored = [(score(last_good, snapshot_of(e)).total, repr(e)) for e in doc.elements if is_visible(e)]
    return sorted(scored, key=lambda pair: -pair[0])


def test_an_unchanged_element_scores_one() -> None:
    # Given the element recorded on the last passing run, When compared with itself, Then every part is 1
    snap = element_snapshot(_page("shop_before.html"), "#buy-button")
    assert snap is not None
    result = score(snap, snap)
    assert result.total == 1.0
    assert all(p.similarity == 1.0 for p in result.parts)


def test_the_breakdown_says_why() -> None:
    # Given the buy button before and after the redesign (id gone, classes renamed, data-testid added)
    before = element_snapshot(_page("shop_before.html"), "#buy-button")
    after = element_snapshot(_page("shop_after.html"), "[data-testid=buy]")
    assert before is not None and after is not None
    # When scored
    result = score(before, after)
    # Then each feature's similarity and weight are reported, and the total is their weighted mean
    assert [p.feature for p in result.parts] == list(WEIGHTS)
    assert result.part("tag").similarity == 1.0
    assert result.part("id").similarity == 0.0
    assert result.part("classes").similarity == 0.0
    assert result.part("text").similarity == 1.0
    # type=submit kept (1.0 of the old attributes) and data-testid added: 0.75*1 + 0.25*1/2
    assert result.part("attributes").similarity == pytest.approx(0.875)
    assert result.explain().startswith("tag 1.00*0.15, id 0.00*0.20, classes 0.00*0.15, text 1.00*0.20, ")
    assert result.total == pytest.approx(sum(p.similarity * p.weight for p in result.parts), abs=1e-6)


def test_features_absent_on_both_sides_do_not_count() -> None:
    # Given two elements without id, classes or attributes, with the same tag and text
    a = ElementSnapshot(tag="span", text="2 items left")
    b = ElementSnapshot(tag="span", text="2 items left")
    # When scored
    result = score(a, b)
    # Then those features are n/a and the rest is rescaled, rather than counted as matches or misses
    assert result.total == 1.0
    assert "id n/a" in result.explain() and "classes n/a" in result.explain()
    assert not result.part("id").applicable


def test_class_overlap_is_jaccard() -> None:
    # Given classes {btn, add-to-cart} against {add-to-cart}
    a = ElementSnapshot(tag="button", classes=("add-to-cart",))
    b = ElementSnapshot(tag="button", classes=("btn", "add-to-cart"))
    # When scored, Then the class part is |intersection| / |union|
    assert score(a, b).part("classes").similarity == 0.5


def test_a_swapped_clickable_tag_earns_half_credit() -> None:
    # Given a link redesigned as a button, When scored, Then the tag part is 0.5, not 0
    assert score(ElementSnapshot(tag="a"), ElementSnapshot(tag="button")).part("tag").similarity == 0.5
    assert score(ElementSnapshot(tag="a"), ElementSnapshot(tag="div")).part("tag").similarity == 0.0


def test_text_similarity_ignores_case_and_spacing() -> None:
    assert text_similarity("Buy  now", "buy now") == 1.0
    assert 0.5 < text_similarity("Add to cart", "Add to basket") < 1.0
    assert text_similarity("Buy now", "") == 0.0


def test_path_similarity_prefers_the_same_position() -> None:
    # Given a path and two candidates, one at the same positions and one in the next list item
    base = [PathStep(tag="ul", index=1), PathStep(tag="li", index=2), PathStep(tag="button", index=3)]
    moved = [PathStep(tag="ul", index=1), PathStep(tag="li", index=1), PathStep(tag="button", index=3)]
    wrapped = [PathStep(tag="ul", index=1), PathStep(tag="li", index=2), PathStep(tag="div", index=1),
               PathStep(tag="button", index=3)]
    # When compared, Then the same position scores 1, a sibling slightly less, an extra wrapper 3/4
    assert path_similarity(base, base) == 1.0
    assert path_similarity(base, moved) == pytest.approx((1 + 0.8 + 1) / 3)
    assert path_similarity(base, wrapped) == pytest.approx(3 / 4)


@pytest.mark.parametrize(
    ("before", "after", "selector", "best"),
    [
        ("shop_before.html", "shop_after.html", "#buy-button", "data-testid='buy'"),
        ("login_before.html", "login_after.html", "#username", "id='login-email'"),
        ("todos_before.html", "todos_after.html", ".todo-count", "class='todo-counter'"),
    ],
)
def test_the_redesigned_element_ranks_first(before: str, after: str, selector: str, best: str) -> None:
    # Given real pages before and after a redesign
    # When every visible element of the new page is scored against the recorded one
    ranked = _ranked(before, after, selector)
    # Then the redesigned element ranks first, above the 0.5 threshold
    assert best in ranked[0][1]
    assert ranked[0][0] >= 0.5


def test_nothing_on_a_sold_out_page_resembles_the_buy_button() -> None:
    # Given the page after the product sold out (no buy button at all)
    ranked = _ranked("shop_before.html", "shop_sold_out.html", "#buy-button")
    # When scored, Then nothing comes near the threshold
    assert ranked[0][0] < 0.3


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("#buy-button", SelectorDescription(tag=None, words=("buy", "button"))),
        ("input[name=email]", SelectorDescription(tag="input", words=("email",))),
        ("form.loginForm > input#userName", SelectorDescription(tag="input", words=("user", "name"),
                                                                context=("login", "form"))),
        ("div", None),
        ("text=Buy now", None),
    ],
)
def test_describe_selector(selector: str, expected: SelectorDescription | None) -> None:
    # Given an old selector and no recording, When described, Then its words stand in for the element
    assert describe_selector(selector) == expected


def test_words_split_identifiers() -> None:
    assert words("buy-button") == ["buy", "button"]
    assert words("loginEmailInput2") == ["login", "email", "input", "2"]
    assert words("Add to cart!") == ["add", "to", "cart"]


def test_description_scoring_weighs_names_over_text() -> None:
    # Given the description of `#buy-button`
    description = describe_selector("#buy-button")
    assert description is not None
    # When the redesigned button, another button and a container holding the text are scored
    redesigned = ElementSnapshot(tag="button", text="Buy now", attributes={"data-testid": "buy"})
    buy = score_description(description, redesigned)
    other = score_description(description, ElementSnapshot(tag="button", text="Add to wishlist"))
    container = score_description(description, ElementSnapshot(tag="div", text="Buy now"))
    # Then the element named by the words wins clearly; matching text alone counts little
    assert buy.total > 0.9
    assert other.total == pytest.approx(0.55 * 0.5 / 0.65)
    assert container.total < 0.2
