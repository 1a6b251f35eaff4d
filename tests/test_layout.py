"""The layout's import arrows (bench -> protocols -> models, bench -> reports) and the CLI contract's names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level modules it must never import
FORBIDDEN = {
    "models": {"protocols", "bench", "reports"},
    "protocols": {"bench", "reports"},
    "reports": {"torch", "torchvision", "timm", "models", "protocols", "bench"},
}


def _imported_tops(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_tops(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_cli_offers_every_command_of_the_contract():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    contract = {"synth", "models", "run", "leakage", "shortcuts", "latency", "audit-claims", "report", "demo", "gate"}
    assert contract <= set(sub.choices), contract - set(sub.choices)


def test_every_module_says_what_it_is_for():
    missing = [str(p.relative_to(ROOT)) for pkg in ("bench", "models", "protocols", "reports")
               for p in sorted((ROOT / pkg).rglob("*.py"))
               if p.name != "__init__.py" and not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()]
    assert not missing, missing


def test_atomic_writes_are_ordinary_readable_files(tmp_path):
    import os
    import stat

    from protocols.atomic import write_bytes, write_json

    old = os.umask(0o022)
    try:
        a = write_json(tmp_path / "a.json", {"x": 1})
        b = write_bytes(tmp_path / "sub" / "b.bin", b"\x00" * 3, fsync=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644 and stat.S_IMODE(b.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]  # no temp files left
