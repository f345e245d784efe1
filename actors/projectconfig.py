"""Per-project configuration: a `[tool.cars]` table in the project's pyproject.toml, or a `cars.toml`.

    [tool.cars]
    test_cmd = "python -m pytest -q"
    auto_apply = ["import_error", "renamed_symbol", "signature_drift", "fixture_missing"]
    template = "python"
    quarantine_file = ".cars-quarantine"
    test_paths = ["tests/**/*.py", "test_*.py"]
    git_branch = true      # apply repairs on a new branch, with a commit carrying the evidence
    reruns = 3

Every key is optional. `cars.toml` holds the same keys at its top level (or under `[tool.cars]`) and
wins over pyproject.toml. An unknown key or a wrong type is an error naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from attrs import field, frozen, validators

from actors.errors import Rejected
from actors.workspace import DEFAULT_TEST_GLOBS
from contracts import ContractError, structure
from contracts.values import FailureClass

#: Classes whose validated repairs are applied without approval unless the project says otherwise.
DEFAULT_AUTO_APPLY = frozenset({
    FailureClass.IMPORT_ERROR, FailureClass.RENAMED_SYMBOL, FailureClass.SIGNATURE_DRIFT,
    FailureClass.FIXTURE_MISSING,
})
DEFAULT_TEST_CMD = "python -m pytest -q"
QUARANTINE_FILE = ".cars-quarantine"  # the CARS pytest plugin reads the same default


class ProjectConfigError(Rejected):
    """The project's CARS configuration is invalid; the message names the file and the key."""


@frozen(kw_only=True)
class ProjectConfig:
    test_cmd: str = DEFAULT_TEST_CMD
    auto_apply: frozenset[FailureClass] = DEFAULT_AUTO_APPLY
    template: str = "python"
    quarantine_file: str = QUARANTINE_FILE
    test_paths: tuple[str, ...] = DEFAULT_TEST_GLOBS
    git_branch: bool = False
    reruns: int = field(default=3, validator=[validators.ge(1), validators.le(20)])


def load_project_config(root: str | Path) -> ProjectConfig:
    """The configuration of the project at `root` (defaults when it has none)."""
    root = Path(root)
    for name in ("cars.toml", "pyproject.toml"):
        path = root / name
        if not path.is_file():
            continue
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProjectConfigError(f"{path}: not valid TOML: {exc}") from None
        table: Any = doc.get("tool", {}).get("cars")
        if table is None and name == "cars.toml":
            table = {k: v for k, v in doc.items() if k != "tool"}
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ProjectConfigError(f"{path}: [tool.cars] must be a table")
        try:
            return structure(table, ProjectConfig, root="[tool.cars]")
        except ContractError as exc:
            raise ProjectConfigError(f"{path}: " + "; ".join(exc.errors)) from None
    return ProjectConfig()


__all__ = ["DEFAULT_AUTO_APPLY", "QUARANTINE_FILE", "ProjectConfig", "ProjectConfigError", "load_project_config"]
