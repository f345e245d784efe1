"""renamed_symbol: a vanished name is replaced by its most likely new name."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.renamed_symbol import RenamedSymbol
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, commit_all, git, make_failure, make_workspace

CART = (
    "class Cart:\n"
    "    def __init__(self):\n"
    "        self.line_items = []\n\n"
    "    def grand_total(self):\n"
    "        return 0\n\n"
    "def compute_total(cart):\n    return 0\n\n"
    "def compute_tax(cart):\n    return 0\n"
)


def test_module_attribute_is_renamed_on_that_module_only(tmp_path: Path) -> None:
    # Given shop.cart.compute_totals became compute_total, used through the module
    test = (
        "from shop import cart\n\n\ndef test_total():\n"
        "    assert cart.compute_totals(None) == 0\n    assert report.compute_totals == 1\n"
    )
    ws = make_workspace(tmp_path, {"shop/__init__.py": "", "shop/cart.py": CART, "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py::test_total", exception_type="AttributeError",
        message="AttributeError: module 'shop.cart' has no attribute 'compute_totals'",
        file="tests/test_cart.py", line=5,
    )
    strategy = RenamedSymbol()
    # When the strategy proposes
    assert strategy.applies(failure)
    proposals = strategy.propose(failure, ws)
    # Then the most similar name is first, and only `cart.compute_totals` changes
    assert apply(ws, proposals[0]) == {
        "tests/test_cart.py": test.replace("cart.compute_totals(None)", "cart.compute_total(None)")
    }
    assert len(proposals) <= 3


def test_object_attribute_is_renamed_within_the_failing_test(tmp_path: Path) -> None:
    # Given Cart.items became Cart.line_items; another test uses an unrelated `.items`
    test = (
        "from shop.cart import Cart\n\n\n"
        "def test_items():\n    assert Cart().items == []\n\n\n"
        "def test_dict():\n    assert {}.items\n"
    )
    ws = make_workspace(tmp_path, {"shop/cart.py": CART, "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py::test_items", exception_type="AttributeError",
        message="AttributeError: 'Cart' object has no attribute 'items'", file="tests/test_cart.py", line=5,
    )
    # When the strategy proposes
    proposals = RenamedSymbol().propose(failure, ws)
    # Then only the failing test's `.items` changes
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": test.replace("Cart().items", "Cart().line_items")}


def test_an_imported_name_is_renamed_at_the_import_and_its_uses(tmp_path: Path) -> None:
    # Given `compute_totals` no longer exists in shop.cart
    test = "from shop.cart import compute_totals\n\n\ndef test_total():\n    assert compute_totals(None) == 0\n"
    ws = make_workspace(tmp_path, {"shop/cart.py": CART, "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py", exception_type="ImportError",
        message="ImportError: cannot import name 'compute_totals' from 'shop.cart' (/ci/shop/cart.py)",
    )
    # When the strategy proposes
    proposals = RenamedSymbol().propose(failure, ws)
    # Then several ranked candidates are offered, the closest first
    texts = [apply(ws, p)["tests/test_cart.py"] for p in proposals]
    assert texts[0] == test.replace("compute_totals", "compute_total")
    assert test.replace("compute_totals", "compute_tax") in texts[1:]
    assert [p.confidence for p in proposals] == sorted((p.confidence for p in proposals), reverse=True)


def test_git_history_rename_outranks_similarity(tmp_path: Path) -> None:
    # Given history renamed `total` to `sum_cart` (a dissimilar name) while `subtotal` also exists
    make_workspace(tmp_path, {"shop/cart.py": "def total(c):\n    return 0\n\n\ndef subtotal(c):\n    return 0\n"})
    git(tmp_path, "init", "-q")
    commit_all(tmp_path, "first")
    test = "from shop.cart import total\n\n\ndef test_t():\n    assert total(1) == 0\n"
    ws = make_workspace(tmp_path, {
        "shop/cart.py": "def sum_cart(c):\n    return 0\n\n\ndef subtotal(c):\n    return 0\n",
        "tests/test_cart.py": test,
    })
    commit_all(tmp_path, "rename")
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py",
        message="ImportError: cannot import name 'total' from 'shop.cart' (/ci/shop/cart.py)",
    )
    # When the strategy proposes
    proposals = RenamedSymbol().propose(failure, ws)
    # Then the renamed name comes first with high confidence
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": test.replace("total", "sum_cart")}
    assert proposals[0].confidence == 0.9 and "renamed" in proposals[0].explanation


def test_name_error_uses_pythons_hint(tmp_path: Path) -> None:
    # Given a NameError whose message carries Python's own suggestion
    test = "from shop.cart import *\n\n\ndef test_total():\n    assert calc_totl(None) == 0\n"
    ws = make_workspace(tmp_path, {"shop/cart.py": CART, "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py::test_total", exception_type="NameError",
        message="NameError: name 'calc_totl' is not defined. Did you mean: 'compute_total'?",
    )
    # When the strategy proposes
    proposals = RenamedSymbol().propose(failure, ws)
    # Then the hinted name is the first candidate
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": test.replace("calc_totl", "compute_total")}


def test_nothing_is_proposed_when_no_name_is_similar(tmp_path: Path) -> None:
    # Given no current name resembles the missing one
    test = "from shop import cart\n\n\ndef test_x():\n    cart.frobnicate()\n"
    ws = make_workspace(tmp_path, {"shop/__init__.py": "", "shop/cart.py": CART, "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py::test_x",
        message="AttributeError: module 'shop.cart' has no attribute 'frobnicate'",
    )
    # Then nothing is proposed
    assert RenamedSymbol().propose(failure, ws) == []


def test_source_files_are_never_edited(tmp_path: Path) -> None:
    # Given the failing use is in product code (the failure names a source file)
    ws = make_workspace(tmp_path, {"shop/cart.py": CART, "shop/api.py": "from shop.cart import compute_totals\n"})
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "shop/api.py", file="shop/api.py", line=1,
        message="ImportError: cannot import name 'compute_totals' from 'shop.cart' (/ci/shop/cart.py)",
    )
    # Then nothing is proposed
    assert RenamedSymbol().propose(failure, ws) == []
