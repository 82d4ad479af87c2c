"""Imports flow app -> prompts and app -> engine; never back, never between prompts and engine.

Inside engine/, only the frontends in engine/serving/ import web or LangChain code, and nothing
else in the engine imports engine/serving/.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"engine": {"prompts", "app"}, "prompts": {"engine", "app"}}
FRONTEND_LIBRARIES = {"fastapi", "starlette", "uvicorn", "pydantic", "langchain", "langchain_core", "sse_starlette",
                      "openai", "gradio"}


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Absolute dotted names of every module `path` imports, relative imports resolved against its
    package (by default the one it sits in under the repository root)."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).parts[:-1]) if path.is_relative_to(ROOT) else ""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import serving`
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


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


def engine_core_files() -> list[Path]:
    return [f for f in (ROOT / "engine").rglob("*.py") if "serving" not in f.relative_to(ROOT).parts]


def test_the_engine_core_imports_no_web_or_langchain_code():
    bad = {str(f.relative_to(ROOT)): imported_packages(f) & FRONTEND_LIBRARIES for f in engine_core_files()}
    assert not {f: names for f, names in bad.items() if names}


def test_nothing_in_the_engine_core_imports_the_frontends():
    bad = {str(f.relative_to(ROOT)): {m for m in imported_modules(f) if m.startswith("engine.serving")}
           for f in engine_core_files()}
    assert not {f: names for f, names in bad.items() if names}


def test_the_checker_sees_frontend_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("from .serving.server import create_app\nfrom ..engine import serving\nimport fastapi\n")
    names = imported_modules(module, package="engine")  # read as if it lived in the engine core
    assert {"engine.serving.server", "engine.serving", "fastapi"} <= names
