"""How alike two identifiers are, shared by the strategies that guess what a name became.

The score mixes the character-level `difflib` ratio (catches typos and small edits: `get_usr` vs
`get_user`) with the overlap of the words inside the names (catches reordered or added words:
`total_price` vs `price_total`, `fetchUser` vs `fetch_user_by_id`). Both parts are in [0, 1].
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# A word is a run of capitals followed by lower case ("HTTPServer" -> HTTP, Server), or digits.
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

#: Below this a candidate is noise, not a rename.
DEFAULT_THRESHOLD = 0.55


def words(name: str) -> tuple[str, ...]:
    """The lower-case words of a snake_case, camelCase or PascalCase identifier."""
    return tuple(w.lower() for w in _WORDS.findall(name))


def similarity(a: str, b: str) -> float:
    """A score in [0, 1]: 1 for equal names (ignoring case and underscores), 0 for unrelated ones."""
    if a == b:
        return 1.0
    flat_a, flat_b = a.replace("_", "").lower(), b.replace("_", "").lower()
    if not flat_a or not flat_b:
        return 0.0
    if flat_a == flat_b:
        return 0.95  # only case or underscores differ: almost surely the same name
    ratio = difflib.SequenceMatcher(None, flat_a, flat_b).ratio()
    wa, wb = set(words(a)), set(words(b))
    overlap = len(wa & wb) / len(wa | wb) if wa and wb else 0.0
    score = 0.65 * ratio + 0.35 * overlap
    if _abbreviates(flat_a, flat_b) or _abbreviates(flat_b, flat_a):
        # "qty" for "quantity", "cfg" for "config": a short spelling of the same word
        score = max(score, 0.6)
    return round(score, 4)


def _abbreviates(short: str, long: str) -> bool:
    if len(short) < 2 or len(short) >= len(long) or short[0] != long[0]:
        return False
    rest = iter(long)
    return all(ch in rest for ch in short)  # `in` on an iterator consumes it: a subsequence test


def ranked(
    target: str, candidates: Iterable[str], *, threshold: float = DEFAULT_THRESHOLD, limit: int = 3
) -> list[tuple[str, float]]:
    """The `limit` candidates most similar to `target` scoring at least `threshold`, best first.

    `target` itself is never a candidate (it is the name that no longer exists). Ties are broken by
    name so the order is stable.
    """
    scored = {c: similarity(target, c) for c in set(candidates) if c != target}
    best = sorted(((c, s) for c, s in scored.items() if s >= threshold), key=lambda cs: (-cs[1], cs[0]))
    return best[:limit]


__all__ = ["DEFAULT_THRESHOLD", "ranked", "similarity", "words"]
