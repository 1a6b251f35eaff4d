"""The shortcut audit against the truth: each planted shortcut is flagged on a smoke run, clean data is not.

Each case is bench/scripts/shortcuts_planted.planted_run: `fibrobench synth` (80 patients, 96x72, the cue at full strength,
no tissue signal) -> `fibrobench run` (bench.scripts.tiny_cnn:TinyCNN, a small BatchNorm CNN, at 32 px, fold 0 of 4, 30 epochs, CPU) ->
`fibrobench shortcuts`. The clean case has a strong tissue signal (--effect-size 3) and no cue, so its model
learns tissue and must come out clean.
"""
from __future__ import annotations

import pytest

from bench.scripts.shortcuts_planted import MODEL, planted_run


@pytest.fixture(scope="module")
def tiny_model():
    return MODEL            # bench.scripts.tiny_cnn:TinyCNN, a package.module:factory model


def _audit(tmp_path, model, kind):
    doc = planted_run(tmp_path, kind, model=model)["doc"]
    assert doc["schema"] == "fibrobench.shortcuts/1" and doc["provenance"]["git"] is not None
    m = doc["models"][model]
    acc = {f"{c['region']}/{c['fill']}": c["accuracy"]["value"] for c in m["regions"]["conditions"]}
    return m, acc


@pytest.mark.parametrize("kind", ["border", "text", "device"])
def test_each_planted_shortcut_is_flagged(tmp_path, tiny_model, kind):
    m, acc = _audit(tmp_path, tiny_model, kind)
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
    from bench.cli import main

    m, acc = _audit(tmp_path, tiny_model, "none")
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
