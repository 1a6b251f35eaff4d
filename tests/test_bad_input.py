"""Property test of the CLI's bad-input contract: every file argument of every command, found in the argparse
parser (bench.funnel.path_arguments), given a directory, a missing path, an empty file or random bytes where a
file or folder is read -- or a directory / a path under a file where one is written -- exits 2 with one error
line that names the path, prints no traceback and leaves no output behind.

A new command whose file arguments follow the naming conventions of bench/funnel.py is covered without editing this
file when its required arguments can be filled from the fixtures below (by dest); otherwise the test asks for a
BASE entry.
"""
from __future__ import annotations

import random
import shlex
from pathlib import Path

import pytest
import yaml

from bench.cli import build_parser, main
from bench.funnel import path_arguments

ROOT = Path(__file__).resolve().parent.parent
PARSER = build_parser()
PATH_ARGS = path_arguments(PARSER)
# `weights fetch` would use the network if a case ever got past the checks: `weights where` has the same arguments
NEVER_RUN = {"weights fetch"}

# what is wrong with the value given to an argument, per (kind, is_output)
VARIANTS = {("file", False): ["directory", "missing", "empty", "random"],
            ("dir", False): ["directory", "missing", "empty", "random"],     # "directory": an empty folder
            ("file", True): ["directory", "under_file"],
            ("dir", True): ["empty", "random", "under_file"]}

# a valid, quick invocation of each command ({name} = a fixture path), positionals first; the argument under test
# replaces its value (or is added)
BASE = {
    "synth": "{tmp}/synth-out --patients 5 --size 32x32 --workers 1 --quiet",
    "models": "--models resnet50 --input-size 32",
    "run": "{protocol} --data {data} --out {tmp}/run-out --device cpu --no-progress",
    "leakage": "--data {data} --no-probe --no-thumbs",
    "latency": "--models resnet50 --device cpu --input-size 32 --info-only",
    "audit-claims": "{claims}",
    "report": "{run} --n-boot 10 -o {tmp}/report.html",
    "gate": "{run} --baseline {baseline}",
    "demo": "--out {tmp}/demo-out --patients 5",
    "weights where": "resnet50",
    "new-paper": "roe2026 --classes a,b,c --dir {tmp}/papers",
}
# fixtures that fill a required argument of a command missing from BASE, by dest
BY_DEST = {"run_dir": "{run}", "run_dirs": "{run}", "run": "{run}", "data": "{data}", "protocol": "{protocol}",
           "claims": "{claims}", "baseline": "{baseline}", "splits": "{run}/splits.json",
           "latency": "{run}/latency.json"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from bench.scripts.fake_run import make_fake_run
    from protocols.synth import generate_dataset

    d = tmp_path_factory.mktemp("fixtures")
    generate_dataset(d / "data", n_patients=6, size=(48, 40), seed=0, overwrite=True)
    run = make_fake_run(d / "run", models=("resnet50",), n_patients=20, images_per_patient=2, n_folds=2)
    proto = d / "p.yaml"
    proto.write_text(yaml.safe_dump({"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "tiny",
                                     "data": {"input_size": 32}, "split": {"n_folds": 2},
                                     "train": {"epochs": 1}, "models": ["efficientnet_b0"]}))
    baseline = d / "baseline.json"
    assert main(["gate", str(run), "--baseline", str(baseline), "--write-baseline"]) == 0
    return {"data": d / "data", "run": run, "protocol": proto, "claims": ROOT / "protocols/afif2025/claims.yaml",
            "baseline": baseline}


def _bad_value(tmp: Path, variant: str) -> Path:
    p = tmp / f"bad-{variant}"
    if variant == "directory":
        p.mkdir()
    elif variant == "empty":
        p.write_bytes(b"")
    elif variant == "random":
        p.write_bytes(random.Random(0).randbytes(1024))
    elif variant == "under_file":
        (tmp / "a-file").write_text("x")
        p = tmp / "a-file" / "child"
    return p


def _base(command: str, env: dict, tmp: Path) -> list[str]:
    sub = PARSER._subparsers._group_actions[0].choices[command.split()[0]]
    for word in command.split()[1:]:
        sub = sub._subparsers._group_actions[0].choices[word]
    if command in BASE:
        text = BASE[command]
    else:   # a new command: fill its required arguments from the fixtures
        positional, options = [], []
        for a in sub._actions:
            if not (a.required or (not a.option_strings and a.nargs not in ("?", "*"))) or a.dest == "help":
                continue
            if a.dest not in BY_DEST:
                pytest.fail(f"add a quick valid invocation of `fibrobench {command}` to BASE in {__file__}: "
                            f"cannot fill its required argument {a.dest!r}")
            (options if a.option_strings else positional).extend(
                ([a.option_strings[-1]] if a.option_strings else []) + [BY_DEST[a.dest]])
        text = " ".join(positional + options)    # positionals first, as in BASE
    return shlex.split(text.format(tmp=tmp, **{k: str(v) for k, v in env.items()}))


def _argv(pa, base: list[str], value: str) -> list[str]:
    sub = PARSER._subparsers._group_actions[0].choices[pa.command.split()[0]]
    for word in pa.command.split()[1:]:
        sub = sub._subparsers._group_actions[0].choices[word]
    action = next(a for a in sub._actions if a.dest == pa.dest)
    argv = list(base)
    if action.option_strings:
        for flag in action.option_strings:       # drop the base's own value of this option
            while flag in argv:
                i = argv.index(flag)
                del argv[i:i + 2]
        argv += [action.option_strings[-1], value]
    else:                                        # positional: the base's leading words, in parser order
        positionals = [a for a in sub._actions if not a.option_strings and a.dest != "help"]
        argv[positionals.index(action)] = value
    return pa.command.split() + argv


CASES = [pytest.param(pa, v, id=f"{pa.command}:{pa.flag}:{v}")
         for pa in PATH_ARGS if pa.command not in NEVER_RUN for v in VARIANTS[(pa.kind, pa.output)]]


def test_every_command_has_a_case():
    """The parser yields file arguments for every command that has any (the test is not silently empty)."""
    covered = {pa.command for pa in PATH_ARGS}
    assert {"synth", "run", "leakage", "latency", "audit-claims", "report", "gate", "models", "demo"} <= covered
    assert len(CASES) >= 60


@pytest.mark.parametrize("pa,variant", CASES)
def test_bad_file_argument_exits_2_with_one_line(pa, variant, env, tmp_path, capsys):
    base = _base(pa.command, env, tmp_path)
    bad = _bad_value(tmp_path, variant)
    argv = _argv(pa, base, str(bad))
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if " error: " in ln]
    assert rc == 2, f"fibrobench {shlex.join(argv)} -> exit {rc}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err[-3000:]
    assert bad.name in errors[0], errors[0]
    # nothing half-written: no output of the base invocation appeared
    for flag in ("--out", "-o", "--output", "--json", "--junit"):
        if flag in argv[:-2]:
            target = Path(argv[argv.index(flag) + 1])
            assert not target.exists() or target == bad, f"{target} was written by a failing command"
    if pa.command == "synth" and pa.dest != "out_dir":
        assert not (tmp_path / "synth-out").exists()
