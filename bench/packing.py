"""How many fold jobs fit on one GPU at once (`--jobs-per-gpu auto`): measured peak memory vs free memory.

Each model of the run is probed in a fresh spawned process on the GPU (its own CUDA context and allocator, as a
packed worker has): the run's images loaded onto the device as a fold job holds them, two training steps at the
protocol's batch size and one evaluation batch, then the caching allocator's peak (max_memory_reserved). A job
needs that peak plus CONTEXT_BYTES (CUDA context, cuDNN/cuBLAS handles and workspaces, which live outside the
allocator); compiled protocols get COMPILE_MARGIN more (CUDA graph pools, autotuning). The plan divides the free
memory the probe saw (after its own context) by the largest model's need, keeping RESERVE of it free.
The figures go to RUN_DIR/packing.json (schema fibrobench.packing/1), reused while the protocol hash is unchanged.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
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


def _probe(run_dir: str, model: str, device: str) -> dict:
    """In a fresh process: peak allocator memory of one job of `model` on `device` (see the module docstring)."""
    import torch

    from bench.runner import build_model, load_data, read_run
    from protocols.trainer import Batcher, Runtime, configure_determinism, loss_fn, make_optimizer, predict

    dev = torch.device(device)
    torch.cuda.set_device(dev)
    free_at_start, total = torch.cuda.mem_get_info(dev)
    run, p = read_run(run_dir)
    _, images = load_data(run["data"]["source"], p.data.input_size, run["options"].get("cache_dir"), task=p.task)
    rt = Runtime.from_protocol(p, dev)
    configure_determinism(p.train.deterministic, dev)
    torch.manual_seed(0)
    m, _ = build_model(p, model)
    m = m.to(dev)
    if rt.channels_last:
        m = m.to(memory_format=torch.channels_last)
    torch.cuda.reset_peak_memory_stats(dev)
    batcher = Batcher(images, p.data.mean, p.data.std, rt)
    opt, crit = make_optimizer(p, m.parameters()), loss_fn(p.train.loss)
    bs = min(p.train.batch_size, len(images))
    rows = torch.arange(bs)
    y = torch.zeros(bs, dtype=torch.long, device=dev)
    m.train()
    for _ in range(2):
        with rt.autocast():
            out = m(batcher.batch(rows))
        loss = crit(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    predict(m, batcher, torch.arange(min(p.train.eval_batch_size, len(images))), p.train.eval_batch_size)
    torch.cuda.synchronize(dev)
    return {"model": model, "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(dev)),
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
            "free_at_start_bytes": int(free_at_start), "total_bytes": int(total), "device": device,
            "gpu": torch.cuda.get_device_name(dev)}


def measure_peaks(run_dir, models: list[str], device: str) -> list[dict]:
    """_probe for each model, each in its own spawned process, one after another."""
    ctx = mp.get_context("spawn")
    out = []
    for m in models:
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            out.append(pool.apply(_probe, (str(run_dir), m, device)))
        log.info("packing probe: %s needs %.2f GB at peak (allocator) on %s", m,
                 out[-1]["peak_reserved_bytes"] / 1e9, device)
    return out


def auto_jobs_per_gpu(run_dir, models: list[str], device: str, n_jobs: int) -> int:
    """--jobs-per-gpu auto: plan from RUN_DIR/packing.json when it was made for this protocol, else probe first."""
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json")
    path = run_dir / "packing.json"
    old = read_json(path, required=False)
    compiled = (run["protocol"]["train"].get("compile") or "none") != "none"
    if (old and old.get("protocol_sha256") == run["protocol_sha256"] and old.get("device") == device
            and set(models) <= set(old.get("peaks", {}))):
        peaks, free = old["peaks"], old["free_bytes"]
    else:
        probes = measure_peaks(run_dir, models, device)
        peaks = {r["model"]: r["peak_reserved_bytes"] for r in probes}
        free = min(r["free_at_start_bytes"] for r in probes)
        from bench import provenance
        write_json(path, {"schema": SCHEMA, "protocol_sha256": run["protocol_sha256"], "device": device,
                          "peaks": peaks, "free_bytes": free, "probes": probes,
                          "provenance": provenance.collect(None, device)})
    plan = plan_jobs_per_gpu({m: peaks[m] for m in models}, free, n_jobs, compiled)
    log.info("--jobs-per-gpu auto: %d (each job needs up to %.2f GB incl. context; %.1f GB free on %s)",
             plan["jobs_per_gpu"], plan["need_bytes_per_job"] / 1e9, free / 1e9, device)
    return plan["jobs_per_gpu"]
