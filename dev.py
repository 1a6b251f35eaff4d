#!/usr/bin/env python3
"""Set-up entry point needing only Python 3.11 + pip: `python3 dev.py demo` or `python3 dev.py test`.

Creates ./.venv on first use, installs fibrobench with its test extras into it (re-installs when
pyproject.toml changes), then runs the demo or the unit tests inside it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("FIBROBENCH_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def ensure_env() -> None:
    stamp = VENV / ".fibrobench-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want and PY.exists():
        return
    if not PY.exists():
        print(f"[dev] creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("[dev] installing fibrobench and its test extras (torch comes from the local wheel cache when present)",
          flush=True)
    subprocess.check_call([str(PY), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], cwd=ROOT)
    stamp.write_text(want + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "env"}:
        print("usage: python3 dev.py demo [fibrobench demo options] | test [pytest options] | env", file=sys.stderr)
        return 2
    ensure_env()
    cmd, rest = argv[0], argv[1:]
    if cmd == "env":
        return 0
    if cmd == "demo":
        return subprocess.call([str(BIN / "fibrobench"), "demo", *rest], cwd=ROOT)
    return subprocess.call([str(PY), "-m", "pytest", "-q", "tests", *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
