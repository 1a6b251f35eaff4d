"""How many fold jobs fit on one GPU at once (`--jobs-per-gpu auto`): measured peak memory vs free memory.

The models of the run are probed in one fresh spawned process on the GPU (its own CUDA context, as a packed worker
has): the run's images loaded onto the device as a fold job holds them, then per model (allocator cache emptied,
peak reset) two training steps at the protocol's batch size and one evaluation batch, and the caching
allocator's peak (max_memory_reserved). A job
needs that peak plus CONTEXT_BYTES (CUDA context, cuDNN/cuBLAS handles and workspaces, which live outside the
allocator); compiled protocols get COMPILE_MARGIN more (CUDA graph pools, autotuning). The plan divides the free
memory the probe saw (after its own context) by the largest model's need, keeping RESERVE of it free.
The figures go to RUN_DIR/packing.json (schema fibrobench.packing/1), reused while the protocol hash is unchanged.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import time
from pathlib import Path

from protocols.atomic import write_json
from protocols.runfiles import read_json

SCHEMA = "fibrobench.packing/1"
CONTEXT_BYTES = 768 * 2**20     # per process, outside torch's allocator (CUDA context ~300-500 MB + library handles)
COMPILE_MARGIN = 1.25           # torch.compile modes: CUDA graph memory pools and autotuning buffers
RESERVE = 0.10                  # fraction of the free memory never planned for (fragmentation, other users)
MAX_JOBS_PER_GPU = 16
log = logging.getLogger("fibrobench.run")


def plan_jobs_per_gpu(peak_bytes: dict[str, int], free_bytes: int, n_jobs: int, compiled: bool = False,
                      context_bytes: int = CONTEXT_BYTES, reserve: float = RESERVE,
                      cap: int = MAX_JOBS_PER_GPU) -> dict:
    """The plan as a dict: jobs_per_gpu (>= 1, <= n_jobs and cap), the per-job need and how it was reached."""
    if not peak_bytes:
        raise ValueError("no measured peaks to plan from")
    need = (max(peak_bytes.values()) + context_bytes) * (COMPILE_MARGIN if compiled else 1.0)
    usable = max(0.0, free_bytes * (1.0 - reserve))
    fit = int(usable // need) if need > 0 else cap
    n = max(1, min(fit, cap, max(1, n_jobs)))
    return {"jobs_per_gpu": n, "fits": fit, "need_bytes_per_job": int(math.ceil(need)),
            "largest_model": max(peak_bytes, key=peak_bytes.get), "free_bytes": int(free_bytes),
            "usable_bytes": int(usable), "context_bytes": int(context_bytes), "reserve": reserve,
            "compile_margin": COMPILE_MARGIN if compiled else 1.0, "cap": cap, "n_jobs": n_jobs}


def measure_peaks(probe, run_dir, models: list[str], device: str) -> list[dict]:
    """probe(run_dir, models, device) (bench.runner.probe_memory) in one spawned process (its own CUDA context, as
    a packed worker has)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        out = pool.apply(probe, (str(run_dir), list(models), device))
    for r in out:
        log.info("packing probe: %s peaks at %.2f GB (allocator, images included) on %s", r["model"],
                 r["peak_reserved_bytes"] / 1e9, device)
    return out


def auto_jobs_per_gpu(run_dir, models: list[str], device: str, n_jobs: int, probe=None) -> int:
    """--jobs-per-gpu auto: plan from RUN_DIR/packing.json when it was made for this protocol, else run `probe`
    (bench.runner.probe_memory, passed in by the executor) first."""
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json")
    path = run_dir / "packing.json"
    old = read_json(path, required=False)
    compiled = (run["protocol"]["train"].get("compile") or "none") != "none"
    if (old and old.get("protocol_sha256") == run["protocol_sha256"] and old.get("device") == device
            and set(models) <= set(old.get("peaks", {}))):
        peaks, free = old["peaks"], old["free_bytes"]
    else:
        t0 = time.perf_counter()
        if probe is None:
            raise ValueError("--jobs-per-gpu auto needs a memory probe (bench.runner.probe_memory)")
        probes = measure_peaks(probe, run_dir, models, device)
        peaks = {r["model"]: r["peak_reserved_bytes"] for r in probes}
        free = min(r["free_at_start_bytes"] for r in probes)
        from bench import provenance
        write_json(path, {"schema": SCHEMA, "protocol_sha256": run["protocol_sha256"], "device": device,
                          "peaks": peaks, "free_bytes": free, "probes": probes,
                          "probe_seconds": time.perf_counter() - t0,
                          "provenance": provenance.collect(None, device)})
    plan = plan_jobs_per_gpu({m: peaks[m] for m in models}, free, n_jobs, compiled)
    log.info("--jobs-per-gpu auto: %d (each job needs up to %.2f GB incl. context; %.1f GB free on %s)",
             plan["jobs_per_gpu"], plan["need_bytes_per_job"] / 1e9, free / 1e9, device)
    return plan["jobs_per_gpu"]
