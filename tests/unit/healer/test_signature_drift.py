"""signature_drift: a renamed keyword parameter is renamed at the test's call sites."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.signature_drift import SignatureDrift
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, commit_all, git, make_failure, make_workspace

CART = (
    "class Cart:\n"
    "    def __init__(self, owner, *, currency='EUR'):\n        self.owner = owner\n\n"
    "    def add(self, sku, quantity=1, *, note=''):\n        pass\n"
)
TEST = (
    "from shop.cart import Cart\n\n\n"
    "def test_add():\n    cart = Cart('ann')\n    cart.add('sku-1', qty=2)\n    assert cart\n\n\n"
    "def test_other(api):\n    api.add('x', qty=2)\n"
)


def test_an_unexpected_keyword_is_mapped_to_the_closest_parameter(tmp_path: Path) -> None:
    # Given Cart.add's `qty` became `quantity`
    ws = make_workspace(tmp_path, {"shop/cart.py": CART, "tests/test_cart.py": TEST})
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_cart.py::test_add", exception_type="TypeError",
        message="TypeError: Cart.add() got an unexpected keyword argument 'qty'", file="tests/test_cart.py", line=6,
    )
    strategy = SignatureDrift()
    # When the strategy proposes
    assert strategy.applies(failure)
    proposals = strategy.propose(failure, ws)
    # Then only the failing test's call is changed (test_other's `.add` is another object's)
    assert apply(ws, proposals[0]) == {
        "tests/test_cart.py": TEST.replace("cart.add('sku-1', qty=2)", "cart.add('sku-1', quantity=2)")
    }


def test_a_dataclass_constructor_keyword_maps_to_a_field(tmp_path: Path) -> None:
    # Given a dataclass without a written __init__ whose field `unit_price` was `price`
    model = "from dataclasses import dataclass\n\n\n@dataclass\nclass Item:\n    sku: str\n    unit_price: int = 0\n"
    test = "from shop.item import Item\n\n\ndef test_item():\n    assert Item(sku='a', price=3).sku == 'a'\n"
    ws = make_workspace(tmp_path, {"shop/item.py": model, "tests/test_item.py": test})
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_item.py::test_item",
        message="TypeError: Item.__init__() got an unexpected keyword argument 'price'",
    )
    # When the strategy proposes
    proposals = SignatureDrift().propose(failure, ws)
    # Then the constructor call gets the field name
    assert apply(ws, proposals[0]) == {"tests/test_item.py": test.replace("price=3", "unit_price=3")}


def test_git_history_parameter_rename_ranks_first(tmp_path: Path) -> None:
    # Given history renamed `total(items, qty)` to `total(items, count)` (dissimilar names)
    make_workspace(tmp_path, {"shop/cart.py": "def total(items, qty=1):\n    return 0\n"})
    git(tmp_path, "init", "-q")
    commit_all(tmp_path, "first")
    test = "from shop.cart import total\n\n\ndef test_t():\n    assert total([], qty=2) == 0\n"
    ws = make_workspace(tmp_path, {
        "shop/cart.py": "def total(items, count=1):\n    return 0\n", "tests/test_cart.py": test,
    })
    commit_all(tmp_path, "rename parameter")
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_cart.py::test_t",
        message="TypeError: total() got an unexpected keyword argument 'qty'",
    )
    # When the strategy proposes
    proposals = SignatureDrift().propose(failure, ws)
    # Then the history-backed rename is proposed with high confidence
    assert apply(ws, proposals[0]) == {"tests/test_cart.py": test.replace("qty=2", "count=2")}
    assert proposals[0].confidence == 0.9


def test_missing_argument_maps_a_keyword_swallowed_by_kwargs(tmp_path: Path) -> None:
    # Given `ship(order, **options)` now requires `destination`, and the test passes `dest=` into **options
    source = "def ship(order, destination, **options):\n    return 0\n"
    test = "from shop.ship import ship\n\n\ndef test_ship():\n    assert ship('o1', dest='Paris') == 0\n"
    ws = make_workspace(tmp_path, {"shop/ship.py": source, "tests/test_ship.py": test})
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_ship.py::test_ship",
        message="TypeError: ship() missing 1 required positional argument: 'destination'",
    )
    # When the strategy proposes
    proposals = SignatureDrift().propose(failure, ws)
    # Then the swallowed keyword is renamed to the missing parameter
    assert apply(ws, proposals[0]) == {"tests/test_ship.py": test.replace("dest=", "destination=")}


def test_nothing_is_proposed_for_an_unknown_function_or_unrelated_names(tmp_path: Path) -> None:
    # Given a function the index does not know, and one whose parameters are unrelated
    ws = make_workspace(tmp_path, {
        "shop/cart.py": "def total(items, currency='EUR'):\n    return 0\n",
        "tests/test_cart.py": "from shop.cart import total\n\n\ndef test_t():\n    total([], qty=1)\n",
    })
    unknown = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_cart.py::test_t",
        message="TypeError: frobnicate() got an unexpected keyword argument 'qty'",
    )
    unrelated = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_cart.py::test_t",
        message="TypeError: total() got an unexpected keyword argument 'qty'",
    )
    # Then nothing is proposed for either
    assert SignatureDrift().propose(unknown, ws) == []
    assert SignatureDrift().propose(unrelated, ws) == []


def test_only_signature_drift_failures_apply() -> None:
    failure = make_failure(
        FailureClass.ASSERTION_DRIFT, "tests/t.py::test_x", message="f() got an unexpected keyword argument 'a'"
    )
    assert not SignatureDrift().applies(failure)


STORAGE = (
    "class Storage:\n"
    "    def __init__(self, path, make_dirs=False, encoding=None, **kwargs):\n"
    "        self.handle = open(path, 'a', encoding=encoding, **kwargs)\n"
)
STORAGE_TEST = (
    "from db.storage import Storage\n\n\n"
    "def test_create(tmp_path):\n    s = Storage(str(tmp_path / 'x'), create_dirs=True, encoding='utf-8')\n"
    "    assert s.handle\n"
)


def test_a_keyword_swallowed_by_kwargs_and_refused_deeper_maps_to_the_callees_parameter(tmp_path: Path) -> None:
    # Given Storage's `create_dirs` became `make_dirs`; the old keyword went into **kwargs, on to open()
    ws = make_workspace(tmp_path, {"db/storage.py": STORAGE, "tests/test_storage.py": STORAGE_TEST})
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_storage.py::test_create", exception_type="TypeError",
        message="TypeError: 'create_dirs' is an invalid keyword argument for open()",
        file="tests/test_storage.py", line=5,
    )
    strategy = SignatureDrift()
    assert strategy.applies(failure)
    proposals = strategy.propose(failure, ws)
    # Then the test's call passes the parameter Storage takes now (not `encoding`, passed already)
    assert apply(ws, proposals[0]) == {"tests/test_storage.py": STORAGE_TEST.replace("create_dirs=", "make_dirs=")}
    assert all("encoding=True" not in p.edits[0].after for p in proposals)
    assert "**kwargs" in proposals[0].explanation


def test_a_keyword_the_callee_still_takes_is_not_renamed(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {"db/storage.py": STORAGE.replace("make_dirs", "create_dirs"),
                                   "tests/test_storage.py": STORAGE_TEST})
    failure = make_failure(
        FailureClass.SIGNATURE_DRIFT, "tests/test_storage.py::test_create", exception_type="TypeError",
        message="TypeError: 'create_dirs' is an invalid keyword argument for open()",
        file="tests/test_storage.py", line=5,
    )
    assert SignatureDrift().propose(failure, ws) == []
