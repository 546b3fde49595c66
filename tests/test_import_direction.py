"""The dependency direction of DESIGN.md, read from the source: the lower packages import nothing of
the broker but its schema, and the HTTP API sits above everything but the command line."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

LOWER = ("adapters", "pricing", "policies", "local_backend")
# Who may import broker.api: the API itself and the command line above it.
ABOVE_API = ("broker/api/", "broker/cli/", "broker/__main__.py")


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every module a file imports (type-checking imports too), with its line; relative imports resolved."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from broker import api` imports the package broker.api
                yield node.lineno, f"{base}.{alias.name}"


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def is_module(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_nothing_of_the_broker_but_its_schema(package: str) -> None:
    files = sources(package)
    assert files, f"no sources under {package}/"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path)
        if is_module(name, "broker") and name not in ("broker", "broker.schema")
        and not name.startswith("broker.schema.")
    ]
    assert wrong == []


def test_the_api_is_imported_by_nothing_below_it() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources("broker", *LOWER)
        if not path.relative_to(ROOT).as_posix().startswith(ABOVE_API)
        for line, name in imported_modules(path)
        if is_module(name, "broker.api")
    ]
    assert wrong == []


# What each broker package stays clear of (their __init__ docstrings say the same).
BELOW = {
    "broker/jobs": ("broker.api", "broker.cli"),
    "broker/store": ("broker.api", "broker.cli", "broker.observability", "broker.jobs"),
    "broker/observability": ("broker.api", "broker.cli", "broker.jobs"),
}


@pytest.mark.parametrize("folder", sorted(BELOW))
def test_the_broker_packages_import_nothing_above_them(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources(folder)
        for line, name in imported_modules(path)
        if any(is_module(name, above) for above in BELOW[folder])
    ]
    assert wrong == []


def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    # The rules above pass only if the checker finds imports at all, in each form they take.
    module = tmp_path / "broker" / "jobs" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import broker.api.app\n"
        "from broker import api\n"
        "from ..api import jobs\n"
        "from . import routing\n"
        "if True:\n"
        "    from broker.store import Store\n"
    )
    names = [name for _, name in imported_modules(module, tmp_path)]
    assert "broker.api.app" in names and "broker.api" in names and "broker.api.jobs" in names
    assert "broker.jobs.routing" in names and "broker.store" in names
