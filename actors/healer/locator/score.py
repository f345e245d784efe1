"""How much a candidate element on the new page resembles the element a selector used to match.

Two scorers share one result type:
- `score(last_good, candidate)` compares a recorded `ElementSnapshot` feature by feature, in the manner
  of Healenium: tag, id, classes (Jaccard), text (sequence similarity), other attributes (name and
  value overlap) and the ancestor path (a weighted longest common subsequence).
- `score_description(description, candidate)` is the fallback when nothing was recorded: the words of
  the selector itself (`#buy-button` -> "buy", "button") against the words of the candidate.

A feature absent on both sides (neither element has an id) says nothing either way, so it is left out
and the other weights are rescaled; the breakdown shows it as `n/a`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from attrs import frozen

from actors.healer.locator.dom import parse_selector
from actors.healer.locator.errors import SelectorError
from actors.healer.locator.snapshot import ElementSnapshot, PathStep

#: Weights of the snapshot features; they sum to 1.
WEIGHTS: dict[str, float] = {
    "tag": 0.15,
    "id": 0.20,
    "classes": 0.15,
    "text": 0.20,
    "attributes": 0.15,
    "path": 0.15,
}
#: Weights of the fallback features, used when no last-good element was recorded.
# Names (id, classes, attribute values) weigh most: a selector is made of names. Text weighs little,
# because a container's text includes every word of its descendants.
DESCRIPTION_WEIGHTS: dict[str, float] = {"tag": 0.25, "names": 0.55, "text": 0.10, "context": 0.10}
# Redesigns often swap these for one another (`<a class="btn">` for `<button>`): half credit.
_CLICKABLE = frozenset({"a", "button", "input"})
# Words of a candidate's text taken into account; page text beyond that is noise for a locator.
_MAX_TEXT_WORDS = 12


@frozen(kw_only=True)
class Part:
    """One feature's similarity in [0, 1] and its weight. Not applicable parts carry no weight."""

    feature: str
    similarity: float
    weight: float
    applicable: bool = True

    def describe(self) -> str:
        if not self.applicable:
            return f"{self.feature} n/a"
        return f"{self.feature} {self.similarity:.2f}*{self.weight:.2f}"


@frozen(kw_only=True)
class Score:
    """The weighted similarity and the parts it is made of, so an explanation can say why."""

    total: float
    parts: tuple[Part, ...]

    def explain(self) -> str:
        """`tag 1.00*0.15, id 0.00*0.20, classes n/a, ...` (similarity * weight per feature)."""
        return ", ".join(p.describe() for p in self.parts)

    def part(self, feature: str) -> Part:
        return next(p for p in self.parts if p.feature == feature)


def _combine(parts: Sequence[Part]) -> Score:
    weight = sum(p.weight for p in parts if p.applicable)
    total = sum(p.similarity * p.weight for p in parts if p.applicable) / weight if weight else 0.0
    return Score(total=round(min(1.0, max(0.0, total)), 6), parts=tuple(parts))


def words(text: str) -> list[str]:
    """Lower-case words of an identifier or a text: split on punctuation and camelCase."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [w for w in re.split(r"[^0-9A-Za-z]+|(?<=[A-Za-z])(?=[0-9])", spaced.lower()) if w]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    left, right = set(a), set(b)
    union = left | right
    return len(left & right) / len(union) if union else 1.0


def text_similarity(a: str, b: str) -> float:
    """Similarity of two short texts in [0, 1], ignoring case and spacing. Below 0.2 the value is a
    cheap upper bound rather than the exact ratio: that close to zero the difference cannot change a
    ranking, and it spares the full comparison for most elements of a large page."""
    left, right = " ".join(a.lower().split()), " ".join(b.lower().split())
    if left == right:
        return 1.0
    if not left or not right:
        return 0.0
    by_length = 2 * min(len(left), len(right)) / (len(left) + len(right))  # difflib's real_quick_ratio
    if by_length < 0.2:
        return by_length
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    by_letters = matcher.quick_ratio()
    return by_letters if by_letters < 0.2 else matcher.ratio()


def _tag_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    return 0.5 if a in _CLICKABLE and b in _CLICKABLE else 0.0


def _id_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    # A renamed id usually keeps some words ("username" -> "login-username"): partial credit, below
    # an exact match.
    return 0.9 * jaccard(words(a), words(b))


def _attribute_similarity(last_good: dict[str, str], candidate: dict[str, str]) -> float:
    """Name and value overlap, judged mostly by what the last-good element had: redesigns add
    attributes (`data-testid`, `aria-*`) far more often than they keep an element and drop them."""

    def kept(name: str) -> float:
        if name not in candidate:
            return 0.0
        if last_good[name] == candidate[name]:
            return 1.0
        return 0.5 + 0.5 * jaccard(words(last_good[name]), words(candidate[name]))

    names = set(last_good) | set(candidate)
    if not names:
        return 1.0
    overlap = sum(kept(n) for n in last_good)
    retained = overlap / len(last_good) if last_good else 0.0
    return 0.75 * retained + 0.25 * overlap / len(names)


def path_similarity(a: Sequence[PathStep], b: Sequence[PathStep]) -> float:
    """Weighted longest common subsequence of two ancestor paths over the longer length.

    Same tag at the same position counts 1, same tag elsewhere 0.8: position is what tells apart two
    identical cards in a list, but a redesign often inserts a wrapper or a sibling."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    b_steps = [(s.tag, s.index) for s in b]
    previous = [0.0] * (len(b) + 1)
    for step in a:
        tag, index = step.tag, step.index
        current = [0.0]
        for j, (tag_b, index_b) in enumerate(b_steps, start=1):
            best = previous[j] if previous[j] > current[j - 1] else current[j - 1]
            if tag == tag_b:
                diagonal = previous[j - 1] + (1.0 if index == index_b else 0.8)
                best = diagonal if diagonal > best else best
            current.append(best)
        previous = current
    return previous[-1] / max(len(a), len(b))


def score(last_good: ElementSnapshot, candidate: ElementSnapshot) -> Score:
    """How much `candidate` resembles the element recorded on the last passing run."""
    parts = [
        Part(feature="tag", similarity=_tag_similarity(last_good.tag, candidate.tag), weight=WEIGHTS["tag"]),
        Part(
            feature="id",
            similarity=_id_similarity(last_good.id, candidate.id),
            weight=WEIGHTS["id"],
            applicable=bool(last_good.id or candidate.id),
        ),
        Part(
            feature="classes",
            similarity=jaccard(last_good.classes, candidate.classes),
            weight=WEIGHTS["classes"],
            applicable=bool(last_good.classes or candidate.classes),
        ),
        Part(
            feature="text",
            similarity=text_similarity(last_good.text, candidate.text),
            weight=WEIGHTS["text"],
            applicable=bool(last_good.text or candidate.text),
        ),
        Part(
            feature="attributes",
            similarity=_attribute_similarity(last_good.attributes, candidate.attributes),
            weight=WEIGHTS["attributes"],
            applicable=bool(last_good.attributes or candidate.attributes),
        ),
        Part(
            feature="path",
            similarity=path_similarity(last_good.path, candidate.path),
            weight=WEIGHTS["path"],
            applicable=bool(last_good.path or candidate.path),
        ),
    ]
    return _combine(parts)


@frozen(kw_only=True)
class SelectorDescription:
    """What a selector says about the element it wants, when no recorded element is available."""

    tag: str | None
    #: Words of the subject compound's ids, classes and attribute values (`#buy-button` -> buy, button).
    words: tuple[str, ...]
    #: Words of the compounds to its left (`.cart .total` -> cart), which describe its ancestors.
    context: tuple[str, ...] = ()


def describe_selector(selector: str) -> SelectorDescription | None:
    """The description derivable from `selector` alone; None when it says nothing usable (a bare tag,
    or syntax outside the supported subset). A comma list is described by its first selector."""
    try:
        first = parse_selector(selector).selectors[0]
    except SelectorError:
        return None

    def compound_words(index: int) -> list[str]:
        compound = first.parts[index][1]
        found = [w for name in (*compound.ids, *compound.classes) for w in words(name)]
        found += [w for test in compound.attributes for w in words(test.value)]
        return found

    subject = tuple(dict.fromkeys(compound_words(len(first.parts) - 1)))
    context = tuple(dict.fromkeys(w for i in range(len(first.parts) - 1) for w in compound_words(i)))
    if not subject:
        return None
    return SelectorDescription(tag=first.subject.tag, words=subject, context=context)


def _candidate_names(candidate: ElementSnapshot) -> set[str]:
    found = {candidate.tag, *words(candidate.id)}
    found.update(w for c in candidate.classes for w in words(c))
    found.update(w for v in candidate.attributes.values() for w in words(v))
    return found


def _word_matches(word: str, pool: set[str]) -> bool:
    # "btn" is not "button", but "email" is in "emails" and "nav" starts "navigation".
    return word in pool or any(len(word) >= 3 and len(w) >= 3 and (w.startswith(word) or word.startswith(w))
                               for w in pool)


def _coverage(wanted: Sequence[str], pool: set[str]) -> float:
    return sum(_word_matches(w, pool) for w in wanted) / len(wanted) if wanted else 1.0


def score_description(description: SelectorDescription, candidate: ElementSnapshot) -> Score:
    """How well `candidate` fits the words of the old selector (the fallback without a recording)."""
    ancestors: set[str] = set()
    for step in candidate.path[:-1]:
        ancestors.update(words(step.id))
        ancestors.update(w for c in step.classes for w in words(c))
    parts = [
        Part(
            feature="tag",
            similarity=_tag_similarity(description.tag or "", candidate.tag),
            weight=DESCRIPTION_WEIGHTS["tag"],
            applicable=description.tag is not None,
        ),
        Part(
            feature="names",
            similarity=_coverage(description.words, _candidate_names(candidate)),
            weight=DESCRIPTION_WEIGHTS["names"],
        ),
        Part(
            feature="text",
            similarity=_coverage(description.words, set(words(candidate.text)[:_MAX_TEXT_WORDS])),
            weight=DESCRIPTION_WEIGHTS["text"],
        ),
        Part(
            feature="context",
            similarity=_coverage(description.context, ancestors),
            weight=DESCRIPTION_WEIGHTS["context"],
            applicable=bool(description.context),
        ),
    ]
    return _combine(parts)


__all__ = [
    "DESCRIPTION_WEIGHTS",
    "WEIGHTS",
    "Part",
    "Score",
    "SelectorDescription",
    "describe_selector",
    "jaccard",
    "path_similarity",
    "score",
    "score_description",
    "text_similarity",
    "words",
]
