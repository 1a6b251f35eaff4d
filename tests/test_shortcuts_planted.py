"""The shortcut audit against the truth: each planted shortcut is flagged on a smoke run, clean data is not.

Each case: `fibrobench synth` (80 patients, 96x72, the cue at full strength, no tissue signal) -> `fibrobench run`
(a tiny BatchNorm CNN at 32 px, fold 0 of 4, 30 epochs, CPU) -> `fibrobench shortcuts`. The clean case has a
strong tissue signal (--effect-size 3) and no cue, so its model learns tissue and must come out clean.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from shortcut_models import register_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp:
        yield register_tiny(mp)


def _audit(tmp_path, model, kind, effect):
    from bench.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", str(data), "--patients", "80", "--size", "96x72", "--effect-size", str(effect),
                 "--shortcut", kind, "--quiet", "--workers", "1"]) == 0
    proto = tmp_path / "p.yaml"
    proto.write_text(yaml.safe_dump({
        "include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "tiny-shortcuts", "data": {"input_size": 32},
        "split": {"n_folds": 4, "level": "patient"}, "leakage": {"gate": "off"}, "models": [model],
        "train": {"epochs": 30, "batch_size": 16, "lr": 3.0e-3, "deterministic": True}}))
    assert main(["run", str(proto), "--data", str(data), "--out", str(run), "--device", "cpu", "--no-progress",
                 "--folds", "0"]) == 0
    assert main(["shortcuts", str(run), "--device", "cpu", "--n-boot", "1000", "--gradcam", "32"]) == 0
    doc = json.loads((run / "shortcuts.json").read_text())
    assert doc["schema"] == "fibrobench.shortcuts/1" and doc["provenance"]["git"] is not None
    m = doc["models"][model]
    acc = {f"{c['region']}/{c['fill']}": c["accuracy"]["value"] for c in m["regions"]["conditions"]}
    return m, acc


@pytest.mark.parametrize("kind", ["border", "text", "device"])
def test_each_planted_shortcut_is_flagged(tmp_path, tiny_model, kind):
    m, acc = _audit(tmp_path, tiny_model, kind, 0)
    orig = m["regions"]["original"]["value"]
    assert m["verdict"] == "shortcut", m["reason"]
    assert m["regions"]["learned"]                                   # the model did learn the cue
    # with no tissue signal, removing the tissue cannot cost much, removing the frame around it must
    assert acc["sector/mean"] >= orig - 0.1
    assert acc["outside/mean"] < orig - 0.2
    if kind == "text":
        assert acc["text/mean"] < orig
    if kind == "device":
        dev = m["metadata"]["device"]
        assert dev["association"]["associated"] and dev["association"]["cramers_v"] > 0.9
        assert dev["probe"]["encodes"]


def test_clean_data_is_not_flagged(tmp_path, tiny_model):
    m, acc = _audit(tmp_path, tiny_model, "none", 3)
    from bench.cli import main
    assert main(["shortcuts", str(tmp_path / "run"), "--models", "resnet50"]) == 2      # not in this run
    assert m["verdict"] == "clean", m["reason"]
    orig = m["regions"]["original"]["value"]
    assert orig > m["regions"]["majority_rate"]                       # it learnt the tissue ...
    assert acc["sector/mean"] < orig and acc["sector/noise"] < orig  # ... and loses it with the tissue
    assert acc["outside/mean"] > orig - 0.1
    assert not any(v["association"]["associated"] for v in m["metadata"].values())


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from bench.cli import main

    assert main(["shortcuts", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.json" in err
    assert main(["shortcuts", str(tmp_path), "--gradcam", "-5"]) == 2
    assert not (tmp_path / "shortcuts.json").exists()
