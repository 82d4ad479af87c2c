"""Imports flow app -> prompts and app -> engine; never back, never between prompts and engine."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"engine": {"prompts", "app"}, "prompts": {"engine", "app"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_wrong_way_imports(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {str(f.relative_to(ROOT)): imported_packages(f) & FORBIDDEN[package] for f in files}
    assert not {f: names for f, names in bad.items() if names}


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom prompts.cot import run\n")
    assert imported_packages(module) & FORBIDDEN["engine"] == {"prompts"}
