"""Protocol YAML: validation errors name file + key, include/override, cycles, grid expansion, shipped protocols."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from protocols.config import expand_grid, load_protocol, protocol_sha256, apply_overrides
from protocols.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"name": "t", "models": ["resnet50"],
           "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 4, "epochs": 1}}


def _write(tmp_path, name, doc):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return p


def _merge(extra):
    import copy
    d = copy.deepcopy(MINIMAL)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    return d


def test_minimal_defaults_and_canonical_names(tmp_path):
    p = load_protocol(_write(tmp_path, "p.yaml", MINIMAL))
    assert p.train.optimizer == "Adam"            # case-insensitive, canonical spelling stored
    assert p.split.level == "image" and p.split.n_folds == 5 and p.split.test_fraction == 0.2
    assert p.data.input_size == 224 and p.models == ("resnet50",)
    assert p.to_dict()["train"]["augment"] == {"flip_p": 0.0}


@pytest.mark.parametrize("extra, key, words", [
    ({"train": {"lr": "abc"}}, "train.lr", "positive number"),
    ({"train": {"lr": -1}}, "train.lr", "positive number"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size", "positive integer"),
    ({"train": {"optimizer": "rmsprop"}}, "train.optimizer", "Adam"),
    ({"train": {"loss": "focal"}}, "train.loss", "CrossEntropyLoss"),
    ({"train": {"activation": "swish"}}, "train.activation", "GELU"),
    ({"train": {"keep": "best"}}, "train.keep", "best_val_loss"),
    ({"train": {"augment": {"flip_p": 1.5}}}, "train.augment.flip_p", "[0, 1]"),
    ({"train": {"augment": {"rotate": 10}}}, "train.augment.rotate", "unknown key"),
    ({"train": {"lrr": 1}}, "train.lrr", "unknown key"),
    ({"split": {"level": "site"}}, "split.level", "patient"),
    ({"split": {"test_fraction": 1.0}}, "split.test_fraction", "between 0 and 1"),
    ({"split": {"n_folds": 1}}, "split.n_folds", "at least 2"),
    ({"data": {"mean": [0.5, 0.5]}}, "data.mean", "3 numbers"),
    ({"data": {"std": [0.5, 0, 0.5]}}, "data.std[1]", "positive"),
    ({"leakage": {"gate": "maybe"}}, "leakage.gate", "fail"),
    ({"models": []}, "models", "non-empty"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"grid": {"train.momentum": [0.9]}}, "grid.train.momentum", "grid-able"),
    ({"grid": {"train.lr": [0.1, "x"]}}, "grid.train.lr[1]", "positive number"),
])
def test_validation_error_names_file_and_key(tmp_path, extra, key, words):
    path = _write(tmp_path, "bad.yaml", _merge(extra))
    with pytest.raises(BadInput) as ei:
        load_protocol(path)
    assert ei.value.field == key
    assert ei.value.path == str(path)
    assert words in str(ei.value)


def test_missing_required_key(tmp_path):
    doc = dict(MINIMAL, train={"optimizer": "adam", "batch_size": 4, "epochs": 1})
    with pytest.raises(BadInput, match="train.lr: missing required key"):
        load_protocol(_write(tmp_path, "p.yaml", doc))


def test_include_deep_merge_override(tmp_path):
    base = _merge({"train": {"augment": {"flip_p": 0.5}, "weight_decay": 0.01}, "split": {"seed": 3}})
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "base.yaml", base)
    child = _write(tmp_path / "sub", "child.yaml",
                   {"include": "../base.yaml", "name": "child", "split": {"level": "patient"},
                    "train": {"lr": 0.5}})
    p = load_protocol(child)
    assert p.name == "child" and p.split.level == "patient" and p.split.seed == 3  # merged, not replaced
    assert p.train.lr == 0.5 and p.train.weight_decay == 0.01 and p.train.augment.flip_p == 0.5


def test_include_cycle_detected(tmp_path):
    _write(tmp_path, "a.yaml", {"include": "b.yaml", "name": "a"})
    _write(tmp_path, "b.yaml", {"include": "a.yaml", "name": "b"})
    with pytest.raises(BadInput, match="include cycle"):
        load_protocol(tmp_path / "a.yaml")


def test_include_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_protocol(_write(tmp_path, "a.yaml", {"include": "nope.yaml"}))
    with pytest.raises(BadInput, match="not valid YAML"):
        load_protocol(_write(tmp_path, "b.yaml", "name: [unclosed\n"))


def test_sha_changes_with_content_not_with_key_order(tmp_path):
    a = load_protocol(_write(tmp_path, "a.yaml", MINIMAL))
    reordered = {k: MINIMAL[k] for k in reversed(list(MINIMAL))}
    b = load_protocol(_write(tmp_path, "b.yaml", reordered))
    c = apply_overrides(a, {"train.epochs": 2})
    assert protocol_sha256(a) == protocol_sha256(b)
    assert protocol_sha256(c) != protocol_sha256(a) and c.train.epochs == 2


def test_grid_expansion_stable_ids(tmp_path):
    doc = _merge({"grid": {"train.lr": [1e-3, 1e-4, 1e-5], "train.weight_decay": [1e-4, 1e-5],
                           "models": [["resnet50"], ["resnet50_cbam"]]}})
    variants = expand_grid(load_protocol(_write(tmp_path, "g.yaml", doc)))
    assert len(variants) == 12
    ids = [v.variant["id"] for v in variants]
    assert len(set(ids)) == 12
    combos = {(v.train.lr, v.train.weight_decay, v.models) for v in variants}
    assert len(combos) == 12 and all(v.grid is None for v in variants)
    # same grid written in a different key order -> same ids
    doc2 = dict(doc, grid=dict(reversed(list(doc["grid"].items()))))
    ids2 = [v.variant["id"] for v in expand_grid(load_protocol(_write(tmp_path, "g2.yaml", doc2)))]
    assert sorted(ids) == sorted(ids2)
    v0 = variants[0]
    assert v0.name.startswith("t@") and protocol_sha256(v0) != protocol_sha256(variants[1])


def test_shipped_protocols():
    paper = load_protocol(ROOT / "protocols/afif2025/protocol.yaml")
    t = paper.train
    assert (paper.data.input_size, t.optimizer, t.lr, t.weight_decay, t.scheduler, t.batch_size, t.epochs,
            t.loss, t.activation, t.augment.flip_p) == (224, "Adam", 1e-5, 1e-4, "CosineAnnealingLR", 64, 100,
                                                       "CrossEntropyLoss", "ReLU", 0.5)
    assert (paper.split.level, paper.split.test_fraction, paper.split.n_folds) == ("image", 0.2, 5)
    assert set(paper.models) >= {"resnet50", "resnet50_cbam", "vgg16", "densenet121", "efficientnet_b0", "vit_b_16"}
    assert len(expand_grid(paper)) == 3 * 2 * 2 * 2 * 2
    patient = load_protocol(ROOT / "protocols/afif2025/protocol-patient.yaml")
    assert patient.split.level == "patient" and patient.train == paper.train
    smoke = load_protocol(ROOT / "protocols/smoke/protocol.yaml")
    assert smoke.smoke and smoke.allow_random_init and smoke.grid is None and smoke.train.epochs <= 3
    # each smoke protocol's patient-level counterpart differs from it in the split level only
    for image_level, patient_level in (("protocol.yaml", "protocol-patient.yaml"),
                                       ("protocol-binary.yaml", "protocol-binary-patient.yaml")):
        a = load_protocol(ROOT / "protocols/smoke" / image_level)
        b = load_protocol(ROOT / "protocols/smoke" / patient_level)
        assert (a.split.level, b.split.level) == ("image", "patient")
        assert (b.train, b.task, b.models, b.data, b.split.n_folds, b.split.test_fraction, b.split.seed) == \
            (a.train, a.task, a.models, a.data, a.split.n_folds, a.split.test_fraction, a.split.seed)
