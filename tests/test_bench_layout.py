"""bench/ says what is API: commands in bench/commands/, measurement scripts in bench/scripts/ (not in the wheel)."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from bench.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent
COMMAND_DIR = ROOT / "bench" / "commands"
NOT_SHIPPED = ("bench/scripts", "bench/benchmarks")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


def test_every_command_module_is_a_registered_command():
    """A module in bench/commands/ that COMMANDS does not list would silently not be offered (and vice versa)."""
    assert sorted(p.stem for p in _modules(COMMAND_DIR)) == sorted(COMMANDS)
    assert not sorted((ROOT / "bench").glob("cmd_*.py")), "command modules belong in bench/commands/<name>.py"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert len(sub.choices) == len(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_module_has_the_contract(name):
    import importlib

    mod = importlib.import_module(f"bench.commands.{name}")
    assert isinstance(mod.NAME, str) and isinstance(mod.HELP, str)
    assert callable(mod.add_arguments) and callable(mod.main)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add("." * node.level + node.module)
    return names


def _sys_path_edits(path: Path) -> list[int]:
    """Line numbers of `sys.path.insert(...)` / `sys.path.append(...)` calls."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("insert", "append", "extend") and ast.unparse(node.func.value) == "sys.path":
            out.append(node.lineno)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "bench").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_bench_never_patches_sys_path_nor_imports_tests(path):
    mods = _imports(path)
    assert not [m for m in mods if m.split(".")[0] in ("tests", "conftest", "fake_run")], mods
    assert not _sys_path_edits(path), f"{path.relative_to(ROOT)} edits sys.path at lines {_sys_path_edits(path)}"


def test_sys_path_check_can_fail(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import sys\nsys.path.insert(0, 'tests')\nfrom fake_run import make_fake_run\n")
    assert _sys_path_edits(f) == [2] and "fake_run" in _imports(f)


def test_the_wheel_ships_the_cli_and_library_but_not_the_scripts():
    """The packages setuptools will put in the wheel, from pyproject's own find settings."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(str(ROOT), include=find["include"], exclude=find["exclude"]))
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".") for top in ("bench", "models", "protocols", "reports")
               for p in (ROOT / top).rglob("__init__.py")}
    excluded = {d.replace("/", ".") for d in NOT_SHIPPED}
    assert {"bench", "bench.commands", "models", "protocols", "reports"} <= shipped
    assert not {p for p in shipped if p.split(".")[:2] in ([*e.split(".")] for e in excluded)}
    assert shipped == {p for p in on_disk if not any(p == e or p.startswith(e + ".") for e in excluded)}
