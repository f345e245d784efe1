"""The mutation check's static parts: which functions a test exercises, and which mutants to seed."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from actors.validator.mutation import Target, exercised_functions, mutants_of
from actors.workspace import Workspace

SOURCE = textwrap.dedent('''\
    def price(amount, rate):
        """Price with tax."""  # the docstring is never mutated
        if amount < 0:
            raise ValueError("négatif")
        return amount + amount * rate


    class Cart:
        def __init__(self):
            self.items = []

        def total(self):
            return sum(self.items) or 0
''')


def test_mutants_are_varied_valid_and_change_only_the_target() -> None:
    # Given a function with a condition, a comparison, arithmetic and a return
    target = Target(path="shop/prices.py", qualname="price")
    # When mutants are made
    mutants = mutants_of(SOURCE, target, limit=5)
    # Then each is valid Python that differs from the original only inside `price`
    assert len(mutants) == 5
    for m in mutants:
        tree = ast.parse(m.text)
        assert ast.dump(tree) != ast.dump(ast.parse(SOURCE))
        assert m.text.split("class Cart")[1] == SOURCE.split("class Cart")[1]
        assert '"""Price with tax."""  # the docstring is never mutated' in m.text
    # And the likeliest to be noticed come first, one of each kind
    assert [m.description.split(": ", 1)[1] for m in mutants[:3]] == [
        "`return amount + amount * rate` -> `return None`",
        "`amount + amount * rate` -> `(amount - amount * rate)`",
        "`amount < 0` -> `(amount >= 0)`",
    ]
    assert mutants[0].description.startswith("shop/prices.py:5 in price")


def test_a_method_is_found_by_qualified_name() -> None:
    mutants = mutants_of(SOURCE, Target(path="shop/prices.py", qualname="Cart.total"), limit=3)
    assert mutants and all("in Cart.total" in m.description for m in mutants)
    assert any("(sum(self.items) and 0)" in m.text for m in mutants)


def test_nothing_to_mutate() -> None:
    source = "def noop():\n    pass\n"
    assert mutants_of(source, Target(path="a.py", qualname="noop")) == []
    assert mutants_of(source, Target(path="a.py", qualname="missing")) == []


def test_exercised_functions_follow_imports_helpers_and_instances(tmp_path: Path) -> None:
    # Given a package that re-exports, and a test that uses a helper and an instance
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("from .prices import price\n")
    (tmp_path / "shop" / "prices.py").write_text(SOURCE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_shop.py").write_text(textwrap.dedent('''\
        import shop
        from shop.prices import Cart


        def make_cart():
            return Cart()


        def test_total():
            cart = make_cart()
            other = Cart()
            assert other.total() == 0
            assert shop.price(1, 0) == 1
            assert len([]) == 0
    '''))
    # When the functions the test exercises are looked up
    found = exercised_functions(Workspace(tmp_path), "tests/test_shop.py::test_total")
    # Then they are the constructor, the method, and the re-exported function; not builtins or tests
    assert [(t.path, t.qualname) for t in found] == [
        ("shop/prices.py", "Cart.__init__"),
        ("shop/prices.py", "Cart.total"),
        ("shop/prices.py", "price"),
    ]


def test_unknown_test_ids_exercise_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_a():\n    pass\n")
    assert exercised_functions(Workspace(tmp_path), "test_x.py::test_missing") == []
    assert exercised_functions(Workspace(tmp_path), "missing.py::test_a") == []
