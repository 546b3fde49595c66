"""Sizes a reader can hold: no class over 300 lines, no module over 400, outside the emulators (which
mirror whole provider APIs)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

FOLDERS = ("broker", "adapters", "pricing", "policies", "local_backend", "tests", "bench")
MODULE_MAX, CLASS_MAX = 400, 300


def modules() -> list[Path]:
    found = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
    return sorted(p for p in found if "emulators" not in p.relative_to(ROOT).parts)


def test_no_module_over_400_lines() -> None:
    files = modules()
    assert len(files) > 100
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MODULE_MAX}
    assert long == {}


def test_no_class_over_300_lines() -> None:
    long = {
        f"{path.relative_to(ROOT)}:{node.name}": size
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and (size := (node.end_lineno or node.lineno) - node.lineno + 1) > CLASS_MAX
    }
    assert long == {}
