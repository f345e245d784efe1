"""The AST index: module names, symbols, signatures, classes and fixture visibility."""

from __future__ import annotations

from pathlib import Path

from actors.healer.pyindex import build_index, index_for, module_names
from tests.unit.healer.strategy_kit import make_workspace

SHOP = {
    "src/shop/__init__.py": "from .cart import Cart as Cart\n__all__ = ['Cart']\n",
    "src/shop/cart.py": (
        "import decimal\n"
        "from shop.money import Money\n\n"
        "TAX = 0.2\n\n"
        "class Base:\n"
        "    def describe(self) -> str:\n"
        "        return 'base'\n\n"
        "class Cart(Base):\n"
        "    currency = 'EUR'\n\n"
        "    def __init__(self, owner, *, limit=10):\n"
        "        self.items = []\n\n"
        "    def add(self, sku, /, quantity=1, *extra, note: str = '', **opts):\n"
        "        pass\n\n"
        "async def checkout(cart):\n"
        "    pass\n"
    ),
    "src/shop/money.py": "try:\n    from decimal import Decimal as Money\nexcept ImportError:\n    Money = float\n",
    "src/shop/broken.py": "def oops(:\n",
    "tests/conftest.py": (
        "import pytest\n\n"
        "@pytest.fixture\ndef db_session():\n    return 1\n\n"
        "@pytest.fixture(name='client')\ndef _client_fixture():\n    return 2\n"
    ),
    "tests/api/conftest.py": "import pytest\n\n@pytest.fixture\ndef client():\n    return 3\n",
    "tests/api/test_orders.py": (
        "import pytest\n\n@pytest.fixture()\ndef order():\n    return 4\n\ndef test_x(order):\n    pass\n"
    ),
    "tests/test_cart.py": "def test_y(db_session):\n    pass\n",
}


def test_module_names_follow_src_layout_packages_and_rootdir_insertion() -> None:
    # Given package folders as the index sees them
    packages = {"src/shop", "tests"}
    # When names are computed
    # Then src/ is dropped, packages are named by folder, and non-package test folders give the leaf
    assert module_names("src/shop/cart.py", packages) == ["shop.cart"]
    assert module_names("src/shop/__init__.py", packages) == ["shop"]
    assert module_names("tests/unit/test_a.py", packages) == ["tests.unit.test_a", "test_a"]
    assert module_names("app/models.py", set()) == ["app.models", "models"]
    assert module_names("README.md", packages) == []


def test_symbols_classes_and_reexports(tmp_path: Path) -> None:
    # Given a src-layout package that re-exports a class from a submodule
    index = build_index(make_workspace(tmp_path, SHOP))
    # When the modules are looked up
    cart, pkg = index.module("shop.cart"), index.module("shop")
    # Then definitions, imports and __all__ are known, and re-exports are told apart from definitions
    assert cart is not None and pkg is not None
    assert {"TAX", "Base", "Cart", "checkout", "decimal", "Money"} <= set(cart.symbols)
    assert cart.symbols["Money"].target == "shop.money.Money"
    assert cart.defines("Cart") and not cart.defines("Money")
    assert pkg.symbols["Cart"].target == "shop.cart.Cart" and pkg.all_names == ("Cart",)
    assert [m.name for m in index.defining_modules("Cart")] == ["shop.cart"]
    assert [m.name for m in index.exporting_modules("Cart")] == ["shop"]
    # Names bound inside try/except count too; the first binding describes the name
    money = index.module("shop.money")
    assert money is not None and money.exports("Money")
    assert money.symbols["Money"].target == "decimal.Decimal"


def test_files_that_do_not_parse_are_skipped(tmp_path: Path) -> None:
    # Given a package with one file that has a syntax error
    index = build_index(make_workspace(tmp_path, SHOP))
    # Then that file is absent and the others are present
    assert index.module("shop.broken") is None
    assert index.module("shop.cart") is not None


def test_signatures_have_names_kinds_and_defaults(tmp_path: Path) -> None:
    # Given a method with every kind of parameter
    index = build_index(make_workspace(tmp_path, SHOP))
    # When its signature is requested by qualified name
    [(mod, sig)] = index.signature("Cart.add")
    # Then each parameter has its kind and default source
    assert mod.name == "shop.cart"
    assert [(p.name, p.kind, p.default) for p in sig.params] == [
        ("self", "positional_only", None),
        ("sku", "positional_only", None),
        ("quantity", "positional_or_keyword", "1"),
        ("extra", "var_positional", None),
        ("note", "keyword_only", "''"),
        ("opts", "var_keyword", None),
    ]
    assert sig.keyword_names() == ("quantity", "note") and sig.accepts_any_keyword
    # A class gives its __init__, and async functions are indexed
    [(_, init)] = index.signature("Cart")
    assert init.names == ("self", "owner", "limit")
    assert index.signature("checkout")[0][1].names == ("cart",)


def test_class_members_include_instance_attributes_and_inherited_ones(tmp_path: Path) -> None:
    # Given a class whose base is defined in the same module
    index = build_index(make_workspace(tmp_path, SHOP))
    [(mod, cls)] = index.find_classes("Cart")
    # When its members are listed
    members = index.class_members(mod, cls)
    # Then methods, class attributes, self-assigned attributes and base members are all present
    assert {"__init__", "add", "currency", "items", "describe"} <= set(members)


def test_fixture_visibility_follows_conftest_folders_and_name_overrides(tmp_path: Path) -> None:
    # Given fixtures at two conftest levels (one with name=) and in a test module
    index = build_index(make_workspace(tmp_path, SHOP))
    # When the fixtures visible from two test files are listed
    api = index.fixtures_visible("tests/api/test_orders.py")
    top = index.fixtures_visible("tests/test_cart.py")
    # Then the nearer conftest wins, module fixtures stay in their module, and name= is honoured
    assert api["client"].path == "tests/api/conftest.py"
    assert top["client"].function == "_client_fixture"
    assert set(api) == {"db_session", "client", "order"}
    assert set(top) == {"db_session", "client"}


def test_index_is_cached_per_workspace_instance(tmp_path: Path) -> None:
    # Given a workspace whose index was built
    ws = make_workspace(tmp_path, {"a.py": "X = 1\n"})
    first = index_for(ws)
    (tmp_path / "b.py").write_text("Y = 2\n")
    # When it is asked again, and a new instance of the same folder is indexed
    # Then the same instance gives the cached index and a new instance sees the new file
    assert index_for(ws) is first
    assert index_for(make_workspace(tmp_path, {})).module("b") is not None
