"""Minimal token- and AST-position edits of test source."""

from __future__ import annotations

from pathlib import Path

from actors.healer.editing import (
    edit_test_file,
    evidence_location,
    function_at,
    locate_test,
    rename_attribute,
    rename_keyword,
    rename_name,
    replace_string,
    rewrite_import_from,
    rewrite_module,
)
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import make_failure, make_workspace

SOURCE = '''import shop.cart
from shop.cart import total, Cart as C


def test_a(db_sesion):
    """db_sesion is documented here"""
    rows = db_sesion.query(db_sesion=1)  # db_sesion in a comment
    assert total(items=[1], qty=2) == shop.cart.total(qty=2)
    assert report.total == "db_sesion"


def test_b(db_sesion):
    assert db_sesion
'''


def test_rename_name_touches_only_code_names_in_the_span() -> None:
    # When a parameter is renamed within test_a's lines only
    after = rename_name(SOURCE, "db_sesion", "db_session", span=(5, 9))
    # Then the parameter and its uses change; the keyword, string, docstring, comment and test_b do not
    assert after == SOURCE.replace("def test_a(db_sesion)", "def test_a(db_session)").replace(
        "rows = db_sesion.query", "rows = db_session.query"
    )


def test_rename_name_renames_an_imported_name_and_its_uses_but_not_attributes() -> None:
    # When an imported function is renamed in the whole file
    after = rename_name(SOURCE, "total", "grand_total")
    # Then the import and the call change, `shop.cart.total` and `report.total` do not
    assert "from shop.cart import grand_total, Cart as C" in after
    assert "assert grand_total(items=[1], qty=2) == shop.cart.total(qty=2)" in after
    assert "report.total" in after


def test_rename_attribute_can_be_limited_to_owners() -> None:
    # When `.total` is renamed only on the module's local name `cart`
    after = rename_attribute(SOURCE, "total", "grand_total", owners={"cart"})
    # Then only `shop.cart.total` changes
    assert after == SOURCE.replace("shop.cart.total(qty=2)", "shop.cart.grand_total(qty=2)")


def test_rename_keyword_changes_keywords_of_that_callee_only() -> None:
    # When qty= is renamed in calls to `total`
    after = rename_keyword(SOURCE, "total", "qty", "quantity")
    # Then both calls to total (bare and dotted) change and nothing else
    assert after == SOURCE.replace("qty=2", "quantity=2")
    # And a callee that is not called leaves the source as it was
    assert rename_keyword(SOURCE, "query", "qty", "quantity") == SOURCE


def test_rename_keyword_handles_non_ascii_columns() -> None:
    # Given a line where a multi-byte character precedes the keyword (ast columns count bytes)
    source = 'x = f("é", qty=1)\n'
    # Then the keyword is still replaced exactly
    assert rename_keyword(source, "f", "qty", "quantity") == 'x = f("é", quantity=1)\n'


def test_replace_string_keeps_quotes_and_prefix() -> None:
    source = "@pytest.mark.usefixtures('db_sesion', r\"other\")\ndef test_x(): pass\n"
    assert replace_string(source, "db_sesion", "db_session") == source.replace("'db_sesion'", "'db_session'")


def test_rewrite_import_from_moves_all_or_some_names() -> None:
    # When every imported name moves, only the module changes (aliases kept)
    assert rewrite_import_from(SOURCE, "shop.cart", "shop.basket").splitlines()[1] == (
        "from shop.basket import total, Cart as C"
    )
    # When one name moves, the statement is split
    lines = rewrite_import_from(SOURCE, "shop.cart", "shop.models", {"Cart"}).splitlines()
    assert lines[1:3] == ["from shop.cart import total", "from shop.models import Cart as C"]
    # When no imported name is listed, nothing changes
    assert rewrite_import_from(SOURCE, "shop.cart", "shop.models", {"Other"}) == SOURCE


def test_rewrite_import_from_keeps_parenthesised_imports() -> None:
    source = "from shop.cart import (\n    total,\n    Cart,\n)\n"
    assert rewrite_import_from(source, "shop.cart", "shop.basket") == source.replace("shop.cart", "shop.basket")


def test_rewrite_module_changes_imports_and_dotted_uses() -> None:
    # When module shop.cart becomes shop.basket
    after = rewrite_module(SOURCE, "shop.cart", "shop.basket")
    # Then `import shop.cart`, the from-import and the dotted use change, and nothing else
    assert after == SOURCE.replace("shop.cart", "shop.basket")
    # And an aliased import changes only the import line
    aliased = "import shop.cart as sc\nsc.total()\n"
    assert rewrite_module(aliased, "shop.cart", "shop.basket") == "import shop.basket as sc\nsc.total()\n"


def test_function_at_finds_the_innermost_function_including_decorators() -> None:
    source = "@deco\ndef outer():\n    def inner():\n        pass\n    return 1\n"
    assert function_at(source, 1) == ("outer", (1, 5))
    assert function_at(source, 4) == ("inner", (3, 4))
    assert function_at(source, 99) is None


def test_locate_test_finds_class_methods_and_strips_parameters(tmp_path: Path) -> None:
    # Given a test method inside a class
    ws = make_workspace(tmp_path, {"tests/test_cart.py": "class TestCart:\n    def test_total(self):\n        pass\n"})
    failure = make_failure(FailureClass.UNKNOWN, "tests/test_cart.py::TestCart::test_total[eur-1]")
    # When it is located
    site = locate_test(failure, ws)
    # Then its file, function and lines are known
    assert site is not None and (site.path, site.function, site.span) == ("tests/test_cart.py", "test_total", (2, 3))


def test_locate_test_refuses_files_that_are_not_tests(tmp_path: Path) -> None:
    # Given a failure naming a source file
    ws = make_workspace(tmp_path, {"shop/cart.py": "def test_like(): pass\n"})
    failure = make_failure(FailureClass.UNKNOWN, "shop/cart.py::test_like")
    # Then it is not located, and no edit of it can be made
    assert locate_test(failure, ws) is None
    assert edit_test_file(ws, "shop/cart.py", "a", "b") is None
    assert edit_test_file(ws, "tests/test_x.py", "a", "b") is not None


def test_evidence_location_maps_a_ci_absolute_path_onto_the_workspace(tmp_path: Path) -> None:
    # Given evidence with the CI machine's absolute path to the test file
    ws = make_workspace(tmp_path, {"tests/test_cart.py": "def test_x():\n    assert 1\n"})
    failure = make_failure(
        FailureClass.UNKNOWN, "tests/test_cart.py::test_x", file="/builds/ci/shop/tests/test_cart.py", line=2
    )
    # Then it maps to the workspace's test file
    assert evidence_location(failure, ws) == ("tests/test_cart.py", 2)
