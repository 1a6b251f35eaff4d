"""The layout's import arrows (bench -> protocols -> models, bench -> reports), no import cycles, the CLI's names."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "protocols", "reports")

# package -> top-level modules it must never import
FORBIDDEN = {
    "models": {"protocols", "bench", "reports"},
    "protocols": {"bench", "reports"},
    "reports": {"torch", "torchvision", "timm", "models", "protocols", "bench"},
}
# ... except these modules: the run directory's torch-free layer, which training and reports share
ALLOWED = {"reports": {"protocols.runfiles"}}
# what importing them may load of the project besides reports itself (checked in a fresh interpreter)
TORCH_FREE_CLOSURE = {"protocols", "protocols.runfiles", "protocols.atomic", "protocols.errors", "models",
                      "models.errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _under_type_checking(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports too, TYPE_CHECKING blocks excluded):
    the full dotted name, resolved to the module it loads when that module is one of `known`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    skip = _under_type_checking(tree)
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                out.add(full if full in known else base)
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest prefix of `name` that is a project module (None for third-party modules)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    known = set(_all_modules())
    allowed = ALLOWED.get(package, set())
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = sorted(name for name in _imports(path, known)
                     if name.split(".")[0] in FORBIDDEN[package] and _resolve(name, known) not in allowed)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {bad}")
    assert not offenders, "\n".join(offenders)


def test_reports_and_the_shared_run_layer_load_no_torch():
    """Importing every reports module (and through them protocols.runfiles) loads neither torch nor any project
    module outside reports and the torch-free closure of the shared layer."""
    names = sorted(n for n in _all_modules() if n.split(".")[0] == "reports") + sorted(ALLOWED["reports"])
    code = ("import importlib, json, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "print(json.dumps(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    loaded = set(__import__("json").loads(res.stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "torchvision", "timm"))
    assert not heavy, heavy[:10]
    project = {m for m in loaded if m.split(".")[0] in PACKAGES and not m.startswith("reports")}
    assert project <= TORCH_FREE_CLOSURE, sorted(project - TORCH_FREE_CLOSURE)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), Tarjan."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports (anywhere in the file)."""
    mods = _all_modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        targets = {_resolve(i, known) for i in _imports(path, known)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _cycles({"a": {"a"}}) == [["a"]]


def test_no_import_cycles():
    graph = import_graph()
    assert graph["bench.runner"] >= {"bench.executors", "protocols.runfiles"}    # the graph sees real imports
    assert "reports.summary" in graph["reports.render"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


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
