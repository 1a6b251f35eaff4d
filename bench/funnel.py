"""The CLI's one error funnel: which exception becomes which one-line message and exit code.

Exit codes (README "Exit codes"): 0 ok; 1 a check failed when asked to fail on it; 2 bad input or an unusable
environment (a file the user named is missing, malformed, a directory where a file is expected, not writable;
a device that is not there; no space left); 3 an unexpected internal error, a bug: the traceback is shown so it
can be reported; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

File arguments are recognised from the argparse parser (`path_arguments`): a folder when the metavar ends in DIR
(or the dest is one of FOLDER_DESTS), a file when the metavar names a file type (FILE, .json, .yaml, .csv, .xml,
.html, OUT); an output when its dest or metavar says so (OUTPUT_DESTS, metavar starting with OUT). New commands
that name their arguments this way are pre-checked and covered by tests/test_bad_input.py without further work.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

OK, CHECK_FAILED, BAD_INPUT, INTERNAL_ERROR, INTERRUPTED, TERMINATED = 0, 1, 2, 3, 130, 143

OUTPUT_DESTS = {"out", "out_dir", "output", "json", "junit", "cache_dir"}
FOLDER_DESTS = {"out", "out_dir", "cache_dir", "data", "run", "run_dir", "run_dirs"}
INPUT_FILE_DESTS = {"protocol", "claims", "baseline", "splits", "latency", "manifest"}
_FILE_METAVAR = re.compile(r"(FILE|OUT|\.(json|ya?ml|csv|xml|html?|npz|pt|pth))$", re.IGNORECASE)
# errno values that say "this path/environment cannot be used", as opposed to a bug
_ENV_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
               errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY, errno.EINVAL,
               errno.EXDEV, errno.EMFILE}
_NO_PATH_NEEDED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}   # environment-wide: bad whatever file it hit
MAX_MESSAGE = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")


@dataclass(frozen=True)
class PathArg:
    """One file argument of a command: its option (or positional name), dest, folder or file, input or output."""
    command: str
    flag: str
    dest: str
    kind: str        # "dir" | "file"
    output: bool
    nargs: object = None


def path_role(action: argparse.Action) -> tuple[str, bool] | None:
    """(kind, is_output) of a file argument, None for any other argument (by the conventions above)."""
    if not isinstance(action, argparse._StoreAction) or action.type not in (None, str) or action.choices:
        return None
    meta = (action.metavar if isinstance(action.metavar, str) else "") or ""
    dest = action.dest
    output = dest in OUTPUT_DESTS or meta.upper().startswith("OUT")
    if meta.upper().endswith("DIR") or dest in FOLDER_DESTS:
        return "dir", output
    if _FILE_METAVAR.search(meta) or dest in INPUT_FILE_DESTS or dest in OUTPUT_DESTS:
        return "file", output
    return None


def _subparsers(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def path_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> list[PathArg]:
    """Every file argument of every subcommand of `parser` (nested ones named "weights where")."""
    out = []
    for sub in _subparsers(parser):
        for name, sp in sub.choices.items():
            command = f"{prefix} {name}".strip()
            for a in sp._actions:
                role = path_role(a)
                if role:
                    out.append(PathArg(command, a.option_strings[-1] if a.option_strings else a.dest, a.dest, *role,
                                       nargs=a.nargs))
            out += path_arguments(sp, command)
    return out


def invoked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The command path of a parsed command line ("gate", "weights where")."""
    words = []
    while True:
        subs = _subparsers(parser)
        if not subs or getattr(args, subs[0].dest, None) not in subs[0].choices:
            return " ".join(words)
        name = getattr(args, subs[0].dest)
        words.append(name)
        parser = subs[0].choices[name]


# ---------------------------------------------------------------- argparse value types (a bad value is a usage
# error: exit 2 with one line, see bench.cli.Parser)


def _number(kind, text: str, ok, rule: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def nonneg_float(text: str) -> float:
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) become one space; control characters (terminal escapes in a hostile
    file name) are shown escaped; at most MAX_MESSAGE characters."""
    text = " ".join(str(text).split())
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path, flag: str, kind: str = "file") -> None:
    """Refuse, before any work, an output path that cannot be written: a directory where a file is meant, a file
    where a folder is meant, a parent that is a file, a parent that is not writable."""
    from protocols.errors import BadInput

    path = Path(path)
    if kind == "file" and path.is_dir():
        raise BadInput(path, flag, "is a directory; give a file path")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise BadInput(path, flag, "exists and is not a directory")
    anchor = _nearest_existing(path.parent if kind == "file" else path)
    if not anchor.is_dir():
        raise BadInput(path, flag, f"{anchor} is a file, not a directory")
    if anchor != path.absolute() and not os.access(anchor, os.W_OK | os.X_OK):
        raise BadInput(path, flag, f"cannot create it: {anchor} is not writable")
    if anchor == path.absolute() and not os.access(anchor, os.W_OK | os.X_OK):
        raise BadInput(path, flag, "is not writable")


def check_outputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """check_output for every output argument the user gave to this command."""
    command = invoked(args, parser)
    for pa in path_arguments(parser):
        if pa.command != command or not pa.output:
            continue
        value = getattr(args, pa.dest, None)
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, str) and v:
                check_output(v, pa.flag, pa.kind)


def _user_paths(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(option, absolute path) of every string the user gave (any of them may be a path)."""
    found = []
    for dest, value in vars(args).items():
        if dest.startswith("_") or dest in ("argv", "command"):
            continue
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, str) and v and "\x00" not in v:
                found.append(("--" + dest.replace("_", "-"), Path(os.path.abspath(v))))
    return found


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _explain(exc: OSError) -> str:
    what = {errno.ENOENT: "not found", errno.ENOTDIR: "a parent is not a directory",
            errno.EISDIR: "is a directory; a file was expected", errno.EEXIST: "already exists",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "file name too long"}
    return what.get(exc.errno, exc.strerror or type(exc).__name__)


def os_error_message(exc: OSError, args: argparse.Namespace) -> str | None:
    """The one-line message for an OS error on a path the user named (or under/over it); None otherwise."""
    if exc.errno not in _ENV_ERRNOS:
        return None
    names = [n for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    for name in names:
        p = Path(os.path.abspath(os.fsdecode(name)))
        for flag, up in _user_paths(args):
            if _related(p, up):
                return f"{os.fsdecode(name)}: {flag}: {_explain(exc)}"
    if exc.errno in _NO_PATH_NEEDED:
        return f"{os.fsdecode(names[0]) + ': ' if names else ''}{_explain(exc)}"
    return None


def classify(exc: BaseException, args: argparse.Namespace) -> tuple[int, str | None]:
    """(exit code, message) for an exception that escaped a command; message None = show the traceback."""
    if getattr(exc, "exit_code", None) == BAD_INPUT:
        return BAD_INPUT, one_line(exc)
    if isinstance(exc, OSError):
        msg = os_error_message(exc, args)
        if msg is not None:
            return BAD_INPUT, one_line(msg)
    return INTERNAL_ERROR, None
