"""Dataset loading and validation: ImageFolder and manifest CSV, every bad input -> BadInput naming file and field."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from protocols.config import TaskCfg
from protocols.data import COLUMNS, LabelSpace, class_counts, data_fingerprint
from protocols.data import load_manifest as _load_manifest
from protocols.errors import BadInput
from protocols.synth import CLASS_NAMES, generate_dataset

FIVE = TaskCfg(classes=CLASS_NAMES, ordinal=True)   # the afif2025 task: the five METAVIR stages


def load_manifest(path, **kw):
    """protocols.data.load_manifest with the five-stage task (tests/test_task.py covers other label spaces)."""
    return _load_manifest(path, **{"task": FIVE, **kw})


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    generate_dataset(root, n_patients=6, seed=5, size=(64, 48))
    return root


@pytest.fixture
def folder(tmp_path):
    """A small ImageFolder dataset (two tiny PNGs per class), no manifest."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASS_NAMES):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (12, 16), dtype=np.uint8)).save(root / c / f"{c}_{i}.png")
    return root


def _err(fn, *a, **k) -> BadInput:
    with pytest.raises(BadInput) as ei:
        fn(*a, **k)
    return ei.value


def test_imagefolder_columns_order_and_labels(folder):
    df = load_manifest(folder)
    assert list(df.columns) == list(COLUMNS)
    assert df["image_id"].tolist() == sorted(df["image_id"])
    assert len(df) == 10 and class_counts(df) == [2] * 5
    for _, r in df.iterrows():
        assert r.image_id.split("/")[0] == CLASS_NAMES[r.label] == r.label_name
        assert os.path.isabs(r.path) and Path(r.path).is_file()
        assert r.patient_id is None and r.site is None and r.device is None
    assert df["label"].dtype == np.int64
    assert df.attrs["root"] == str(folder.resolve()) and df.attrs["source"] == "imagefolder"


def test_folder_names_case_insensitive_hidden_and_clutter_ignored(folder):
    for c in CLASS_NAMES:
        (folder / c).rename(folder / c.lower())
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / "f1" / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / "f2" / "Thumbs.db").write_bytes(b"junk")
    (folder / ".fibrobench-cache").mkdir()
    (folder / ".fibrobench-cache" / "x.u8").write_bytes(b"junk")
    (folder / "README.txt").write_text("notes")
    (folder / "f3" / "sub").mkdir()
    shutil.copy(folder / "f3" / "F3_0.png", folder / "f3" / "sub" / "nested.png")
    df = load_manifest(folder)
    assert len(df) == 11 and class_counts(df) == [2, 2, 2, 3, 2]
    assert "f3/sub/nested.png" in set(df["image_id"])


def test_directory_with_manifest_uses_it(synth_root):
    df = load_manifest(synth_root)
    man = pd.read_csv(synth_root / "manifest.csv")
    assert df.attrs["source"].endswith("manifest.csv")
    assert sorted(df["image_id"]) == sorted(man["path"])
    m = man.set_index("path")
    for _, r in df.iterrows():
        assert m.loc[r.image_id, "patient_id"] == r.patient_id
        assert m.loc[r.image_id, "label"] == r.label_name and m.loc[r.image_id, "device"] == r.device
    assert load_manifest(synth_root / "manifest.csv")["image_id"].tolist() == df["image_id"].tolist()


def test_csv_label_forms_and_absolute_paths(folder, tmp_path):
    rows = [("F0/F0_0.png", "f0"), ("F1/F1_0.png", "1"), ("F2/F2_0.png", "F2"), (str(folder / "F3/F3_0.png"), 3),
            ("F4/F4_0.png", " F4 ")]
    csv = folder / "list.csv"
    pd.DataFrame(rows, columns=["Path", "LABEL"]).to_csv(csv, index=False)
    df = load_manifest(csv)
    assert df["label"].tolist() == [0, 1, 2, 3, 4]
    assert df["image_id"].tolist() == [r[0] if not r[0].startswith("/") else "F3/F3_0.png" for r in rows]
    space = LabelSpace(FIVE)
    assert space.dataset_label("F9") is None and space.dataset_label("5") is None and space.dataset_label("f4") == "F4"


# ---------------------------------------------------------------- ImageFolder errors


def test_unknown_folder(folder):
    (folder / "F5").mkdir()
    e = _err(load_manifest, folder)
    assert e.field == "folder" and e.path.endswith("F5") and "F5" in str(e)


def test_two_folders_for_one_class(folder):
    (folder / "f0").mkdir() if not (folder / "f0").exists() else None
    if os.path.samefile(folder / "f0", folder / "F0"):
        pytest.skip("case-insensitive file system")
    shutil.copy(folder / "F0" / "F0_0.png", folder / "f0" / "x.png")
    assert _err(load_manifest, folder).field == "folder"


def test_empty_and_missing_class(folder):
    for f in (folder / "F2").iterdir():
        f.unlink()
    e = _err(load_manifest, folder)
    assert e.field == "label" and "F2" in str(e) and e.path.endswith("F2")
    (folder / "F2").rmdir()
    e = _err(load_manifest, folder)
    assert e.field == "folder" and "missing class folder F2" in str(e)


def test_non_image_file_in_class_folder(folder):
    (folder / "F1" / "notes.txt").write_text("hello")
    e = _err(load_manifest, folder)
    assert e.path.endswith("notes.txt") and e.field == "file"


def test_image_at_top_level(folder):
    shutil.copy(folder / "F0" / "F0_0.png", folder / "stray.png")
    assert _err(load_manifest, folder).path.endswith("stray.png")


def test_corrupt_and_truncated_images(folder):
    (folder / "F1" / "garbage.png").write_bytes(os.urandom(300))
    e = _err(load_manifest, folder)
    assert e.path.endswith("garbage.png") and e.field == "image"
    (folder / "F1" / "garbage.png").unlink()
    good = (folder / "F2" / "F2_0.png").read_bytes()
    (folder / "F2" / "cut.png").write_bytes(good[: len(good) // 2])
    e = _err(load_manifest, folder)
    assert e.path.endswith("cut.png") and e.field == "image"
    (folder / "F2" / "cut.png").unlink()
    (folder / "F3" / "empty.jpg").write_bytes(b"")
    assert _err(load_manifest, folder).path.endswith("empty.jpg")


def test_verify_can_be_skipped(folder):
    (folder / "F1" / "garbage.png").write_bytes(os.urandom(300))
    assert len(load_manifest(folder, verify=False)) == 11


def test_missing_path_and_wrong_kind(tmp_path):
    assert "does not exist" in str(_err(load_manifest, tmp_path / "nope"))
    (tmp_path / "x.json").write_text("{}")
    assert _err(load_manifest, tmp_path / "x.json").path.endswith("x.json")


# ---------------------------------------------------------------- CSV errors


def _csv(folder, text: str) -> Path:
    p = folder / "m.csv"
    p.write_text(text)
    return p


ALL = "".join(f"{c}/{c}_0.png,{c}\n" for c in CLASS_NAMES)


@pytest.mark.parametrize("text,field,needle", [
    ("path,stage\n" + ALL, "columns", "label"),
    ("label\nF0\n", "columns", "path"),
    ("path,label\n", None, "no rows"),
    ("", None, "malformed CSV"),
    ('path,label\n"F0/F0_0.png,F0\n' + ALL, None, "malformed CSV"),
    ("path,label\nF0/F0_0.png,F0,extra,fields\n" + ALL, "line 2", "malformed CSV"),
    ("path,label\n" + ALL + "F1/F1_1.png,F7\n", "label (line 7)", "unknown label"),
    ("path,label\n" + ALL + "F0/F0_0.png,F0\n", "path (line 7)", "duplicate"),
    ("path,label\n" + ALL + "./F0/../F0/F0_0.png,F0\n", "path (line 7)", "duplicate"),
    ("path,label\n" + ALL + "F0/missing.png,F0\n", "path (line 7)", "not found"),
    ("path,label\n" + ALL + ",F0\n", "path (line 7)", "empty"),
    ("path,label\n" + ALL + "m.csv,F0\n", "path (line 7)", "not an image"),
    ("path,label\n" + ALL + "F1/F1_1.png,F2\n", "label (line 7)", "folder"),
    ("path,label\n" + ALL.replace("F4/F4_0.png,F4\n", ""), "label", "F4 has no images"),
    ("path,label,patient_id\n" + "".join(f"{c}/{c}_0.png,{c},p{i}\n" for i, c in enumerate(CLASS_NAMES))
     + "F0/F0_1.png,F0,\n", "patient_id (line 7)", "empty"),
])
def test_csv_errors_name_file_and_field(folder, text, field, needle):
    p = _csv(folder, text)
    e = _err(load_manifest, p)
    assert e.path == str(p) or e.path == os.path.abspath(p)
    assert e.field == field, str(e)
    assert needle in str(e) and "m.csv" in str(e)


def test_csv_optional_columns(folder):
    text = "path,label,patient_id,site,device\n" + "".join(
        f"{c}/{c}_{i}.png,{c},pt{k},A,{'' if i else 'dev1'}\n" for k, c in enumerate(CLASS_NAMES) for i in range(2))
    df = load_manifest(_csv(folder, text))
    assert df["patient_id"].tolist() == [f"pt{k}" for k in range(5) for _ in range(2)]
    assert set(df["site"]) == {"A"} and df["device"].tolist().count(None) == 5


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_matches_reference_and_reacts_to_content_and_labels(folder):
    df = load_manifest(folder)
    ref = [[r.image_id, hashlib.sha256(Path(r.path).read_bytes()).hexdigest(), int(r.label)] for r in df.itertuples()]
    expect = hashlib.sha256(json.dumps(ref, separators=(",", ":"), sort_keys=True).encode()).hexdigest()
    fp = data_fingerprint(df)
    assert fp == expect
    assert data_fingerprint(df.sample(frac=1, random_state=0)) == fp       # row order does not matter
    relabelled = df.copy()
    relabelled.loc[0, "label"] = 1
    assert data_fingerprint(relabelled) != fp
    target = Path(df["path"][3])
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(target)
    assert data_fingerprint(load_manifest(folder)) != fp
