"""The `fibrobench` command line: one argparse subcommand per module `bench/cmd_<name>.py`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `main(args) -> int`.
Errors whose class carries `exit_code = 2` (bad input) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# order = order in --help; module names are stable, the CLI contract lives in DESIGN.md
COMMANDS = ["synth", "models", "run", "leakage", "shortcuts", "latency", "audit_claims", "report", "gate", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from bench import __version__

    parser = argparse.ArgumentParser(
        prog="fibrobench",
        description="Benchmark and reproducibility audit suite for medical-image classification claims.",
    )
    parser.add_argument("--version", action="version", version=f"fibrobench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"bench.cmd_{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not there yet is not offered
            if exc.name == f"bench.cmd_{name}":
                continue
            raise
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("fibrobench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only bad-input errors are turned into exit 2
        if getattr(exc, "exit_code", None) == 2:
            print(f"fibrobench {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
