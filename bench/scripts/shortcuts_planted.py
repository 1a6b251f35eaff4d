"""Planted-shortcut smoke runs: synth (cue planted) -> run (tiny CNN) -> shortcuts, with the verdict and wall times.

Usage: python -m bench.scripts.shortcuts_planted OUT_DIR [--kinds border,text,device,none] [--json OUT]
Each kind: `fibrobench synth OUT/<kind>/data --patients 80 --size 96x72 --shortcut KIND --effect-size E` (E = 0 for
a planted cue, so only the cue carries the label; E = 3 for `none`, so the clean model has tissue to learn), then
`fibrobench run` of a 32 px protocol with the small CNN `bench.scripts.tiny_cnn:TinyCNN` (a `package.module:factory`
model: fold 0 of 4, 30 epochs, CPU), then `fibrobench shortcuts`.
tests/test_shortcuts_planted.py runs the same.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EFFECT = {"border": 0.0, "text": 0.0, "device": 0.0, "none": 3.0}
PATIENTS, SIZE, INPUT, EPOCHS = 80, "96x72", 32, 30
MODEL = "bench.scripts.tiny_cnn:TinyCNN"


def planted_run(out_dir, kind: str, effect: float | None = None, model: str = MODEL,
                audit_args=("--n-boot", "1000", "--gradcam", "32")) -> dict:
    """synth -> run -> shortcuts in OUT_DIR; returns {"commands", "seconds", "doc"} (the shortcuts.json)."""
    from bench.cli import main

    out = Path(out_dir)
    data, run, proto = out / "data", out / "run", out / "protocol.yaml"
    effect = EFFECT[kind] if effect is None else effect
    out.mkdir(parents=True, exist_ok=True)
    proto.write_text(yaml.safe_dump({
        "include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "tiny-shortcuts",
        "data": {"input_size": INPUT}, "split": {"n_folds": 4, "level": "patient"}, "leakage": {"gate": "off"},
        "models": [model], "train": {"epochs": EPOCHS, "batch_size": 16, "lr": 3.0e-3, "deterministic": True}}))
    cmds = {"synth": ["synth", str(data), "--patients", str(PATIENTS), "--size", SIZE, "--effect-size", str(effect),
                      "--shortcut", kind, "--quiet", "--workers", "1"],
            "run": ["run", str(proto), "--data", str(data), "--out", str(run), "--device", "cpu", "--no-progress",
                    "--folds", "0"],
            "shortcuts": ["shortcuts", str(run), "--device", "cpu", *audit_args]}
    secs = {}
    for step, argv in cmds.items():
        t = time.perf_counter()
        rc = main(argv)
        secs[step] = round(time.perf_counter() - t, 2)
        if rc != 0:
            raise RuntimeError(f"fibrobench {' '.join(argv)} exited {rc}")
    doc = json.loads((run / "shortcuts.json").read_text())
    return {"commands": {k: "fibrobench " + " ".join(v) for k, v in cmds.items()}, "seconds": secs, "doc": doc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--kinds", default="border,text,device,none")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model = MODEL
    res = {}
    for kind in args.kinds.split(","):
        r = planted_run(Path(args.out_dir) / kind, kind, model=model)
        m = r["doc"]["models"][model]
        res[kind] = {"effect_size": EFFECT[kind], "verdict": m["verdict"], "reason": m["reason"],
                     "seconds": r["seconds"], "commands": r["commands"],
                     "accuracy": {"original": m["regions"]["original"]["value"],
                                  **{f"{c['region']}/{c['fill']}": c["accuracy"]["value"]
                                     for c in m["regions"]["conditions"]}},
                     "majority_rate": m["regions"]["majority_rate"]}
        print(f"{kind}: {m['verdict'].upper()} ({r['seconds']}) - {m['reason']}", flush=True)
    if args.json:
        from bench.provenance import collect
        doc = {"schema": "fibrobench.shortcuts_planted/1", "kinds": res,
               "provenance": collect(sys.argv[1:], "cpu", {"synth": 0})}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
