"""One logging approach: diagnostics through `logging` under "fibrobench", shown on stderr by bench.cli; results on stdout."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from bench.cli import _Stderr, configure_logging

ROOT = Path(__file__).resolve().parent.parent
# the CLI's one error funnel prints the one-line error itself
FUNNELS = {"bench/cli.py"}
# the per-epoch line of a fold job runs in worker processes; it moves to logging with the trainer's split
PENDING = {"protocols/trainer.py"}


def _ours(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, _Stderr)]   # pytest attaches its own capture handlers too


@pytest.fixture
def fresh_logger():
    root = logging.getLogger("fibrobench")
    saved, level, propagate = _ours(root), root.level, root.propagate
    for h in saved:
        root.removeHandler(h)
    yield root
    for h in _ours(root):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)
    root.propagate = propagate


def test_messages_read_as_before_and_the_handler_is_installed_once(fresh_logger, capsys):
    configure_logging()
    configure_logging()
    assert len(_ours(fresh_logger)) == 1
    logging.getLogger("fibrobench.run").info("job %d/%d: %s fold %d", 1, 10, "resnet50", 0)
    logging.getLogger("fibrobench.gate").warning("nothing was compared")
    logging.getLogger("fibrobench.run").debug("not shown at INFO")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "fibrobench run: job 1/10: resnet50 fold 0\nfibrobench gate: nothing was compared\n"


def test_library_use_without_the_cli_prints_no_info(fresh_logger, capsys):
    logging.getLogger("fibrobench.run").info("quiet when fibrobench is used as a library")
    assert capsys.readouterr().err == ""


def _stderr_prints(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            if any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in node.keywords):
                lines.append(node.lineno)
    return lines


def test_no_print_based_logging_beside_logging():
    found = {}
    for top in ("bench", "models", "protocols", "reports"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel.startswith(("bench/scripts/", "bench/benchmarks/")) or rel in FUNNELS | PENDING:
                continue
            if _stderr_prints(path):
                found[rel] = _stderr_prints(path)
    assert not found, f"use logging.getLogger('fibrobench.<part>') instead of print(..., file=sys.stderr): {found}"


def test_the_print_finder_can_fail(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import sys\nprint('a')\nprint('b', file=sys.stderr)\n")
    assert _stderr_prints(f) == [3]
