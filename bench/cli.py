"""The `fibrobench` command line: one argparse subcommand per module `bench/commands/<name>.py`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `main(args) -> int`.
Every exception that escapes a command goes through `run_command` and bench/funnel.py: bad input (errors with
`exit_code = 2`, OS errors on paths the user named) prints one line and exits 2; anything else is a bug: its
traceback is printed and the exit code is 3.
Diagnostics go through `logging` (loggers under "fibrobench"), shown on stderr as "fibrobench <part>: message";
results go to stdout with print.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback
import warnings

# order = order in --help; module names are stable, the CLI contract lives in docs/design.md
COMMANDS = ["synth", "models", "weights", "run", "leakage", "shortcuts", "latency", "audit_claims", "report", "gate",
            "demo", "new_paper"]


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a record is emitted (pytest's capsys swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class _Prefixed(logging.Formatter):
    """Logger "fibrobench.run" -> "fibrobench run: message"."""

    def format(self, record: logging.LogRecord) -> str:
        record.prefix = record.name.replace(".", " ", 1)
        return super().format(record)


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler on the "fibrobench" logger; calling it again changes nothing."""
    root = logging.getLogger("fibrobench")
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_Prefixed("%(prefix)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (Pillow's, scikit-learn's...) as one log line each instead of two raw lines with source code."""
    logging.getLogger("fibrobench.warning").warning("%s: %s", category.__name__, " ".join(str(message).split()))


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (`fibrobench run: error: argument --seed: ...`), exit 2."""

    def error(self, message: str):
        from bench.funnel import BAD_INPUT, one_line

        self.exit(BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from bench import __version__

    parser = Parser(
        prog="fibrobench",
        description="Benchmark and reproducibility audit suite for medical-image classification claims.",
    )
    parser.add_argument("--version", action="version", version=f"fibrobench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"bench.commands.{name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def _terminated(signum, frame):  # SIGTERM (kill, Slurm's time limit): unwind so `finally` blocks clean up
    raise SystemExit(143)


def run_command(args, parser=None) -> int:
    """Run the parsed command; every exception becomes one message and an exit code (bench/funnel.py)."""
    from bench import funnel

    try:
        if parser is not None:
            funnel.check_outputs(args, parser)
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("fibrobench: interrupted", file=sys.stderr)
        return funnel.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place exceptions become messages
        code, msg = funnel.classify(exc, args)
        if msg is None:
            traceback.print_exc()
            print(f"fibrobench {args.command}: internal error ({type(exc).__name__}); this is a bug, please report "
                  "it with the traceback above", file=sys.stderr)
        else:
            print(f"fibrobench {args.command}: error: {msg}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if argv is None:                # a real process, not a test (pytest keeps its own warning and signal handling)
        warnings.showwarning = _warning_line
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
    configure_logging()
    return run_command(args, parser)


if __name__ == "__main__":
    sys.exit(main())
