"""The light DOM: parsing, the CSS subset, unique selector generation and visibility heuristics."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.healer.locator.dom import (
    css_ident,
    css_path,
    is_unique,
    is_visible,
    looks_generated,
    parse_html,
    parse_selector,
    visible_elements,
)
from actors.healer.locator.errors import SelectorError

PAGES = Path(__file__).parent / "pages"

LIST_PAGE = """
<html><body>
  <nav id="menu" class="nav main-nav">
    <ul>
      <li class="item first"><a href="/" class="link active" data-role="home">Home</a>
      <li class="item"><a href="/shop" class="link" lang="en-GB">Shop</a>
      <li class="item"><a href="/about" class="link">About &amp; us</a>
      <li class="item last"><a href="/contact" class="link" title="Write to us">Contact</a>
    </ul>
  </nav>
  <p>Intro<div class="box">not inside the p</div>
  <img src="/logo.png" alt="logo"><span class="after-img">x</span>
</body></html>
"""


def _tags(html: str, selector: str) -> list[str]:
    return [f"{e.tag}:{e.text()}" for e in parse_html(html).select(selector)]


def test_parse_closes_implied_end_tags_and_void_elements() -> None:
    # Given a page relying on HTML's implied end tags (<li> without </li>, <p> before a <div>)
    doc = parse_html(LIST_PAGE)
    # When the tree is built
    items = doc.select("li")
    # Then list items are siblings, the div is no child of the p, and <img> has no children
    assert [li.index for li in items] == [1, 2, 3, 4]
    assert {li.parent.tag for li in items if li.parent} == {"ul"}
    assert doc.select("p > div") == []
    assert doc.select("body > div.box")[0].text() == "not inside the p"
    assert doc.select("img")[0].children == []
    assert doc.select("img + span.after-img")


def test_text_decodes_entities_and_skips_scripts() -> None:
    # Given a button whose text has an entity and a script sibling inside its container
    doc = parse_html("<div><button>Save &amp; close</button><script>var x = '<b>no</b>';</script></div>")
    # When the container's text is read, Then the script's text is not part of it
    assert doc.select("div")[0].text() == "Save & close"
    # And the script's markup-looking content did not become elements
    assert doc.select("b") == []


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("a", ["a:Home", "a:Shop", "a:About & us", "a:Contact"]),
        ("#menu a.active", ["a:Home"]),
        ("nav > ul > li.last > a", ["a:Contact"]),
        ("nav > a", []),
        ("li.item.first a, li.last a", ["a:Home", "a:Contact"]),
        ("[data-role]", ["a:Home"]),
        ("a[href='/shop']", ["a:Shop"]),
        ('a[href="/SHOP" i]', ["a:Shop"]),
        ("a[href^='/c']", ["a:Contact"]),
        ("a[href$=out]", ["a:About & us"]),
        ("a[title*='to']", ["a:Contact"]),
        ("a[href*='']", []),
        ("nav[class~=main-nav]", ["nav:Home Shop About & us Contact"]),
        ("a[lang|=en]", ["a:Shop"]),
        ("li:nth-child(2) a", ["a:Shop"]),
        ("li:nth-child(odd) a", ["a:Home", "a:About & us"]),
        ("li:nth-child(2n) a", ["a:Shop", "a:Contact"]),
        ("li:nth-child(-n+2) a", ["a:Home", "a:Shop"]),
        ("li:nth-last-child(1) a", ["a:Contact"]),
        ("li:first-child a", ["a:Home"]),
        ("li:last-child > a", ["a:Contact"]),
        ("li:not(.first):not(.last) a", ["a:Shop", "a:About & us"]),
        ("li.first ~ li.last a", ["a:Contact"]),
        ("li.first + li a", ["a:Shop"]),
        ("*.link[href='/']", ["a:Home"]),
        ("A.LINK", []),  # classes are case-sensitive, tags are not
    ],
)
def test_select_supports_the_common_css_subset(selector: str, expected: list[str]) -> None:
    # Given a navigation list, When a selector is matched, Then exactly the expected elements match in order
    assert _tags(LIST_PAGE, selector) == expected


@pytest.mark.parametrize(
    "selector", ["", "text=Buy now", "button:has-text('Buy')", "a::before", "a[href", "a[href='x'", "li:nth-child(x)",
                 "div >", "//div[@id='x']"],
)
def test_unsupported_or_malformed_selectors_raise(selector: str) -> None:
    # Given syntax outside the CSS subset (Playwright text engines, XPath, pseudo-elements, typos)
    # When it is parsed, Then a SelectorError says so instead of matching something arbitrary
    with pytest.raises(SelectorError):
        parse_selector(selector)


def test_escaped_identifiers_round_trip() -> None:
    # Given ids that need escaping in CSS (a colon, a leading digit)
    doc = parse_html('<div id="a:b">1</div><div id="1st">2</div>')
    # When they are escaped with css_ident, Then the escaped selectors find the elements again
    assert css_ident("a:b") == "a\\:b"
    assert [e.text() for e in doc.select(f"#{css_ident('a:b')}")] == ["1"]
    assert [e.text() for e in doc.select(f"#{css_ident('1st')}")] == ["2"]


@pytest.mark.parametrize(
    ("html", "target", "expected"),
    [
        # An own id wins.
        ('<main><button id="pay" class="btn">Pay</button></main>', "button", "#pay"),
        # A generated id is no anchor; a test attribute is next.
        ('<main><button id="ember1234" data-testid="pay">Pay</button></main>', "button", '[data-testid="pay"]'),
        # Form fields are named.
        ('<form><input name="email" type="email"><input name="pw"></form>', "input[type=email]", 'input[name="email"]'),
        # Tag and class, the shortest unique combination, skipping hashed classes.
        (
            '<div><span class="css-1x2y3z price">1</span><span class="price old">2</span></div>',
            ".old",
            "span.old",
        ),
        ('<div><b class="x y">1</b><b class="x">2</b><b class="y">3</b></div>', "b:first-child", "b.x.y"),
        # Under the nearest ancestor with an id when the element alone is ambiguous.
        (
            '<div id="a"><p class="t">1</p></div><div id="b"><p class="t">2</p></div>',
            "#b p",
            "#b p.t",
        ),
        # Identical siblings need a position.
        (
            '<ul id="l"><li><a class="go">1</a></li><li><a class="go">2</a></li></ul>',
            "li:nth-child(2) a",
            "#l > li:nth-child(2) > a",
        ),
        # No anchor anywhere: a child path from the top element.
        (
            "<html><body><div><p>1</p><p>2</p></div></body></html>",
            "p:nth-child(2)",
            "html > body > div > p:nth-child(2)",
        ),
    ],
)
def test_css_path_prefers_robust_unique_selectors(html: str, target: str, expected: str) -> None:
    # Given a page and one element in it
    doc = parse_html(html)
    [element] = doc.select(target)
    # When a selector is generated for it
    selector = css_path(element, doc)
    # Then it is the most robust one available, and it matches that element only
    assert selector == expected
    assert doc.select(selector) == [element]


@pytest.mark.parametrize("page", sorted(p.name for p in PAGES.glob("*.html")))
def test_css_path_is_unique_for_every_element_of_real_pages(page: str) -> None:
    # Given a realistic page
    doc = parse_html((PAGES / page).read_text(encoding="utf-8"))
    # When a selector is generated for each of its elements
    # Then each one matches exactly its element
    for element in doc.elements:
        selector = css_path(element, doc)
        assert selector is not None, element
        assert is_unique(doc, selector, element), (selector, element)


@pytest.mark.parametrize(
    ("html", "visible"),
    [
        ('<button id="t">Go</button>', True),
        ('<button id="t" hidden>Go</button>', False),
        ('<input id="t" type="hidden">', False),
        ('<input id="t" type="HIDDEN">', False),
        ('<button id="t" style="color: red; display : none !important">Go</button>', False),
        ('<div style="visibility:hidden"><button id="t">Go</button></div>', False),
        ('<div aria-hidden="true"><div><button id="t">Go</button></div></div>', False),
        ('<div aria-hidden="false"><button id="t">Go</button></div>', True),
        ('<div class="d-none"><button id="t">Go</button></div>', False),
        ('<template><button id="t">Go</button></template>', False),
        ('<noscript><button id="t">Go</button></noscript>', False),
        ('<details><summary id="t">More</summary></details>', True),
        ('<details><p id="t">Body</p></details>', False),
        ('<details open><p id="t">Body</p></details>', True),
        ('<dialog><button id="t">Ok</button></dialog>', False),
        ('<head><title id="t">x</title></head>', False),
    ],
)
def test_visibility_heuristics(html: str, visible: bool) -> None:
    # Given an element marked up to be shown or hidden, When its visibility is judged, Then it is as a user sees it
    doc = parse_html(html)
    [element] = doc.select("#t")
    assert is_visible(element) is visible


@pytest.mark.parametrize("page", sorted(p.name for p in PAGES.glob("*.html")))
def test_visible_elements_agrees_with_is_visible(page: str) -> None:
    # Given a realistic page with hidden inputs, a display:none block and a <template>
    doc = parse_html((PAGES / page).read_text(encoding="utf-8"))
    # When the visible elements are collected in one pass, Then they are those is_visible accepts, in order
    assert visible_elements(doc) == [e for e in doc.elements if is_visible(e)]
    assert len(visible_elements(doc)) < len(doc.elements)  # every page hides something (at least <head>)


@pytest.mark.parametrize(
    ("name", "generated"),
    [("buy-button", False), ("col-md-6", False), ("h2", False), ("ember1234", True), ("css-1x2y3z", True),
     (":r1:", True), ("btn-a8f3c9", True), ("grid-cols-12", False)],
)
def test_generated_names_are_recognised(name: str, generated: bool) -> None:
    # Given an id or class, When judged, Then framework-generated names are told from authored ones
    assert looks_generated(name) is generated
