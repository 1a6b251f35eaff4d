"""Executors: submitit array jobs sharing the run dir (Debug + Local executors), and kill -9 then resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protocols.runfiles import read_logits
from split_checks import check_run_dir
from tiny_run import run_options, tiny_protocol

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")          # for the subprocesses too
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from protocols.synth import generate_dataset
    d = tmp_path_factory.mktemp("data")
    generate_dataset(d, n_patients=8, size=(64, 48), seed=1, overwrite=True)
    return d


def _protocol(tmp_path, epochs=1):
    return tiny_protocol(tmp_path, "tiny-ex", ["efficientnet_b0"], epochs=epochs)


_opts = run_options


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["debug", "local"])
def test_submitit_array_shares_run_dir(tmp_path, tiny_data, kind):
    import submitit

    from bench.executors import SlurmExecutor
    from bench.runner import run

    out = tmp_path / "run"
    folder = out / "slurm"
    ex = submitit.DebugExecutor(folder=str(folder)) if kind == "debug" else submitit.LocalExecutor(folder=str(folder))
    if kind == "local":
        ex.update_parameters(timeout_min=10)
    folds = [0, 1] if kind == "debug" else [1]       # LocalExecutor starts a process per task: keep it to one
    code, run_dir = run(_protocol(tmp_path), _opts(tiny_data, out, executor="slurm", folds=folds),
                        executor=SlurmExecutor(folder, {}, "cpu", executor=ex))
    assert code == 0 and run_dir == out
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "complete" and doc["options"]["executor"] == "slurm"
    for k in folds:
        done = json.loads((out / "jobs" / "efficientnet_b0" / f"fold{k}" / "DONE").read_text())
        assert done["fold"] == k
    assert doc["ensemble"]["efficientnet_b0"]["members"] == folds
    assert (out / "ensemble" / "efficientnet_b0.npz").exists()
    check_run_dir(out)
    if kind == "local":   # really ran elsewhere: submitit wrote per-task logs into the run dir
        assert list(folder.glob("*_log.out"))


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_identical_logits(tmp_path, tiny_data):
    from bench.runner import run

    proto = _protocol(tmp_path, epochs=3)
    ref = tmp_path / "ref"
    assert run(proto, _opts(tiny_data, ref, folds=[0]))[0] == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(proto), "--data", str(tiny_data), "--out", str(out),
           "--device", "cpu", "--folds", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    hist = out / "jobs" / "efficientnet_b0" / "fold0" / "history.csv"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if hist.exists() and len(hist.read_text().splitlines()) >= 2:   # header + epoch 1 saved
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job = out / "jobs" / "efficientnet_b0" / "fold0"
    assert not (job / "DONE").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"   # killed: nothing claims completion
    assert run(proto, _opts(tiny_data, out, folds=[0]))[0] == 0
    for name in ("val_logits.npz", "test_logits.npz"):
        a, b = read_logits(ref / "jobs/efficientnet_b0/fold0" / name), read_logits(job / name)
        assert np.array_equal(a["logits"], b["logits"])
    assert len((job / "history.csv").read_text().splitlines()) == 4
    check_run_dir(out)


def test_make_executor_kinds(tmp_path):
    from bench.executors import LocalExecutor, SlurmExecutor, make_executor
    assert isinstance(make_executor("local", tmp_path), LocalExecutor)
    s = make_executor("slurm", tmp_path, slurm={"timeout_min": 5})
    assert isinstance(s, SlurmExecutor) and s.folder == tmp_path / "slurm" and s.params == {"timeout_min": 5}
    with pytest.raises(ValueError):
        make_executor("k8s", tmp_path)
    assert s.run(lambda *a: 1 / 0, tmp_path, []) == []


def _record_job(run_dir, model, fold, device, progress):
    return {"run_dir": run_dir, "model": model, "fold": fold, "device": device, "progress": progress}


def test_executors_call_the_job_function_they_are_given(tmp_path):
    """The executor knows nothing of bench.runner: it maps the callable it gets over the (model, fold) pairs."""
    import submitit

    from bench.executors import LocalExecutor, SlurmExecutor
    jobs = [("a", 0), ("a", 1), ("b", 0)]
    got = LocalExecutor("cpu", progress=False).run(_record_job, tmp_path, jobs)
    assert got == [{"run_dir": str(tmp_path), "model": m, "fold": k, "device": "cpu", "progress": False}
                   for m, k in jobs]
    ex = SlurmExecutor(tmp_path / "slurm", {}, "cpu", executor=submitit.DebugExecutor(folder=str(tmp_path / "s")))
    assert ex.run(_record_job, tmp_path, jobs) == got


def _fail_on_b(run_dir, model, fold, device, progress):
    if model == "b":
        raise ValueError("b is broken")
    return _record_job(run_dir, model, fold, device, progress)


def test_process_pool_spreads_jobs_over_worker_processes(tmp_path):
    """The pool the local executor uses for several GPUs, here with two CPU workers: every job once, in order,
    with the worker's device; one failing job fails the pool after the others ran."""
    from bench.executors import process_pool
    jobs = [("a", 0), ("a", 1), ("a", 2)]
    got = process_pool(_record_job, str(tmp_path), jobs, ["cpu", "cpu"])
    assert [(g["model"], g["fold"], g["device"]) for g in got] == [("a", 0, "cpu"), ("a", 1, "cpu"), ("a", 2, "cpu")]
    with pytest.raises(RuntimeError, match="(?s)b fold 0:.*ValueError: b is broken"):
        process_pool(_fail_on_b, str(tmp_path), [("a", 0), ("b", 0)], ["cpu", "cpu"])


@pytest.mark.gpu
def test_local_executor_one_worker_per_gpu(tmp_path, tiny_data):
    import torch

    from bench.runner import run
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2+ GPUs")
    out = tmp_path / "run"
    assert run(_protocol(tmp_path), _opts(tiny_data, out, device="auto"))[0] == 0
    devices = {json.loads((out / "jobs/efficientnet_b0" / f"fold{k}" / "DONE").read_text())["device"] for k in (0, 1)}
    assert len(devices) == 2
