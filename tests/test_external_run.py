"""A timm model and a package.module:factory model train in a smoke run, get latency facts and appear in the report."""
from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
USER_MODEL = '''
from torch import nn

def small_cnn(num_classes):
    """A user's own three-layer CNN."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''
MODELS = ["timm/test_resnet", "fb_user_models.cnn:small_cnn"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from bench.cli import main
    from protocols.synth import generate_dataset

    base = tmp_path_factory.mktemp("ext")
    pkg = base / "pkgs" / "fb_user_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cnn.py").write_text(textwrap.dedent(USER_MODEL))
    sys.path.insert(0, str(base / "pkgs"))
    data = base / "data"
    generate_dataset(data, n_patients=10, size=(64, 48), seed=0, overwrite=True)
    doc = {"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "ext",
           "data": {"input_size": 64}, "split": {"n_folds": 2},
           "train": {"epochs": 1, "batch_size": 16, "deterministic": True}, "models": MODELS}
    proto = base / "p.yaml"
    proto.write_text(yaml.safe_dump(doc))
    out = base / "run"
    try:
        assert main(["run", str(proto), "--data", str(data), "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
        assert main(["latency", "--models", ",".join(MODELS), "--device", "cpu", "--input-size", "64",
                     "--batch-sizes", "1", "--precisions", "fp32", "--runs", "3", "--warmup", "1",
                     "--train-batch", "0", "--max-batch-cap", "0", "--quiet",
                     "--json", str(out / "latency.json")]) == 0
        yield out
    finally:
        sys.path.remove(str(base / "pkgs"))
        for mod in ("fb_user_models.cnn", "fb_user_models"):
            sys.modules.pop(mod, None)


@pytest.mark.slow
def test_jobs_and_ensembles_of_external_models(run_dir):
    from protocols.runfiles import read_logits

    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete" and sorted(run["models"]) == sorted(MODELS)
    for name in MODELS:
        assert run["models"][name]["weights"]["random_init"] is True
        assert ("code" in run["models"][name]) == (":" in name)  # a factory records its source file + sha256
        for k in (0, 1):
            assert (run_dir / "jobs" / name / f"fold{k}" / "DONE").exists()
        e = read_logits(run_dir / "ensemble" / f"{name}.npz")
        assert e["logits"].shape[1] == 5 and torch.isfinite(torch.as_tensor(e["logits"])).all()
    assert sorted(p.name for p in (run_dir / "jobs").iterdir()) == ["fb_user_models.cnn:small_cnn", "timm"]


@pytest.mark.slow
def test_report_and_efficiency_cover_external_models(run_dir):
    from models import create_model
    from models.facts import count_params
    from reports.render import render_report
    from reports.summary import summarize_run

    s = summarize_run(run_dir, n_boot=100)
    assert set(s["models"]) == set(MODELS)  # "timm", the folder holding timm/test_resnet, is no model
    lat = json.loads((run_dir / "latency.json").read_text())["models"]
    for name in MODELS:
        eff = s["efficiency"][name]
        with torch.device("meta"):
            expected = count_params(create_model(name, num_classes=5, input_size=64))[0]
        assert eff["params"] == expected == lat[name]["params"]
        assert eff["flops"] == lat[name]["flops"] > 0 and eff["fp32"]["p50_ms"] > 0
        assert eff["n_folds_done"] == 2
    html, _ = render_report(run_dir, n_boot=100)
    table = re.search(r'<table id="table-efficiency">.*?</table>', html, re.S).group(0)
    ens = re.search(r'<table id="table-ensemble">.*?</table>', html, re.S).group(0)
    for name in MODELS:
        assert f"<td>{name}</td>" in table and name in ens


@pytest.mark.slow
def test_run_with_a_broken_factory_exits_2_with_one_line(tmp_path, capsys):
    from bench.cli import main
    from protocols.synth import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, n_patients=6, size=(64, 48), seed=1, overwrite=True)
    proto = tmp_path / "p.yaml"
    proto.write_text(yaml.safe_dump({"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "broken",
                                     "data": {"input_size": 32}, "split": {"n_folds": 2}}))
    capsys.readouterr()
    assert main(["run", str(proto), "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--models", "resnet50,no_such_pkg_fb.nets:small", "--no-progress"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert len(err) == 1 and "no_such_pkg_fb.nets:small" in err[0] and "cannot import" in err[0]
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "jobs").exists()
