"""Job packing: worker processes give the same logits as one job at a time; two runs on one --out train each job
once; largest jobs first; the --jobs-per-gpu plan; the compile field with its eager fallback."""
from __future__ import annotations

import json
import os
import re
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
MODELS = ["efficientnet_b0", "timm/test_resnet"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from protocols.synth import generate_dataset
    d = tmp_path_factory.mktemp("data")
    generate_dataset(d, n_patients=8, size=(64, 48), seed=1, overwrite=True)
    return d


def _protocol(tmp_path, models=MODELS, **train):
    return tiny_protocol(tmp_path, "tiny-pack", models, **train)


_opts = run_options


def _logits(run_dir, model, fold, part="test"):
    return read_logits(Path(run_dir) / "jobs" / model / f"fold{fold}" / f"{part}_logits.npz")["logits"]


def _done(run_dir, model, fold):
    return json.loads((Path(run_dir) / "jobs" / model / f"fold{fold}" / "DONE").read_text())


# ---------------------------------------------------------------- ordering and planning (pure)


def test_jobs_of_starts_the_largest_models_first():
    from bench.runner import jobs_of
    run = {"protocol": {"models": ["small", "big", "mid", "unknown"]}, "options": {"folds": [0, 1]},
           "models": {"small": {"flops_per_image": 10, "params": 5}, "big": {"flops_per_image": 1000, "params": 1},
                      "mid": {"flops_per_image": 100, "params": 9}, "unknown": {"flops_per_image": None, "params": 7}}}
    assert jobs_of(run) == [("big", 0), ("big", 1), ("mid", 0), ("mid", 1), ("small", 0), ("small", 1),
                            ("unknown", 0), ("unknown", 1)]
    run["models"] = {}                                   # nothing known: the protocol's order
    assert [m for m, _ in jobs_of(run)][::2] == ["small", "big", "mid", "unknown"]


def test_plan_jobs_per_gpu_divides_free_memory_by_the_largest_job():
    from bench.packing import COMPILE_MARGIN, plan_jobs_per_gpu
    gb = 2**30
    plan = plan_jobs_per_gpu({"a": 3 * gb, "b": 9 * gb}, free_bytes=100 * gb, n_jobs=30, context_bytes=gb,
                             reserve=0.1)
    assert plan["jobs_per_gpu"] == 9 and plan["largest_model"] == "b"      # 90 GB usable // 10 GB
    assert plan_jobs_per_gpu({"a": 3 * gb}, 100 * gb, n_jobs=2, context_bytes=gb)["jobs_per_gpu"] == 2   # jobs
    assert plan_jobs_per_gpu({"a": 50 * gb}, 10 * gb, n_jobs=6, context_bytes=gb)["jobs_per_gpu"] == 1   # never 0
    assert plan_jobs_per_gpu({"a": 0}, 100 * gb, n_jobs=99, context_bytes=gb, cap=4)["jobs_per_gpu"] == 4
    compiled = plan_jobs_per_gpu({"a": 9 * gb}, 100 * gb, 30, compiled=True, context_bytes=gb, reserve=0.1)
    assert compiled["jobs_per_gpu"] == int(90 // (10 * COMPILE_MARGIN))
    with pytest.raises(ValueError):
        plan_jobs_per_gpu({}, gb, 3)


def test_slots_cpu_workers_and_gpus_interleaved(monkeypatch, tmp_path):
    import torch

    import bench.packing
    from bench.executors import LocalExecutor
    jobs = [("a", k) for k in range(5)]
    assert LocalExecutor("cpu").slots(tmp_path, jobs) == ["cpu"]
    assert LocalExecutor("cpu", workers=3).slots(tmp_path, jobs) == ["cpu"] * 3
    assert LocalExecutor("cpu", workers=9).slots(tmp_path, jobs[:2]) == ["cpu"] * 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert LocalExecutor("auto").slots(tmp_path, jobs) == ["cuda:0", "cuda:1"]
    assert LocalExecutor("cuda", jobs_per_gpu=2).slots(tmp_path, jobs) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert LocalExecutor("cuda", jobs_per_gpu=3).slots(tmp_path, jobs) == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    assert LocalExecutor("cuda:1", jobs_per_gpu=2).slots(tmp_path, jobs) == ["cuda:1", "cuda:1"]
    assert LocalExecutor("auto", workers=1, jobs_per_gpu=2).slots(tmp_path, jobs) == ["cuda:0", "cuda:0"]
    seen = {}

    def fake_auto(run_dir, models, device, n_jobs, probe):
        seen.update(models=models, device=device, n_jobs=n_jobs, probe=probe)
        return 3
    monkeypatch.setattr(bench.packing, "auto_jobs_per_gpu", fake_auto)
    assert LocalExecutor("cuda", workers=1, jobs_per_gpu="auto", memory_probe=len).slots(tmp_path, jobs) == ["cuda:0"] * 3
    assert seen == {"models": ["a"], "device": "cuda:0", "n_jobs": 5, "probe": len}


def test_threads_per_worker(monkeypatch):
    from bench.executors import threads_per_worker
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_worker(4) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores and threads_per_worker(10 * cores) == 1


def _record(run_dir, model, fold, device, progress):
    if model == "killed":
        os.kill(os.getpid(), 9)
    return {"model": model, "fold": fold, "pid": os.getpid()}


def test_process_pool_survives_a_worker_killed_mid_job(tmp_path):
    """kill -9 of a worker (OOM killer): its job is reported as failed, the others still run, nothing hangs."""
    from bench.executors import process_pool
    jobs = [("killed", 0), ("a", 0), ("a", 1), ("a", 2)]
    with pytest.raises(RuntimeError, match=r"killed fold 0: worker pid \d+ died \(exit code -9\)") as e:
        process_pool(_record, str(tmp_path), jobs, ["cpu", "cpu"], threads=1)
    assert "a fold" not in str(e.value)


def test_jobs_per_gpu_option_is_validated(tmp_path, capsys):
    from bench.cli import main
    assert main(["run", str(_protocol(tmp_path)), "--data", str(tmp_path), "--jobs-per-gpu", "0"]) == 2
    assert "--jobs-per-gpu" in capsys.readouterr().err       # (--workers 0: tests/test_hardening.py)
    assert main(["run", str(_protocol(tmp_path)), "--data", str(tmp_path), "--jobs-per-gpu", "two"]) == 2


# ---------------------------------------------------------------- packed runs


@pytest.mark.slow
def test_two_cpu_workers_give_bit_identical_logits(tmp_path, tiny_data, monkeypatch):
    """Four jobs (two models x two folds) packed onto two worker processes vs one after another in this process,
    all at one thread (CPU training repeats bitwise at a fixed thread count, whatever OMP_NUM_THREADS the suite has)."""
    import torch

    from bench.runner import run
    monkeypatch.setenv("OMP_NUM_THREADS", "1")            # the workers' thread count
    n = torch.get_num_threads()
    torch.set_num_threads(1)                               # this process's
    try:
        proto = _protocol(tmp_path)
        seq, packed = tmp_path / "seq", tmp_path / "packed"
        assert run(proto, _opts(tiny_data, seq))[0] == 0
        assert run(proto, _opts(tiny_data, packed, workers=2))[0] == 0
    finally:
        torch.set_num_threads(n)
    pids = set()
    for m in MODELS:
        for k in (0, 1):
            for part in ("val", "test"):
                assert np.array_equal(_logits(seq, m, k, part), _logits(packed, m, k, part)), (m, k, part)
            d = _done(packed, m, k)
            assert d["torch_threads"] == 1 and d["trained_by"]["pid"] != os.getpid()
            pids.add(d["trained_by"]["pid"])
            assert _done(seq, m, k)["trained_by"]["pid"] == os.getpid()
    assert len(pids) == 2                                   # really two worker processes
    assert json.loads((packed / "run.json").read_text())["options"]["workers"] == 2
    check_run_dir(packed)
    assert not list(packed.glob("jobs/**/LOCK"))


@pytest.mark.slow
def test_two_runs_on_one_out_train_each_job_once(tmp_path, tiny_data):
    """Two `fibrobench run` processes on the same --out at once: every job trained by exactly one of them, both
    wait for the other's jobs and exit 0 with a complete run."""
    proto = _protocol(tmp_path, epochs=2)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(proto), "--data", str(tiny_data), "--out", str(out),
           "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    res = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in res]
    trained = [set(re.findall(r"(\S+) fold (\d+): training \(pid", err)) for _, err in res]
    every = {(m, str(k)) for m in MODELS for k in (0, 1)}
    assert not trained[0] & trained[1], trained
    assert trained[0] | trained[1] == every, trained
    for m, k in every:
        assert _done(out, m, k)["trained_by"]["pid"] in {p.pid for p in procs}
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    check_run_dir(out)


@pytest.mark.slow
def test_run_waits_for_a_job_held_by_a_live_process_and_takes_over_a_dead_one(tmp_path, tiny_data, monkeypatch):
    """A job locked by a live process is not started; once that holder is gone, the waiting run trains it."""
    import bench.runner as runner
    from protocols.joblock import LOCK, holder_info
    proto = _protocol(tmp_path, models=["timm/test_resnet"])
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        job = out / "jobs/timm/test_resnet/fold1"
        job.mkdir(parents=True)
        (job / LOCK).write_text(json.dumps({**holder_info(), "pid": holder.pid, "pid_start": None}))
        monkeypatch.setattr(runner, "POLL_S", (0.05, 0.2))
        sleeps = []
        real_sleep = time.sleep

        def sleep(s):                           # the run is waiting: let the holder die after a few looks
            sleeps.append(s)
            if len(sleeps) == 3:
                holder.kill()
                holder.wait()
            real_sleep(s)
        monkeypatch.setattr(runner.time, "sleep", sleep)
        assert runner.run(proto, _opts(tiny_data, out))[0] == 0
    finally:
        holder.kill()
        holder.wait()
    assert len(sleeps) >= 3
    assert "is gone" in _done(out, "timm/test_resnet", 1)["lock_taken_over_from"]
    assert "lock_taken_over_from" not in _done(out, "timm/test_resnet", 0)


# ---------------------------------------------------------------- compile


def test_compile_field_is_validated_and_hashed_only_when_set(tmp_path):
    from protocols.config import apply_overrides, load_protocol, protocol_sha256
    from protocols.errors import BadInput
    p = load_protocol(_protocol(tmp_path))
    assert p.train.compile == "none" and "compile" not in p.to_dict()["train"]
    q = apply_overrides(p, {"train.compile": "reduce-overhead"})
    assert q.train.compile == "reduce-overhead" and q.to_dict()["train"]["compile"] == "reduce-overhead"
    assert protocol_sha256(q) != protocol_sha256(p)
    assert protocol_sha256(apply_overrides(q, {"train.compile": "none"})) == protocol_sha256(p)
    with pytest.raises(BadInput, match="train.compile"):
        apply_overrides(p, {"train.compile": "fastest"})


def _failing_backend(gm, example_inputs):
    raise RuntimeError("forced compiler failure for the test")


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager_with_identical_results(tmp_path, tiny_data, monkeypatch, caplog):
    """A backend that fails: one warning line, DONE says fallback, and the logits are those of an eager run (the
    compile trial restored weights, BatchNorm statistics and RNG streams)."""
    import functools

    import torch

    from bench.runner import run
    m = "timm/test_resnet"
    eager = tmp_path / "eager"
    assert run(_protocol(tmp_path, models=[m]), _opts(tiny_data, eager, folds=[0]))[0] == 0
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=_failing_backend))
    out = tmp_path / "fallback"
    with caplog.at_level("WARNING", logger="fibrobench.run"):
        assert run(_protocol(tmp_path, models=[m], compile="default"), _opts(tiny_data, out, folds=[0]))[0] == 0
    warn = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warn) == 1 and "training eager" in warn[0] and "\n" not in warn[0]
    c = _done(out, m, 0)["compile"]
    assert c["mode"] == "default" and c["status"] == "fallback" and "forced compiler failure" in c["error"]
    for part in ("val", "test"):
        assert np.array_equal(_logits(eager, m, 0, part), _logits(out, m, 0, part))
    assert json.loads((out / "run.json").read_text())["protocol"]["train"]["compile"] == "default"
    assert _done(eager, m, 0)["compile"]["status"] == "eager"


@pytest.mark.slow
def test_compile_on_cpu_trains_within_tolerance_of_eager(tmp_path):
    """A real torch.compile (inductor, C++ on the CPU: gcc is here) of a small model for one epoch: compiled,
    compile time recorded apart from the epoch's speed, logits close to the eager run's."""
    import shutil

    import torch
    from torch import nn

    from protocols.config import apply_overrides, load_protocol
    from protocols.trainer import train_fold
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler: inductor cannot build CPU kernels")
    p = apply_overrides(load_protocol(_protocol(tmp_path)), {"train.batch_size": 8, "train.eval_batch_size": 16})
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = np.arange(40) % 3
    ids = [f"i{k}" for k in range(40)]
    part = {"train": ids[:22], "val": ids[22:31], "test": ids[31:]}     # 22 = 2 x 8 + 6: two train shapes

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 3))
    done = {}
    for mode in ("none", "default"):
        q = apply_overrides(p, {"train.compile": mode})
        done[mode] = train_fold(tmp_path / mode, q, net(), images, labels, ids, part, seed=0, device="cpu")
    c = done["default"]["compile"]
    assert c["status"] == "compiled" and c["error"] is None and c["seconds"] > 0
    assert done["none"]["compile"] == {"mode": "none", "status": "eager", "seconds": 0.0, "error": None}
    for name in ("val_logits.npz", "test_logits.npz"):
        a, b = read_logits(tmp_path / "none" / name)["logits"], read_logits(tmp_path / "default" / name)["logits"]
        assert np.allclose(a, b, rtol=1e-3, atol=1e-4), np.abs(a - b).max()


def test_report_provenance_shows_compile_mode_status_and_packing(tmp_path):
    """The report's provenance row: compile mode from run.json, per-job status from DONE (a fallback named, its
    error text escaped), compile seconds apart from speed, and the executor's packing options."""
    from bench.scripts.fake_run import make_fake_run
    from reports.render import render_report
    rd = make_fake_run(tmp_path / "r", models=("resnet50",), n_patients=25)
    run = json.loads((rd / "run.json").read_text())
    run["protocol"].setdefault("train", {})["compile"] = "reduce-overhead"
    run.setdefault("options", {}).update(executor="local", workers=None, jobs_per_gpu=3)
    (rd / "run.json").write_text(json.dumps(run))
    for k, d in enumerate(sorted((rd / "jobs" / "resnet50").glob("fold*"))):
        done = json.loads((d / "DONE").read_text() or "{}")
        done["compile"] = ({"mode": "reduce-overhead", "status": "fallback", "seconds": 1.0,
                            "error": "BackendCompilerFailed: <script>x</script>"} if k == 0 else
                           {"mode": "reduce-overhead", "status": "compiled", "seconds": 10.0, "error": None})
        (d / "DONE").write_text(json.dumps(done))
    html, _ = render_report(rd, n_boot=50)
    row = re.search(r"<td>execution</td><td>(.*?)</td></tr>", html, re.S).group(1)
    assert "<code>reduce-overhead</code>" in row and "fallback 1" in row and "compiled 4" in row
    assert "compile time 40.0 s" in row and "jobs per GPU 3" in row
    assert "resnet50 fold 0: BackendCompilerFailed: &lt;script&gt;" in row and "<script>" not in row


def test_lpt_makespan_and_projection():
    from bench.scripts.pack_walltime import lpt_makespan, project
    assert lpt_makespan([5, 4, 3, 3, 3], 1) == 18
    assert lpt_makespan([5, 4, 3, 3, 3], 2) == 10          # LPT's textbook non-optimal case (optimum 9)
    assert lpt_makespan([7, 1, 1], 5) == 7 and lpt_makespan([], 3) == 0
    jobs = [{"compile_s": 10.0, "epochs": 2, "epoch_s": 5.0}, {"compile_s": 0.0, "epochs": 2, "epoch_s": 1.0}]
    seq = project(jobs, wall_s=32.0, slots=1, folds=5, epochs=100)
    assert seq["fixed_s"] == 32.0 - 22.0 and seq["projected_s"] == 10.0 + 5 * (10.0 + 500.0) + 5 * 100.0
    packed = project(jobs, wall_s=25.0, slots=2, folds=5, epochs=100)
    assert packed["fixed_s"] == 25.0 - 20.0
    assert packed["projected_s"] == 5.0 + lpt_makespan([510.0] * 5 + [100.0] * 5, 2)


GB = 2**30
PROBES = []


def _fake_probe(run_dir, models, device):
    """Stands in for bench.runner.probe_memory (which needs CUDA): fixed peaks, 40 GB free."""
    return [{"model": m, "peak_reserved_bytes": (2 + 2 * i) * GB, "peak_allocated_bytes": GB,
             "free_at_start_bytes": 40 * GB, "total_bytes": 80 * GB, "device": device, "gpu": "fake"}
            for i, m in enumerate(models)]


def test_auto_jobs_per_gpu_probes_once_and_reuses_packing_json(tmp_path, monkeypatch):
    import bench.packing as packing
    (tmp_path / "run.json").write_text(json.dumps({"protocol_sha256": "abc", "protocol": {"train": {}}}))
    calls = []
    real = packing.measure_peaks
    monkeypatch.setattr(packing, "measure_peaks", lambda *a: calls.append(a) or real(*a))
    n = packing.auto_jobs_per_gpu(tmp_path, ["a", "b"], "cuda:0", n_jobs=10, probe=_fake_probe)
    want = int(40 * GB * 0.9 // (4 * GB + packing.CONTEXT_BYTES))         # largest peak: b, 4 GB
    assert n == want and len(calls) == 1
    doc = json.loads((tmp_path / "packing.json").read_text())
    assert doc["schema"] == "fibrobench.packing/1" and doc["peaks"] == {"a": 2 * GB, "b": 4 * GB}
    assert packing.auto_jobs_per_gpu(tmp_path, ["a"], "cuda:0", n_jobs=30, probe=_fake_probe) == \
        int(40 * GB * 0.9 // (2 * GB + packing.CONTEXT_BYTES)) and len(calls) == 1          # reused, not re-probed
    (tmp_path / "run.json").write_text(json.dumps({"protocol_sha256": "other", "protocol": {"train": {
        "compile": "default"}}}))
    assert packing.auto_jobs_per_gpu(tmp_path, ["a", "b"], "cuda:0", n_jobs=10, probe=_fake_probe) == \
        int(40 * GB * 0.9 // ((4 * GB + packing.CONTEXT_BYTES) * packing.COMPILE_MARGIN)) and len(calls) == 2
    with pytest.raises(ValueError, match="probe"):
        (tmp_path / "packing.json").unlink()
        packing.auto_jobs_per_gpu(tmp_path, ["a"], "cuda:0", n_jobs=10)


# ---------------------------------------------------------------- on a GPU (skipped without CUDA)


@pytest.mark.gpu
def test_two_jobs_packed_on_one_gpu_match_running_alone(tmp_path, tiny_data):
    """--jobs-per-gpu 2 on one GPU, deterministic protocol: the same logits as one job at a time."""
    from bench.runner import run
    proto = _protocol(tmp_path)
    seq, packed = tmp_path / "seq", tmp_path / "packed"
    assert run(proto, _opts(tiny_data, seq, device="cuda:0"))[0] == 0
    assert run(proto, _opts(tiny_data, packed, device="cuda:0", jobs_per_gpu=2))[0] == 0
    pids = {_done(packed, m, k)["trained_by"]["pid"] for m in MODELS for k in (0, 1)}
    assert len(pids) == 2
    for m in MODELS:
        for k in (0, 1):
            assert np.array_equal(_logits(seq, m, k), _logits(packed, m, k)), (m, k)


@pytest.mark.gpu
def test_auto_jobs_per_gpu_measures_a_real_peak(tmp_path, tiny_data):
    import torch

    from bench.runner import run
    out = tmp_path / "auto"
    assert run(_protocol(tmp_path), _opts(tiny_data, out, device="cuda:0", jobs_per_gpu="auto"))[0] == 0
    doc = json.loads((out / "packing.json").read_text())
    free, total = torch.cuda.mem_get_info(0)
    for m in MODELS:
        assert 0 < doc["peaks"][m] < total
    assert 0 < doc["free_bytes"] <= total


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_modes_train_on_the_gpu(tmp_path, tiny_data, mode):
    from bench.runner import run
    out = tmp_path / mode
    assert run(_protocol(tmp_path, models=["timm/test_resnet"], compile=mode),
               _opts(tiny_data, out, device="cuda:0", folds=[0]))[0] == 0
    c = _done(out, "timm/test_resnet", 0)["compile"]
    assert c["status"] == "compiled", c
    assert np.isfinite(_logits(out, "timm/test_resnet", 0)).all()
