"""A light HTML tree built with the stdlib `html.parser`, a matcher for the CSS selectors tests use, a
generator of unique selectors (`css_path`) and visibility heuristics.

Supported selector syntax: type and universal selectors, `#id`, `.class`, attribute tests (`[a]`,
`[a=v]`, `~=`, `|=`, `^=`, `$=`, `*=`, with an optional ` i` flag), the descendant, child (`>`),
adjacent (`+`) and general sibling (`~`) combinators, comma lists, and the pseudo-classes
`:nth-child()`, `:nth-last-child()`, `:nth-of-type()`, `:first-child`, `:last-child`, `:only-child`,
`:first-of-type`, `:last-of-type` and `:not(<compound>, ...)`. Anything else (Playwright's `text=`,
`:has-text()`, XPath) raises `SelectorError`.

The page at failure is bounded by the evidence contract (512 KiB), so the tree is built whole; every
walk over it is iterative, so a deeply nested page cannot exhaust the recursion limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

from attrs import define, field, frozen

from actors.healer.locator.errors import SelectorError

DOCUMENT = "#document"
# Elements that never have content, so no end tag closes them.
VOID_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr",
})
# HTML's implied end tags: opening the key closes an open element of these kinds first (`<li>a<li>b`).
_IMPLIED_CLOSE: dict[str, frozenset[str]] = {
    "li": frozenset({"li"}),
    "option": frozenset({"option"}),
    "optgroup": frozenset({"optgroup", "option"}),
    "tr": frozenset({"tr", "td", "th"}),
    "td": frozenset({"td", "th"}),
    "th": frozenset({"td", "th"}),
    "dt": frozenset({"dt", "dd"}),
    "dd": frozenset({"dt", "dd"}),
    "thead": frozenset({"tbody", "tfoot", "tr", "td", "th"}),
    "tbody": frozenset({"thead", "tbody", "tr", "td", "th"}),
    "tfoot": frozenset({"thead", "tbody", "tr", "td", "th"}),
}
# Block-level start tags close an open <p> (a paragraph cannot contain them).
_CLOSES_P = frozenset({
    "address", "article", "aside", "blockquote", "details", "div", "dl", "fieldset", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre", "section",
    "table", "ul",
})
# Content a user never sees, whatever the stylesheet says.
HIDDEN_TAGS = frozenset({"head", "script", "style", "template", "noscript", "title", "meta", "link", "base"})
# Utility classes of common CSS frameworks that mean `display: none` (Bootstrap, Tailwind, Bulma).
HIDING_CLASSES = frozenset({"d-none", "hidden", "is-hidden", "invisible"})
# Attributes that test authors add precisely so that selectors survive redesigns.
TEST_ATTRIBUTES = ("data-testid", "data-test-id", "data-test", "data-qa", "data-cy")
_TEXT_SKIP = frozenset({"script", "style", "template", "head", "noscript"})


@define(kw_only=True, eq=False, repr=False)
class Element:
    """One element of the tree. Mutable only while the parser builds it; identity is its equality."""

    tag: str
    attrs: dict[str, str] = field(factory=dict)
    parent: Element | None = None
    #: Child elements and text chunks, in document order.
    content: list[Element | str] = field(factory=list)
    children: list[Element] = field(factory=list)
    #: 1-based position among the parent's element children (what `:nth-child` counts).
    index: int = 1
    _classes: tuple[str, ...] | None = field(default=None, alias="_classes")

    @property
    def id(self) -> str:
        return self.attrs.get("id", "")

    @property
    def classes(self) -> tuple[str, ...]:
        # Scoring reads every element's and ancestor's classes many times: split once.
        if self._classes is None:
            self._classes = tuple(dict.fromkeys(self.attrs.get("class", "").split()))
        return self._classes

    @property
    def parent_element(self) -> Element | None:
        """The parent, or None at the top (the synthetic document node is not an element)."""
        if self.parent is None or self.parent.tag == DOCUMENT:
            return None
        return self.parent

    def ancestors(self) -> Iterator[Element]:
        """Parent first, up to the top element."""
        node = self.parent_element
        while node is not None:
            yield node
            node = node.parent_element

    def text(self) -> str:
        """The rendered-ish text: descendant text, whitespace collapsed, script/style/template skipped."""
        parts: list[str] = []
        stack: list[Element | str] = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                parts.append(item)
            elif item is self or item.tag not in _TEXT_SKIP:
                stack.extend(reversed(item.content))
        return " ".join(" ".join(parts).split())

    def iter(self) -> Iterator[Element]:
        """This element and its descendants in document order."""
        stack: list[Element] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __repr__(self) -> str:
        return f"<{self.tag}{''.join(f' {k}={v!r}' for k, v in self.attrs.items())}>"


@define(kw_only=True, eq=False)
class Document:
    """A parsed page: a synthetic root and every element in document order."""

    root: Element
    elements: list[Element]

    def select(self, selector: str | SelectorList) -> list[Element]:
        """The elements matching `selector`, in document order (like `querySelectorAll`)."""
        parsed = parse_selector(selector) if isinstance(selector, str) else selector
        return [e for e in self.elements if parsed.matches(e)]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element(tag=DOCUMENT)
        self.stack: list[Element] = [self.root]
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=tag in VOID_TAGS)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # `<div/>` does not close in HTML, but pages serialized from XHTML-ish templates mean it to.
        self._open(tag, attrs, void=True)

    def handle_endtag(self, tag: str) -> None:
        # Close up to the nearest open element of this kind; a stray end tag is ignored, as browsers do.
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].content.append(data)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], *, void: bool) -> None:
        closes = _IMPLIED_CLOSE.get(tag, frozenset())
        if tag in _CLOSES_P:
            closes = closes | {"p"}
        while len(self.stack) > 1 and self.stack[-1].tag in closes:
            self.stack.pop()
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")  # the first of duplicated attributes wins, as in HTML
        parent = self.stack[-1]
        element = Element(tag=tag, attrs=values, parent=parent, index=len(parent.children) + 1)
        parent.children.append(element)
        parent.content.append(element)
        self.elements.append(element)
        if not void:
            self.stack.append(element)


def parse_html(html: str) -> Document:
    """Parse a page leniently, as a browser would for the cases tests meet."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return Document(root=builder.root, elements=builder.elements)


# --- selectors --------------------------------------------------------------------------------------


@frozen(kw_only=True)
class AttributeTest:
    name: str
    op: str | None = None  # None tests presence only
    value: str = ""
    ignore_case: bool = False

    def matches(self, element: Element) -> bool:
        actual = element.attrs.get(self.name)
        if actual is None:
            return False
        if self.op is None:
            return True
        want = self.value
        if self.ignore_case:
            actual, want = actual.lower(), want.lower()
        if self.op == "=":
            return actual == want
        if self.op == "~=":
            return want in actual.split()
        if self.op == "|=":
            return actual == want or actual.startswith(want + "-")
        if not want:  # CSS: ^= $= *= with an empty value match nothing
            return False
        if self.op == "^=":
            return actual.startswith(want)
        if self.op == "$=":
            return actual.endswith(want)
        return want in actual  # *=


@frozen(kw_only=True)
class Pseudo:
    name: str
    a: int = 0
    b: int = 0
    negated: tuple[Compound, ...] = ()

    def matches(self, element: Element) -> bool:
        if self.name == "not":
            return not any(c.matches(element) for c in self.negated)
        siblings = element.parent.children if element.parent is not None else [element]
        if self.name.endswith("of-type"):
            siblings = [s for s in siblings if s.tag == element.tag]
        position = siblings.index(element) + 1
        count = len(siblings)
        if self.name in ("nth-last-child", "nth-last-of-type"):
            position = count - position + 1
        if self.name in ("first-child", "first-of-type"):
            return position == 1
        if self.name in ("last-child", "last-of-type"):
            return position == count
        if self.name == "only-child":
            return count == 1
        return _nth(self.a, self.b, position)


def _nth(a: int, b: int, position: int) -> bool:
    """Whether `position` is `a*n + b` for some n >= 0."""
    if a == 0:
        return position == b
    n, rest = divmod(position - b, a)
    return rest == 0 and n >= 0


@frozen(kw_only=True)
class Compound:
    """A sequence of simple selectors with no combinator: `button.btn[type=submit]:nth-child(2)`."""

    tag: str | None = None  # None is the universal selector
    ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    attributes: tuple[AttributeTest, ...] = ()
    pseudos: tuple[Pseudo, ...] = ()

    def matches(self, element: Element) -> bool:
        if element.tag == DOCUMENT:
            return False
        if self.tag is not None and element.tag != self.tag:
            return False
        if any(element.id != i for i in self.ids):
            return False
        if self.classes and not set(self.classes) <= set(element.classes):
            return False
        return all(t.matches(element) for t in self.attributes) and all(p.matches(element) for p in self.pseudos)


@frozen(kw_only=True)
class Complex:
    """Compounds joined by combinators. `parts[i]` is (the combinator before it, the compound);
    the first combinator is empty."""

    parts: tuple[tuple[str, Compound], ...]

    @property
    def subject(self) -> Compound:
        """The compound the matched element itself must satisfy (the rightmost)."""
        return self.parts[-1][1]

    def matches(self, element: Element) -> bool:
        return _match_from(element, self.parts, len(self.parts) - 1)


def _match_from(element: Element, parts: tuple[tuple[str, Compound], ...], i: int) -> bool:
    combinator, compound = parts[i]
    if not compound.matches(element):
        return False
    if i == 0:
        return True
    if combinator == ">":
        parent = element.parent_element
        return parent is not None and _match_from(parent, parts, i - 1)
    if combinator == " ":
        return any(_match_from(a, parts, i - 1) for a in element.ancestors())
    siblings = element.parent.children if element.parent is not None else [element]
    before = siblings[: siblings.index(element)]
    if combinator == "+":
        return bool(before) and _match_from(before[-1], parts, i - 1)
    return any(_match_from(s, parts, i - 1) for s in before)  # "~"


@frozen(kw_only=True)
class SelectorList:
    """A comma list of complex selectors; an element matches if any of them does."""

    selectors: tuple[Complex, ...]

    def matches(self, element: Element) -> bool:
        return any(s.matches(element) for s in self.selectors)


_HEX_ESCAPE = re.compile(r"[0-9a-fA-F]{1,6}[ \t\n\r\f]?")
_NTH = re.compile(r"^(?:(?P<a>[+-]?\d*)n\s*(?:(?P<sign>[+-])\s*(?P<b>\d+))?|(?P<only>[+-]?\d+))$")
_PSEUDO_PLAIN = frozenset({"first-child", "last-child", "only-child", "first-of-type", "last-of-type"})
_PSEUDO_NTH = frozenset({"nth-child", "nth-last-child", "nth-of-type", "nth-last-of-type"})


class _SelectorParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> SelectorError:
        return SelectorError(f"{what} at offset {self.pos} of selector {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> bool:
        start = self.pos
        while self.peek() in (" ", "\t", "\n", "\r", "\f") and self.peek():
            self.pos += 1
        return self.pos > start

    def selector_list(self, *, stop: str = "") -> SelectorList:
        selectors = [self.complex(stop=stop)]
        while self.peek() == ",":
            self.pos += 1
            selectors.append(self.complex(stop=stop))
        return SelectorList(selectors=tuple(selectors))

    def complex(self, *, stop: str) -> Complex:
        self.skip_ws()
        parts = [("", self.compound())]
        while True:
            had_ws = self.skip_ws()
            ch = self.peek()
            if ch in ("", ",") or (stop and ch == stop):
                break
            if ch in (">", "+", "~"):
                self.pos += 1
                self.skip_ws()
                parts.append((ch, self.compound()))
            elif had_ws:
                parts.append((" ", self.compound()))
            else:
                raise self.error(f"unexpected {ch!r}")
        return Complex(parts=tuple(parts))

    def compound(self) -> Compound:
        tag: str | None = None
        ids: list[str] = []
        classes: list[str] = []
        attributes: list[AttributeTest] = []
        pseudos: list[Pseudo] = []
        start = self.pos
        if self.peek() == "*":
            self.pos += 1
        elif self._ident_start():
            tag = self.ident().lower()
        while True:
            ch = self.peek()
            if ch == "#":
                self.pos += 1
                ids.append(self.ident())
            elif ch == ".":
                self.pos += 1
                classes.append(self.ident())
            elif ch == "[":
                attributes.append(self.attribute())
            elif ch == ":":
                pseudos.append(self.pseudo())
            else:
                break
        if self.pos == start:
            raise self.error("expected a selector")
        return Compound(
            tag=tag, ids=tuple(ids), classes=tuple(classes), attributes=tuple(attributes), pseudos=tuple(pseudos)
        )

    def _ident_start(self) -> bool:
        ch = self.peek()
        return bool(ch) and (ch.isalnum() or ch in "-_\\" or ord(ch) >= 0x80)

    def ident(self) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\":
                out.append(self._escape())
            elif ch.isalnum() or ch in "-_" or ord(ch) >= 0x80:
                out.append(ch)
                self.pos += 1
            else:
                break
        if not out:
            raise self.error("expected a name")
        return "".join(out)

    def _escape(self) -> str:
        self.pos += 1  # the backslash
        match = _HEX_ESCAPE.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            code = int(match.group().strip(), 16)
            return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
        if self.pos >= len(self.text):
            raise self.error("dangling backslash")
        self.pos += 1
        return self.text[self.pos - 1]

    def string(self) -> str:
        quote = self.peek()
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                out.append(self._escape())
            else:
                out.append(ch)
                self.pos += 1
        raise self.error("unterminated string")

    def attribute(self) -> AttributeTest:
        self.pos += 1  # [
        self.skip_ws()
        name = self.ident().lower()
        self.skip_ws()
        if self.peek() == "]":
            self.pos += 1
            return AttributeTest(name=name)
        op = self.text[self.pos : self.pos + 2]
        if op[:1] == "=":
            op = "="
        elif op not in ("~=", "|=", "^=", "$=", "*="):
            raise self.error("expected an attribute operator")
        self.pos += len(op)
        self.skip_ws()
        value = self.string() if self.peek() in ("'", '"') else self.ident()
        self.skip_ws()
        ignore_case = False
        if self.peek() in ("i", "I", "s", "S"):
            ignore_case = self.peek() in ("i", "I")
            self.pos += 1
            self.skip_ws()
        if self.peek() != "]":
            raise self.error("expected ']'")
        self.pos += 1
        return AttributeTest(name=name, op=op, value=value, ignore_case=ignore_case)

    def pseudo(self) -> Pseudo:
        self.pos += 1  # :
        if self.peek() == ":":
            raise self.error("pseudo-elements never match an element")
        name = self.ident().lower()
        if name in _PSEUDO_PLAIN:
            return Pseudo(name=name)
        if self.peek() != "(":
            raise self.error(f"unsupported pseudo-class :{name}")
        self.pos += 1
        if name == "not":
            inner = self.selector_list(stop=")")
            if self.peek() != ")":
                raise self.error("expected ')'")
            self.pos += 1
            if any(len(c.parts) != 1 for c in inner.selectors):
                raise self.error(":not() takes compound selectors only")
            return Pseudo(name=name, negated=tuple(c.subject for c in inner.selectors))
        if name not in _PSEUDO_NTH:
            raise self.error(f"unsupported pseudo-class :{name}()")
        end = self.text.find(")", self.pos)
        if end < 0:
            raise self.error("expected ')'")
        a, b = _parse_nth(self.text[self.pos : end].strip().lower(), self)
        self.pos = end + 1
        return Pseudo(name=name, a=a, b=b)


def _parse_nth(arg: str, parser: _SelectorParser) -> tuple[int, int]:
    if arg == "odd":
        return 2, 1
    if arg == "even":
        return 2, 0
    match = _NTH.match(arg)
    if not match:
        raise parser.error(f"bad :nth argument {arg!r}")
    if match.group("only") is not None:
        return 0, int(match.group("only"))
    raw_a = match.group("a")
    a = {"": 1, "+": 1, "-": -1}.get(raw_a, 0) if raw_a in ("", "+", "-") else int(raw_a)
    b = int(match.group("b") or 0) * (-1 if match.group("sign") == "-" else 1)
    return a, b


def parse_selector(selector: str) -> SelectorList:
    """Parse a CSS selector of the supported subset; raises SelectorError for anything else."""
    parser = _SelectorParser(selector)
    if not selector.strip():
        raise parser.error("empty selector")
    parsed = parser.selector_list()
    if parser.pos != len(selector):
        raise parser.error("unexpected text")
    return parsed


# --- generating selectors ---------------------------------------------------------------------------

# Names that look machine-made (ember123, css-1x2y3z, React's :r1:): they change on every build.
_GENERATED_PREFIX = re.compile(r"^(?:css|sc|jsx|emotion|styled|svelte|ember|ng|mui)-", re.IGNORECASE)


def looks_generated(name: str) -> bool:
    """Whether an id or class looks generated by a framework build, and so is no anchor for a selector."""
    if not name or ":" in name or re.search(r"\d{4,}", name) or _GENERATED_PREFIX.match(name):
        return True
    # A segment mixing letters and several digits ("a8f3c9", "1x2y3z") is a hash, not a word.
    return any(
        len(seg) >= 5 and sum(c.isdigit() for c in seg) >= 2 and any(c.isalpha() for c in seg)
        for seg in re.split(r"[-_]", name)
    )


def css_ident(name: str) -> str:
    """`name` escaped as a CSS identifier (CSSOM's serialize-an-identifier, simplified)."""
    out: list[str] = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalnum() or ch in "-_"):
            leading_digit = ch.isdigit() and (i == 0 or (i == 1 and name[0] == "-"))
            out.append(f"\\{ord(ch):x} " if leading_digit else ch)
        elif not ch.isascii() and ch.isprintable():
            out.append(ch)
        elif ch.isprintable():
            out.append("\\" + ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    if name == "-":
        return "\\-"
    return "".join(out)


def css_string(value: str) -> str:
    """`value` as a double-quoted CSS string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ")
    return f'"{escaped}"'


def is_unique(document: Document, selector: str, element: Element) -> bool:
    """Whether `selector` matches `element` and nothing else in `document`."""
    try:
        found = document.select(selector)
    except SelectorError:
        return False
    return found == [element]


def _stable_classes(element: Element) -> list[str]:
    return [c for c in element.classes if not looks_generated(c)][:4]


def _anchor_selectors(element: Element) -> Iterator[str]:
    """Selectors that name an element by what it is called rather than where it is."""
    if element.id and not looks_generated(element.id):
        yield f"#{css_ident(element.id)}"
    for attr in TEST_ATTRIBUTES:
        value = element.attrs.get(attr)
        if value:
            yield f"[{attr}={css_string(value)}]"
            yield f"{element.tag}[{attr}={css_string(value)}]"
    name = element.attrs.get("name")
    if name:
        yield f"{element.tag}[name={css_string(name)}]"


def _local_selectors(element: Element) -> Iterator[str]:
    """Selectors from the element's own tag, classes and labelling attributes, shortest first."""
    tag = element.tag
    classes = [f".{css_ident(c)}" for c in _stable_classes(element)]
    for c in classes:
        yield tag + c
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            yield tag + classes[i] + classes[j]
    if len(classes) > 2:
        yield tag + "".join(classes)
    label = element.attrs.get("aria-label")
    if label and len(label) <= 80:
        yield f"{tag}[aria-label={css_string(label)}]"
    href = element.attrs.get("href")
    if tag == "a" and href and len(href) <= 80 and "?" not in href:
        yield f"a[href={css_string(href)}]"
    yield tag


def _child_step(element: Element) -> str:
    siblings = element.parent.children if element.parent is not None else [element]
    if sum(s.tag == element.tag for s in siblings) == 1:
        return element.tag
    return f"{element.tag}:nth-child({element.index})"


def css_path(element: Element, document: Document) -> str | None:
    """A selector that matches `element` and nothing else in `document`, as robust as available:
    its own id, a test attribute or name; then tag and classes; then the same under the nearest
    ancestor that has such an anchor; then a child path with `:nth-child` from that ancestor or the
    top. None only when even the full path is ambiguous (it never is for a tree `parse_html` built)."""
    for selector in _anchor_selectors(element):
        if is_unique(document, selector, element):
            return selector
    local = list(_local_selectors(element))
    for selector in local[:-1]:  # a bare tag alone is not a robust locator
        if is_unique(document, selector, element):
            return selector
    anchor, anchor_selector = None, ""
    for ancestor in element.ancestors():
        anchor_selector = next((s for s in _anchor_selectors(ancestor) if is_unique(document, s, ancestor)), "")
        if anchor_selector:
            anchor = ancestor
            break
    if anchor is not None:
        for selector in local:
            candidate = f"{anchor_selector} {selector}"
            if is_unique(document, candidate, element):
                return candidate
    steps: list[str] = []
    node: Element | None = element
    while node is not None and node is not anchor:
        steps.append(_child_step(node))
        node = node.parent_element
    # Without an anchor the path starts at the top element (`html > body > ...`).
    prefix = [anchor_selector] if anchor is not None else []
    candidate = " > ".join([*prefix, *reversed(steps)])
    return candidate if is_unique(document, candidate, element) else None


# --- visibility -------------------------------------------------------------------------------------


def _inline_style(element: Element) -> dict[str, str]:
    declarations: dict[str, str] = {}
    for item in element.attrs.get("style", "").split(";"):
        prop, sep, value = item.partition(":")
        if sep:
            declarations[prop.strip().lower()] = value.replace("!important", "").strip().lower()
    return declarations


def _hides_itself(node: Element) -> bool:
    if node.tag in HIDDEN_TAGS or "hidden" in node.attrs:
        return True
    if node.attrs.get("aria-hidden", "").strip().lower() == "true":
        return True
    if HIDING_CLASSES.intersection(node.classes):
        return True
    if "style" in node.attrs:
        style = _inline_style(node)
        if style.get("display") == "none" or style.get("visibility") in ("hidden", "collapse"):
            return True
    return node.tag == "dialog" and "open" not in node.attrs


def _hides_child(parent: Element, child: Element) -> bool:
    # A closed <details> shows its <summary> only.
    return parent.tag == "details" and "open" not in parent.attrs and child.tag != "summary"


def is_visible(element: Element) -> bool:
    """Whether a user could see the element, judged from the markup alone: no `hidden` attribute,
    `type=hidden`, inline `display:none`/`visibility:hidden`, hiding utility class or
    `aria-hidden=true` on it or an ancestor, not inside <template>/<script>/<style>/<head>, not inside
    a closed <details> (except its <summary>) or <dialog>. Stylesheets are not evaluated."""
    if element.tag == "input" and element.attrs.get("type", "").lower() == "hidden":
        return False
    child: Element | None = None
    node: Element | None = element
    while node is not None:
        if _hides_itself(node) or (child is not None and _hides_child(node, child)):
            return False
        child, node = node, node.parent_element
    return True


def visible_elements(document: Document) -> list[Element]:
    """The elements `is_visible` accepts, in document order, in one pass over the tree (a page-wide
    scan would otherwise walk every element's ancestors again)."""
    found: list[Element] = []
    stack = [e for e in reversed(document.root.children) if not _hides_itself(e)]
    while stack:
        node = stack.pop()
        if not (node.tag == "input" and node.attrs.get("type", "").lower() == "hidden"):
            found.append(node)
        stack.extend(c for c in reversed(node.children) if not _hides_itself(c) and not _hides_child(node, c))
    return found


__all__ = [
    "HIDDEN_TAGS",
    "TEST_ATTRIBUTES",
    "AttributeTest",
    "Complex",
    "Compound",
    "Document",
    "Element",
    "Pseudo",
    "SelectorList",
    "css_ident",
    "css_path",
    "css_string",
    "is_unique",
    "is_visible",
    "looks_generated",
    "parse_html",
    "parse_selector",
    "visible_elements",
]
