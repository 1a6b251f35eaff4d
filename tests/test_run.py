"""Ensemble maths + leak refusal, and `fibrobench run` end to end on a tiny synthetic dataset (resume, gate)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import softmax as sp_softmax

from protocols.atomic import sha256_of, write_json
from protocols.errors import BadInput
from protocols.runfiles import ensemble_model, read_logits, write_logits
from protocols.splits import make_splits
from split_checks import check_run_dir

ROOT = Path(__file__).resolve().parent.parent



# ---------------------------------------------------------------- ensemble on a hand-made run dir

def _fake_run(tmp_path, n=60, folds=3, seed=0):
    df = pd.DataFrame({"image_id": [f"F{i % 5}/x{i:03d}.png" for i in range(n)], "label": [i % 5 for i in range(n)]})
    splits = make_splits(df, "image", 0.2, folds, seed=0)
    rng = np.random.default_rng(seed)
    lab = dict(zip(df.image_id, df.label))
    for k, f in enumerate(splits["folds"]):
        job = tmp_path / "jobs" / "m" / f"fold{k}"
        for name, ids in (("val", f["val"]), ("test", splits["holdout"]["test"][::-1])):   # test order shuffled
            write_logits(job / f"{name}_logits.npz", ids, rng.normal(size=(len(ids), 5)), [lab[i] for i in ids])
        write_json(job / "DONE", {})
    return splits


def test_ensemble_is_logit_mean_then_softmax_and_oof_covers_trainval(tmp_path):
    splits = _fake_run(tmp_path)
    out = ensemble_model(tmp_path, "m", splits)
    e = read_logits(tmp_path / "ensemble" / "m.npz")
    test = splits["holdout"]["test"]
    assert list(e["ids"]) == test
    members = []
    for k in range(3):
        z = read_logits(tmp_path / "jobs" / "m" / f"fold{k}" / "test_logits.npz")
        pos = {i: j for j, i in enumerate(z["ids"])}
        members.append(z["logits"][[pos[i] for i in test]].astype(np.float64))
    mean = np.mean(members, axis=0)
    assert np.allclose(e["logits"], mean, atol=1e-6)
    assert np.allclose(e["probs"], sp_softmax(mean, axis=1), atol=1e-6)
    assert out["accuracy"] == pytest.approx(float((mean.argmax(1) == e["labels"]).mean()))
    # probability-mean is a different estimator: make sure we did not compute that instead
    assert not np.allclose(e["probs"], np.mean([sp_softmax(m, axis=1) for m in members], axis=0), atol=1e-4)
    oof = np.load(tmp_path / "oof" / "m.npz")
    assert sorted(oof["ids"].tolist()) == sorted(splits["holdout"]["trainval"])
    assert len(set(oof["ids"].tolist())) == len(oof["ids"])
    for i, k in zip(oof["ids"][:10], oof["fold"][:10]):
        assert i in splits["folds"][k]["val"] and i not in splits["folds"][k]["train"]


def test_ensemble_refuses_leaked_holdout(tmp_path):
    splits = _fake_run(tmp_path)
    leaked = json.loads(json.dumps(splits))
    victim = leaked["holdout"]["test"][0]
    leaked["folds"][1]["train"].append(victim)
    leaked.pop("sha256")
    leaked["sha256"] = sha256_of(leaked)
    with pytest.raises(BadInput) as ei:
        ensemble_model(tmp_path, "m", leaked)
    assert ei.value.field == "folds[1].train" and victim in str(ei.value)
    assert not (tmp_path / "ensemble" / "m.npz").exists()


def test_ensemble_refuses_incomplete_or_mismatched_members(tmp_path):
    splits = _fake_run(tmp_path)
    (tmp_path / "jobs" / "m" / "fold2" / "DONE").unlink()
    with pytest.raises(BadInput, match="not complete"):
        ensemble_model(tmp_path, "m", splits)
    out = ensemble_model(tmp_path, "m", splits, folds=[0, 1])          # a subset: holdout only, no OOF
    assert out["members"] == [0, 1] and not out["oof"]
    job = tmp_path / "jobs" / "m" / "fold0"
    z = read_logits(job / "test_logits.npz")
    write_logits(job / "test_logits.npz", z["ids"][1:], z["logits"][1:], z["labels"][1:])
    with pytest.raises(BadInput, match="do not match splits"):
        ensemble_model(tmp_path, "m", splits, folds=[0, 1])


# ---------------------------------------------------------------- end to end through the CLI

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from protocols.synth import generate_dataset
    d = tmp_path_factory.mktemp("data")
    generate_dataset(d, n_patients=10, size=(64, 48), seed=0, overwrite=True)
    return d


def _protocol(tmp_path, **extra):
    doc = {"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "tiny",
           "data": {"input_size": 32}, "split": {"n_folds": 2},
           "train": {"epochs": 1, "batch_size": 16, "deterministic": True}, "models": ["efficientnet_b0"]}
    for k, v in extra.items():
        doc[k] = {**doc.get(k, {}), **v} if isinstance(v, dict) else v
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _cli(*argv):
    from bench.cli import main
    return main(["run", *map(str, argv)])


@pytest.mark.slow
def test_run_end_to_end_and_resume(tmp_path, tiny_data, capsys):
    proto, out = _protocol(tmp_path), tmp_path / "run"
    assert _cli(proto, "--data", tiny_data, "--out", out, "--device", "cpu", "--no-progress") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["schema"] == "fibrobench.run/1" and run["status"] == "complete"
    assert run["protocol"]["name"] == "tiny" and len(run["protocol_sha256"]) == 64
    splits = check_run_dir(out)
    assert run["splits_sha256"] == splits["sha256"] and run["data"]["n_images"] == len(splits["images"])
    assert run["models"]["efficientnet_b0"]["weights"]["random_init"] is True and run["models"]["efficientnet_b0"]["params"] > 1e6
    assert run["provenance"]["seeds"]["train"] == {"fold0": 0, "fold1": 1}
    assert (out / "leakage.json").exists()
    for k in (0, 1):
        job = out / "jobs" / "efficientnet_b0" / f"fold{k}"
        done = json.loads((job / "DONE").read_text())
        assert done["fold"] == k and done["seed"] == k and done["epochs"] == 1
        assert list(read_logits(job / "val_logits.npz")["ids"]) == splits["folds"][k]["val"]
        assert list(read_logits(job / "test_logits.npz")["ids"]) == splits["holdout"]["test"]
        assert (job / "checkpoint.pt").exists() and (job / "history.csv").exists()
    e = read_logits(out / "ensemble" / "efficientnet_b0.npz")
    assert list(e["ids"]) == splits["holdout"]["test"] and np.allclose(e["probs"].sum(1), 1, atol=1e-5)
    assert sorted(np.load(out / "oof" / "efficientnet_b0.npz")["ids"].tolist()) == sorted(splits["holdout"]["trainval"])

    stamp = (out / "jobs/efficientnet_b0/fold0/test_logits.npz").stat().st_mtime_ns
    assert _cli(proto, "--data", tiny_data, "--out", out, "--device", "cpu", "--no-progress") == 0
    assert (out / "jobs/efficientnet_b0/fold0/test_logits.npz").stat().st_mtime_ns == stamp   # skipped, not retrained
    assert check_run_dir(out)["sha256"] == splits["sha256"]

    capsys.readouterr()
    assert _cli(proto, "--data", tiny_data, "--out", out, "--epochs", "2", "--no-progress") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json" in err[0] and "protocol_sha256" in err[0]


@pytest.mark.slow
def test_leakage_gate_fail_stops_before_training(tmp_path, tiny_data, monkeypatch, capsys):
    proto = _protocol(tmp_path, leakage={"gate": "fail"})
    monkeypatch.chdir(tmp_path)       # no --out: the run directory is made under ./runs/, and its path is printed
    assert _cli(proto, "--data", tiny_data, "--device", "cpu", "--no-progress") == 1
    printed = capsys.readouterr().out.strip()
    out = Path(printed)
    assert printed != "None" and out.parent == Path("runs") and (tmp_path / out / "run.json").is_file()
    out = tmp_path / out
    run = json.loads((out / "run.json").read_text())
    leak = json.loads((out / "leakage.json").read_text())
    assert leak["verdict"] == "leak" and run["status"] == "failed" and not (out / "jobs").exists()
    assert leak["provenance"]["git"].keys() == {"sha", "dirty"} and "torch" in leak["provenance"]["packages"]


def test_bad_protocol_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "models": ["resnet50"],
                                   "train": {"optimizer": "adam", "lr": "abc", "batch_size": 4, "epochs": 1}}))
    assert _cli(bad, "--data", tmp_path, "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "train.lr" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_grid_runs_every_variant_on_the_same_splits(tmp_path, tiny_data):
    proto = _protocol(tmp_path, grid={"train.lr": [0.01, 0.001]})
    out = tmp_path / "grid"
    assert _cli(proto, "--data", tiny_data, "--out", out, "--grid", "--folds", "0", "--device", "cpu",
                "--no-progress") == 0
    runs = sorted((out / "grid").iterdir())
    assert len(runs) == 2
    docs = [json.loads((r / "run.json").read_text()) for r in runs]
    assert {d["protocol"]["train"]["lr"] for d in docs} == {0.01, 0.001}
    assert all(d["status"] == "complete" and d["protocol"]["grid"] is None for d in docs)
    assert docs[0]["splits_sha256"] == docs[1]["splits_sha256"] == check_run_dir(runs[0])["sha256"]
    check_run_dir(runs[1])
    assert docs[0]["protocol_sha256"] != docs[1]["protocol_sha256"]
    assert {d["protocol"]["variant"]["id"] for d in docs} == {r.name for r in runs}


def test_bad_fold_index_exits_2(tmp_path, tiny_data, capsys):
    assert _cli(_protocol(tmp_path), "--data", tiny_data, "--out", tmp_path / "r", "--folds", "0,7") == 2
    assert "--folds" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:99"])
def test_bad_device_exits_2_before_anything_is_written(tmp_path, tiny_data, capsys, device):
    assert _cli(_protocol(tmp_path), "--data", tiny_data, "--out", tmp_path / "r", "--device", device) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- run dirs made before tasks were protocol data

@pytest.mark.parametrize("names, ordinal", [(["F0", "F1", "F2", "F3", "F4"], True), (["cat", "dog", "eel"], False)])
def test_a_run_dir_made_before_tasks_resumes_with_its_recorded_hash(tmp_path, names, ordinal):
    """run.json written before the `task:` section existed (no protocol.task, hash over that dict) still reads:
    its hash verifies and the task comes from splits.json's class names, as reports read it."""
    from bench.runner import read_run
    from protocols.config import load_protocol

    recorded = load_protocol(ROOT / "protocols" / "smoke" / "protocol.yaml").to_dict()
    recorded.pop("task")                                   # what an old run.json holds
    write_json(tmp_path / "run.json", {"protocol": recorded, "protocol_sha256": sha256_of(recorded)})
    df = pd.DataFrame({"image_id": [f"x{i:03d}.png" for i in range(40)], "label": [i % len(names) for i in range(40)]})
    write_json(tmp_path / "splits.json", make_splits(df, "image", 0.2, 2, seed=0, class_names=names))
    _, p = read_run(tmp_path)
    assert list(p.task.classes) == names and p.task.ordinal is ordinal
    assert (p.task.cutoffs is not None) is ordinal

    recorded["train"]["lr"] = 0.5                          # a tampered protocol still fails the hash check
    write_json(tmp_path / "run.json", {"protocol": recorded, "protocol_sha256": sha256_of({**recorded, "train": {
        **recorded["train"], "lr": 1.0}})})
    with pytest.raises(BadInput, match="protocol_sha256"):
        read_run(tmp_path)
