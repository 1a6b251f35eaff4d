"""Write tests/golden/summary-f0f4.json: the summary of a fixed fake five-class run, as main's code made it
before the label space became protocol data (issue 11). tests/test_task_golden.py compares today's summary
of the same fake run (legacy run.json without a task, and with the afif2025 task declared) against it.

Regenerate ONLY for a deliberate change of a metric's definition, with the code that defines "before" first on the
path (e.g. a checkout of main), and say so in the commit message:
    PYTHONPATH=/path/to/main-checkout python tests/golden/make_golden.py
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench.scripts.fake_run import make_fake_run
from reports.summary import summarize_run

HERE = Path(__file__).resolve().parent

FAKE = {"models": ("resnet50", "resnet50_cbam"), "n_patients": 60, "images_per_patient": 3, "seed": 3,
        "quality": {"resnet50": 0.5, "resnet50_cbam": 0.7}}
N_BOOT = 300


def golden_summary(run_dir) -> dict:
    """The summary with the machine-specific field (the run directory path) removed."""
    s = summarize_run(run_dir, n_boot=N_BOOT, seed=0)
    s.pop("run_dir")
    return s


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        s = golden_summary(make_fake_run(Path(tmp) / "run", **FAKE))
    (HERE / "summary-f0f4.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
    print("wrote", HERE / "summary-f0f4.json")
