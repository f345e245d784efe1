"""import_path: a moved symbol or module gets its test import rewritten."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.import_path import ImportPath
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, commit_all, git, make_failure, make_workspace

TEST = "from shop.cart import Cart, total\n\n\ndef test_total():\n    assert total(Cart()) == 0\n"


def _cannot_import(name: str, module: str) -> str:
    return f"ImportError: cannot import name '{name}' from '{module}' (/ci/src/{module.replace('.', '/')}.py)"


def test_a_moved_symbol_is_imported_from_its_new_module(tmp_path: Path) -> None:
    # Given Cart moved from shop.cart to shop.models
    ws = make_workspace(tmp_path, {
        "src/shop/__init__.py": "",
        "src/shop/cart.py": "def total(cart):\n    return 0\n",
        "src/shop/models.py": "class Cart:\n    pass\n",
        "tests/test_cart.py": TEST,
    })
    failure = make_failure(
        FailureClass.IMPORT_ERROR, "tests/test_cart.py", exception_type="ImportError",
        message=_cannot_import("Cart", "shop.cart"), file="tests/test_cart.py", line=1,
    )
    strategy = ImportPath()
    # When the strategy proposes
    assert strategy.applies(failure)
    proposals = strategy.propose(failure, ws)
    # Then the import is split: Cart from shop.models, total stays
    assert len(proposals) == 1
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": TEST.replace(
        "from shop.cart import Cart, total\n", "from shop.cart import total\nfrom shop.models import Cart\n"
    )}
    assert proposals[0].strategy == "import_path" and 0 < proposals[0].confidence < 1


def test_a_definition_ranks_above_a_reexport(tmp_path: Path) -> None:
    # Given Cart defined in shop.models and re-exported by the shop package
    ws = make_workspace(tmp_path, {
        "shop/__init__.py": "from shop.models import Cart\n",
        "shop/cart.py": "def total(cart):\n    return 0\n",
        "shop/models.py": "class Cart:\n    pass\n",
        "tests/test_cart.py": "from shop.cart import Cart\n",
    })
    failure = make_failure(FailureClass.IMPORT_ERROR, "tests/test_cart.py", message=_cannot_import("Cart", "shop.cart"))
    # When the strategy proposes
    proposals = ImportPath().propose(failure, ws)
    # Then both are offered, the defining module first
    texts = [apply(ws, p)["tests/test_cart.py"] for p in proposals]
    assert texts == ["from shop.models import Cart\n", "from shop import Cart\n"]
    assert proposals[0].confidence > proposals[1].confidence


def test_a_missing_module_follows_the_file_move_in_git_history(tmp_path: Path) -> None:
    # Given shop/cart.py was moved to shop/basket.py in the last commit
    ws_files = {"shop/__init__.py": "", "shop/cart.py": "def total(c):\n    return 0\n", "tests/test_cart.py": ""}
    make_workspace(tmp_path, ws_files)
    git(tmp_path, "init", "-q")
    commit_all(tmp_path, "first")
    git(tmp_path, "mv", "shop/cart.py", "shop/basket.py")
    commit_all(tmp_path, "move")
    test = (
        "import shop.cart\nfrom shop.cart import total\n\n\n"
        "def test_t():\n    assert shop.cart.total(1) == total(1)\n"
    )
    ws = make_workspace(tmp_path, {"tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.IMPORT_ERROR, "tests/test_cart.py", exception_type="ModuleNotFoundError",
        message="ModuleNotFoundError: No module named 'shop.cart'",
    )
    # When the strategy proposes
    proposals = ImportPath().propose(failure, ws)
    # Then the best candidate points every import and dotted use at shop.basket, from history
    assert proposals and proposals[0].confidence == 0.9
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": test.replace("shop.cart", "shop.basket")}


def test_a_missing_module_without_history_uses_a_module_that_provides_the_names(tmp_path: Path) -> None:
    # Given module shop.pricing disappeared and shop.billing.pricing defines what the test imports
    ws = make_workspace(tmp_path, {
        "shop/__init__.py": "",
        "shop/billing/__init__.py": "",
        "shop/billing/pricing.py": "def price(x):\n    return x\n",
        "tests/test_price.py": "from shop.pricing import price\n",
    })
    failure = make_failure(FailureClass.IMPORT_ERROR, "tests/test_price.py", message="No module named 'shop.pricing'")
    # When the strategy proposes
    proposals = ImportPath().propose(failure, ws)
    # Then the one rewrite (found two ways) is proposed once
    assert [apply(ws, p)["tests/test_price.py"] for p in proposals] == ["from shop.billing.pricing import price\n"]


def test_nothing_is_proposed_when_no_module_has_the_name(tmp_path: Path) -> None:
    # Given the symbol no longer exists anywhere
    ws = make_workspace(tmp_path, {"shop/cart.py": "X = 1\n", "tests/test_cart.py": "from shop.cart import Cart\n"})
    failure = make_failure(FailureClass.IMPORT_ERROR, "tests/test_cart.py", message=_cannot_import("Cart", "shop.cart"))
    # Then nothing is proposed
    assert ImportPath().propose(failure, ws) == []


def test_a_failing_import_in_a_source_file_is_never_edited(tmp_path: Path) -> None:
    # Given the failing import sits in the code under test, not in a test
    ws = make_workspace(tmp_path, {
        "shop/models.py": "class Cart:\n    pass\n",
        "shop/api.py": "from shop.cart import Cart\n",
    })
    failure = make_failure(
        FailureClass.IMPORT_ERROR, "shop/api.py", message=_cannot_import("Cart", "shop.cart"),
        file="shop/api.py", line=1,
    )
    # Then nothing is proposed
    assert ImportPath().propose(failure, ws) == []


def test_other_categories_do_not_apply() -> None:
    failure = make_failure(FailureClass.TIMEOUT, "tests/test_x.py::test_y", message=_cannot_import("A", "b"))
    assert not ImportPath().applies(failure)


def test_names_that_moved_together_are_moved_together(tmp_path: Path) -> None:
    # Given freeze and FrozenDict moved from shop.utils to shop.frozen; LRUCache stayed. Python names
    # only the first missing name.
    source = "from shop.utils import LRUCache, freeze, FrozenDict\n\n\ndef test_freeze():\n    assert freeze\n"
    ws = make_workspace(tmp_path, {
        "shop/__init__.py": "",
        "shop/utils.py": "class LRUCache:\n    pass\n",
        "shop/frozen.py": "def freeze(x):\n    return x\n\n\nclass FrozenDict(dict):\n    pass\n",
        "tests/test_utils.py": source,
    })
    failure = make_failure(FailureClass.RENAMED_SYMBOL, "tests/test_utils.py",
                           message=_cannot_import("freeze", "shop.utils"))
    # When the strategy proposes
    [proposal] = ImportPath().propose(failure, ws)
    # Then both moved names come from shop.frozen, and LRUCache stays
    text = apply(ws, proposal)["tests/test_utils.py"]
    imports = sorted(line for line in text.splitlines() if line.startswith("from "))
    assert len(imports) == 2 and imports[1] == "from shop.utils import LRUCache"
    assert set(imports[0].removeprefix("from shop.frozen import ").split(", ")) == {"freeze", "FrozenDict"}


def test_a_module_attribute_that_moved_to_a_submodule_is_reached_there(tmp_path: Path) -> None:
    # Given ordinal moved from the inflection package into inflection.numbers, and a test that calls
    # inflection.ordinal through `import inflection`
    source = ("import inflection\n\n\ndef test_ordinal():\n    # inflection.ordinal in a comment stays\n"
              "    assert inflection.ordinal(1) == 'st'\n    assert inflection.camelize('a') == 'A'\n")
    ws = make_workspace(tmp_path, {
        "inflection/__init__.py": "def camelize(s):\n    return s.upper()\n",
        "inflection/numbers.py": "def ordinal(n):\n    return 'st'\n",
        "test_inflection.py": source,
    })
    failure = make_failure(FailureClass.RENAMED_SYMBOL, "test_inflection.py::test_ordinal",
                           exception_type="AttributeError", message="module 'inflection' has no attribute 'ordinal'")
    # When the strategy proposes
    strategy = ImportPath()
    assert strategy.applies(failure)
    [proposal] = strategy.propose(failure, ws)
    # Then the call goes through the submodule, which is imported; nothing else changes
    assert apply(ws, proposal)["test_inflection.py"] == source.replace(
        "import inflection\n", "import inflection\nimport inflection.numbers\n").replace(
        "assert inflection.ordinal(1)", "assert inflection.numbers.ordinal(1)")
