"""The afif2025 protocol's models on one GPU, measured end to end: sequential vs packed vs packed + compiled.

One device call (default budget 560 s), in this order, each step skipped when the budget left is too small:
  1. `fibrobench synth` of the paper's size (900 patients ~ 6,300 frames of 800x600), the image cache warmed;
  2. for each mode, `fibrobench run` of every model of protocols/afif2025/protocol.yaml (random init, leakage gate
     off), fold 0, 2 epochs, in a subprocess with a timeout, GPU utilisation and memory sampled (pynvml or
     nvidia-smi) meanwhile:  sequential (one job at a time) | packed (--jobs-per-gpu, default auto) |
     packed + compiled (also --compile, default reduce-overhead: inductor + CUDA graphs);
  3. the harness overhead: bench.scripts.train_throughput (fold job vs bare loop) eager and compiled;
  4. `fibrobench latency` of the same models for their peak memory (the earlier GPU figures were unusable);
  5. the GPU-marked unit tests; 6. the latency compile check (resnet50 bf16 --compile).
Per mode: measured wall seconds, aggregate training images/s (train images of all jobs / wall), per-job
steady-state images/s (epoch 2), compile seconds, peak memory, mean GPU utilisation, and the projected wall time
of the whole protocol (5 folds x 100 epochs): the measured wall minus the modelled time of the measured jobs
(startup and fixed costs stay) plus the modelled time of the 30 full jobs, each job = compile + 100 x its measured
epoch-2 seconds (training + validation), scheduled largest first over the mode's worker slots (LPT).
JSON (schema fibrobench.pack_walltime/1) is rewritten after every step, so a killed call keeps what it measured.

  python -m bench.scripts.pack_walltime --json bench/results/pack_walltime_h200.json          # on the GPU
  python -m bench.scripts.pack_walltime --tiny --out /tmp/pw --json /tmp/pw/pack_walltime.json  # CPU dry run
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "fibrobench.pack_walltime/1"
PROTOCOL = ROOT / "protocols/afif2025/protocol.yaml"


# ---------------------------------------------------------------- pure pieces


def lpt_makespan(durations: list[float], slots: int) -> float:
    """Wall time of independent jobs run longest first, each on the slot that frees first (LPT list scheduling)."""
    free = [0.0] * max(1, int(slots))
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def project(jobs: list[dict], wall_s: float, slots: int, folds: int = 5, epochs: int = 100) -> dict:
    """Projected wall of `folds` x `epochs` from jobs measured at 2 epochs (see the module docstring)."""
    measured = [j["compile_s"] + j["epochs"] * j["epoch_s"] for j in jobs]
    full = [j["compile_s"] + epochs * j["epoch_s"] for j in jobs for _ in range(folds)]
    fixed = max(0.0, wall_s - lpt_makespan(measured, slots))
    total = fixed + lpt_makespan(full, slots)
    return {"folds": folds, "epochs": epochs, "slots": slots, "fixed_s": fixed, "projected_s": total,
            "projected_min": total / 60}


class GpuSampler:
    """Samples GPU utilisation % and used memory every `every_s` in a thread (pynvml, else nvidia-smi)."""

    def __init__(self, index: int = 0, every_s: float = 0.5):
        self.index, self.every_s, self.samples = index, every_s, []
        self._stop = threading.Event()
        self._read = self._reader()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _reader(self):
        try:
            import pynvml
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return lambda: (pynvml.nvmlDeviceGetUtilizationRates(h).gpu, pynvml.nvmlDeviceGetMemoryInfo(h).used)
        except Exception:  # noqa: BLE001 - no pynvml: nvidia-smi, or nothing
            pass
        if shutil.which("nvidia-smi") is None:
            return None

        def smi():
            r = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
            u, m = r.stdout.strip().splitlines()[0].split(",")
            return float(u), float(m) * 2**20
        return smi

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001 - a missed sample
                pass
            self._stop.wait(self.every_s)

    def __enter__(self):
        if self._read is not None:
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._t.is_alive():
            self._t.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"source": None if self._read is None else "no samples", "n": 0}
        u = [s[0] for s in self.samples]
        return {"n": len(u), "every_s": self.every_s, "mean_util_pct": sum(u) / len(u),
                "busy_fraction": sum(x > 0 for x in u) / len(u), "max_memory_used_bytes": max(s[1] for s in self.samples)}


# ---------------------------------------------------------------- steps


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)


def sh(cmd: list[str], timeout: float, log: Path) -> dict:
    """Run a command with a timeout; its output into `log`; {rc, seconds, timed_out}."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    print(f"[pack_walltime] $ {' '.join(cmd)}  (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(1.0, timeout)).returncode
            timed_out = False
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
    out = {"cmd": cmd, "rc": rc, "seconds": time.perf_counter() - t0, "timed_out": timed_out, "log": str(log)}
    print(f"[pack_walltime]   rc {rc} in {out['seconds']:.1f} s{' (TIMED OUT)' if timed_out else ''}",
          file=sys.stderr, flush=True)
    return out


def read_jobs(run_dir: Path) -> list[dict]:
    """Per finished job: model, fold, steady images/s, epoch-2 seconds, compile, peak memory (from DONE/history)."""
    out = []
    for done_path in sorted(run_dir.glob("jobs/**/DONE")):
        d = json.loads(done_path.read_text())
        hist = list(csv.DictReader(open(done_path.parent / "history.csv")))
        c = d.get("compile") or {}
        out.append({"model": d["model"], "fold": d["fold"], "epochs": len(hist),
                    "images_per_s": d["images_per_s"], "epoch_s": float(hist[-1]["seconds"]),
                    "train_images": sum(int(d["n_train_per_epoch"]) for _ in hist),
                    "compile_mode": c.get("mode"), "compile_status": c.get("status"),
                    "compile_s": float(c.get("seconds") or 0.0), "compile_error": c.get("error"),
                    "peak_memory_bytes": d.get("peak_memory_bytes"), "job_wall_s": d.get("wall_seconds_this_process"),
                    "device": d.get("device"), "torch_threads": d.get("torch_threads")})
    return out


def run_mode(name: str, a, data: Path, proto: Path, budget: Budget, gpu: bool) -> dict:
    out = Path(a.out) / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.cli", "run", str(proto), "--data", str(data), "--out", str(out),
           "--folds", "0", "--epochs", str(a.epochs), "--device", a.device, "--cache-dir", str(Path(a.out) / "cache"),
           "--no-progress"]
    if a.models:
        cmd += ["--models", a.models]
    slots, per_gpu = 1, a.jobs_per_gpu
    packing = Path(a.out) / "runs" / "packed" / "packing.json"
    if name == "packed_compiled" and per_gpu == "auto" and packing.exists():   # the packed mode's probe, reused
        from bench.packing import plan_jobs_per_gpu
        pk = json.loads(packing.read_text())
        per_gpu = str(plan_jobs_per_gpu(pk["peaks"], pk["free_bytes"], len(pk["peaks"]), compiled=True)["jobs_per_gpu"])
    if name != "sequential":
        cmd += ["--jobs-per-gpu", per_gpu] if gpu else ["--workers", str(a.cpu_workers)]
    if name == "packed_compiled":
        cmd += ["--compile", a.compile_mode]
    with GpuSampler() if gpu else _Null() as sampler:
        res = sh(cmd, budget.left() - a.reserve_s, Path(a.out) / f"run_{name}.log")
    jobs = read_jobs(out)
    if name != "sequential":
        slots = _slots_used(Path(a.out) / f"run_{name}.log", default=a.cpu_workers if not gpu else 1)
    res.update(mode=name, slots=slots, jobs=jobs, gpu_sampling=sampler.summary(), wall_s=res["seconds"])
    if (out / "packing.json").exists():
        pk = json.loads((out / "packing.json").read_text())
        res["packing"] = {k: pk.get(k) for k in ("peaks", "free_bytes", "probe_seconds")}
    if jobs:
        res["aggregate_images_per_s"] = sum(j["train_images"] for j in jobs) / res["wall_s"]
        res["sum_job_images_per_s"] = sum(j["images_per_s"] for j in jobs)
        res["projection"] = project(jobs, res["wall_s"], slots)
    return res


def _slots_used(log: Path, default: int) -> int:
    """The worker count the executor logged ('N job(s) on K worker processes')."""
    import re
    m = re.search(r"job\(s\) on (\d+) worker processes", log.read_text(errors="replace"))
    return int(m.group(1)) if m else default


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def summary(self):
        return {"source": None, "n": 0}


def environment(device: str) -> dict:
    from bench.provenance import collect
    env = collect(["pack_walltime", *sys.argv[1:]], device)
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv"], capture_output=True, text=True)
        env["nvidia_smi"] = r.stdout.strip()
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="pack-out", help="work folder (data, cache, run dirs, logs)")
    ap.add_argument("--json", help="result JSON (default OUT/pack_walltime.json)")
    ap.add_argument("--budget-s", type=float, default=560, help="stop starting steps after this (default 560)")
    ap.add_argument("--reserve-s", type=float, default=20, help="seconds kept for writing results (default 20)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", help="comma list (default: the protocol's six)")
    ap.add_argument("--modes", default="sequential,packed,packed_compiled")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--patients", type=int, default=900, help="synth patients (900 ~ 6,300 frames, default)")
    ap.add_argument("--size", default="800x600", help="synth frame size (default 800x600)")
    ap.add_argument("--jobs-per-gpu", default="auto")
    ap.add_argument("--cpu-workers", type=int, default=2, help="packed modes on the CPU (default 2)")
    ap.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode of the compiled mode")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: 12 patients 160x120, 32 px, batch 16, "
                                                        "two small models, no latency/tests")
    a = ap.parse_args(argv)
    overrides = {"pretrained": None, "allow_random_init": True, "leakage": {"gate": "off"}, "grid": None}
    if a.tiny:
        a.device, a.patients, a.size = "cpu", 12, "160x120"
        a.models = a.models or "timm/test_resnet,efficientnet_b0"
        overrides.update(data={"input_size": 32}, train={"batch_size": 16, "eval_batch_size": 64})
    gpu = a.device.startswith("cuda")
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    json_path = Path(a.json) if a.json else work / "pack_walltime.json"
    budget = Budget(a.budget_s)
    result = {"schema": SCHEMA, "tiny": a.tiny, "args": vars(a), "environment": environment(a.device), "steps": {}}

    def save():
        from protocols.atomic import write_json
        write_json(json_path, result)

    proto = work / "protocol.yaml"
    proto.write_text(yaml.safe_dump({"include": str(PROTOCOL), "name": "afif2025-pack-walltime",
                                     "description": "afif2025, random init, leakage gate off: speed only", **overrides}))
    data = work / "data"
    if not (data / "manifest.csv").exists():
        shutil.rmtree(data, ignore_errors=True)
        result["steps"]["synth"] = sh([sys.executable, "-m", "bench.cli", "synth", str(data), "--patients",
                                       str(a.patients), "--size", a.size, "--workers", str(min(16, os.cpu_count() or 1)),
                                       "--quiet"], budget.left() - a.reserve_s, work / "synth.log")
    t0 = time.perf_counter()
    from bench.runner import load_data
    from protocols.config import load_protocol
    p = load_protocol(proto)
    df, _ = load_data(str(data), p.data.input_size, str(work / "cache"), task=p.task)
    result["steps"]["cache"] = {"seconds": time.perf_counter() - t0, "n_images": len(df)}
    save()

    for mode in a.modes.split(","):
        if budget.left() < a.reserve_s + 30:
            result["steps"][mode] = {"skipped": f"{budget.left():.0f} s left"}
            continue
        result["steps"][mode] = run_mode(mode, a, data, proto, budget, gpu)
        save()
    modes = {m: result["steps"][m] for m in a.modes.split(",") if result["steps"].get(m, {}).get("jobs")}
    if "sequential" in modes:
        base = modes["sequential"]["aggregate_images_per_s"]
        result["speedup_vs_sequential"] = {m: r["aggregate_images_per_s"] / base for m, r in modes.items()}

    py = sys.executable
    first = (a.models or "resnet50").split(",")[0]
    size = "32" if a.tiny else "224"
    batch = "16" if a.tiny else "64"
    for tag, extra in (("eager", []), ("compiled", ["--compile", a.compile_mode])):
        if budget.left() > a.reserve_s + 60:
            out = work / f"train_throughput_{tag}.json"
            result["steps"][f"harness_overhead_{tag}"] = sh(
                [py, "-m", "bench.scripts.train_throughput", "--model", first, "--input-size", size, "--batch-size",
                 batch, "--device", a.device, "--steps", "4" if a.tiny else "15", "--repeats", "3", "--json", str(out),
                 *extra], budget.left() - a.reserve_s, work / f"train_throughput_{tag}.log")
            if out.exists():
                result["steps"][f"harness_overhead_{tag}"]["figures"] = json.loads(out.read_text())["median"]
            save()
    if not a.tiny:
        models = a.models or ",".join(p.models)
        steps = [("latency_peak_memory", [py, "-m", "bench.cli", "latency", "--models", models, "--device", a.device,
                                          "--input-size", "224", "--batch-sizes", "1,64", "--precisions", "fp32,bf16",
                                          "--runs", "30", "--warmup", "10", "--throughput-runs", "10",
                                          "--max-batch-cap", "0", "--train-batch", "64", "--train-runs", "5",
                                          "--json", str(work / "latency_peak.json")], 60),
                 ("gpu_tests", [py, "-m", "pytest", "-q", "-m", "gpu", "tests", "-p", "no:cacheprovider"], 45),
                 ("latency_compile", [py, "-m", "bench.cli", "latency", "--models", "resnet50", "--device",
                                      a.device, "--input-size", "224", "--batch-sizes", "1,64", "--precisions",
                                      "bf16", "--compile", "--runs", "30", "--warmup", "10", "--max-batch-cap", "0",
                                      "--train-batch", "0", "--json", str(work / "latency_compile.json")], 60)]
        for name, cmd, need in steps:
            if budget.left() > a.reserve_s + need:
                result["steps"][name] = sh(cmd, budget.left() - a.reserve_s, work / f"{name}.log")
                jp = cmd[cmd.index("--json") + 1] if "--json" in cmd else None
                if jp and Path(jp).exists():
                    result["steps"][name]["result"] = json.loads(Path(jp).read_text())
            else:
                result["steps"][name] = {"skipped": f"{budget.left():.0f} s left"}
            save()
    save()
    _print_table(result, a.modes.split(","))
    return 0


def _print_table(result: dict, modes: list[str]) -> None:
    print(f"{'mode':16s} {'wall s':>8s} {'agg img/s':>10s} {'slots':>5s} {'GPU util':>8s} {'proj. min':>9s}")
    for m in modes:
        r = result["steps"].get(m, {})
        if not r.get("jobs"):
            print(f"{m:16s} {r.get('skipped') or 'no finished jobs (rc %s)' % r.get('rc')}")
            continue
        util = r["gpu_sampling"].get("mean_util_pct")
        print(f"{m:16s} {r['wall_s']:8.1f} {r['aggregate_images_per_s']:10.1f} {r['slots']:5d} "
              f"{'-' if util is None else f'{util:.0f} %':>8s} {r['projection']['projected_min']:9.1f}")
        for j in r["jobs"]:
            mem = j["peak_memory_bytes"]
            print(f"    {j['model']:22s} {j['images_per_s']:8.1f} img/s  epoch {j['epoch_s']:6.2f} s  compile "
                  f"{j['compile_s']:6.1f} s ({j['compile_status']})  peak {'-' if mem is None else f'{mem / 2**30:.2f} GiB'}")
    for k in ("harness_overhead_eager", "harness_overhead_compiled"):
        f = result["steps"].get(k, {}).get("figures")
        if f:
            print(f"{k}: fold job / bare loop = {f['ratio_fold_over_bare']:.3f} "
                  f"(bare {f['bare_images_per_s']:.1f}, fold {f['fold_images_per_s']:.1f} img/s)")


if __name__ == "__main__":
    sys.exit(main())
