"""The five-stage results do not change now that the label space is protocol data (issue 11).

tests/golden/summary-f0f4.json is the summary main's code (without this change) gives: first written at f937318,
rewritten with main at 8d6f677 when main's statistics fixes (issue 13: sklearn macro convention, clustered DeLong)
changed the numbers themselves; `PYTHONPATH=MAIN_CHECKOUT python tests/golden/make_golden.py` rewrites it. The same fake run is summarised today twice: as an old run dir (run.json without a task, read as
the legacy F0..F4 ordinal task) and with protocols/afif2025/protocol.yaml's task recorded in run.json. Every value
of the golden must come back; the only additions allowed are listed in NEW_KEYS.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "golden"))
from make_golden import FAKE, golden_summary  # noqa: E402

from bench.scripts.fake_run import make_fake_run  # noqa: E402

from protocols.config import load_protocol  # noqa: E402

GOLDEN = json.loads((HERE / "golden" / "summary-f0f4.json").read_text())
NEW_KEYS = {"task", "linear_kappa"}   # added by issue 11: the task itself, and linear kappa for ordinal tasks


def _diff(gold, new, path=""):
    """Differences between the golden and a new summary; keys in NEW_KEYS may appear only in the new one."""
    if isinstance(gold, dict):
        if not isinstance(new, dict):
            return [f"{path}: {new!r} is not a mapping"]
        out = [f"{path}.{k}: missing" for k in gold if k not in new]
        out += [f"{path}.{k}: unexpected new key" for k in new if k not in gold and k not in NEW_KEYS]
        for k in gold:
            if k in new:
                out += _diff(gold[k], new[k], f"{path}.{k}")
        return out
    if isinstance(gold, list):
        if not isinstance(new, list) or len(gold) != len(new):
            return [f"{path}: {new!r} != {gold!r}"]
        return [d for i, (a, b) in enumerate(zip(gold, new)) for d in _diff(a, b, f"{path}[{i}]")]
    if isinstance(gold, float) and isinstance(new, float):
        return [] if new == pytest.approx(gold, rel=1e-6, abs=1e-12) else [f"{path}: {new!r} != {gold!r}"]
    return [] if gold == new else [f"{path}: {new!r} != {gold!r}"]


def _summary(tmp_path, **extra):
    return json.loads(json.dumps(golden_summary(make_fake_run(tmp_path / "run", **FAKE, **extra))))


def test_the_diff_catches_a_changed_value():
    changed = json.loads(json.dumps(GOLDEN))
    changed["models"]["resnet50"]["ensemble"]["qwk"]["value"] += 1e-6
    del changed["models"]["resnet50"]["ensemble"]["auroc_cutoffs"][">=F3"]
    changed["models"]["resnet50"]["ensemble"]["mystery"] = 1
    found = _diff(GOLDEN, changed)
    assert len(found) == 3 and any("qwk" in d for d in found) and any(">=F3" in d for d in found)


def test_old_run_dir_without_task_summarises_as_before(tmp_path):
    new = _summary(tmp_path)
    assert _diff(GOLDEN, new) == []
    assert new["task"]["source"].startswith("legacy")
    assert new["task"]["cutoffs"] == {">=F2": "F2", ">=F3": "F3", "F4": "F4"}


def test_afif2025_task_declared_gives_the_same_summary(tmp_path):
    task = load_protocol(HERE.parent / "protocols/afif2025/protocol.yaml").task.to_dict()
    assert task["classes"] == ["F0", "F1", "F2", "F3", "F4"] and task["ordinal"] is True
    new = _summary(tmp_path, task=task)
    # the recorded protocol now holds the task, so its hash differs: that and nothing else
    assert new.pop("protocol_sha256") != GOLDEN["protocol_sha256"]
    assert _diff({k: v for k, v in GOLDEN.items() if k != "protocol_sha256"}, new) == []
    assert new["task"] == {"classes": task["classes"], "ordinal": True, "positive": None,
                           "cutoffs": {">=F2": "F2", ">=F3": "F3", "F4": "F4"}, "source": "run.json protocol.task"}
    ens = new["models"]["resnet50_cbam"]["ensemble"]
    assert set(ens["auroc_cutoffs"]) == {">=F2", ">=F3", "F4"} and "linear_kappa" in ens and "auroc" not in ens
