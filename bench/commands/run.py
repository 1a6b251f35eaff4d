"""`fibrobench run`: train every (model, fold) job of a protocol on a dataset, then ensemble; resumable."""
from __future__ import annotations

import logging
from pathlib import Path

from bench.funnel import positive_int
from protocols.config import COMPILES
from protocols.errors import BadInput

NAME = "run"
HELP = "run a protocol (splits, leakage gate, fold jobs, ensemble) into a run directory"
DESCRIPTION = (HELP + ". Re-running the same command on the same --out resumes: finished jobs are skipped, "
               "interrupted ones continue from their last epoch.")


def _int_list(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BadInput("--folds", "folds", f"expected comma-separated integers, got {s!r}") from None


def _jobs_per_gpu(s: str) -> int | str:
    if s.strip().lower() == "auto":
        return "auto"
    if s.strip().isdigit() and int(s) >= 1:
        return int(s)
    raise BadInput("--jobs-per-gpu", "jobs_per_gpu", f"expected a positive integer or auto, got {s!r}")


def add_arguments(p) -> None:
    p.add_argument("protocol", help="protocol YAML (e.g. protocols/afif2025/protocol.yaml)")
    p.add_argument("--data", required=True, help="ImageFolder dir (one folder per class: the task's classes or "
                                                    "task.map keys, any case) or manifest.csv")
    p.add_argument("--out", help="run directory (default runs/<protocol>-<UTC timestamp>); reuse it to resume")
    p.add_argument("--models", help="comma-separated models instead of the protocol's (recorded as an override)")
    p.add_argument("--folds", help="comma-separated fold indices to run (default all; recorded)")
    p.add_argument("--epochs", type=int, help="override train.epochs for a quick run (recorded as an override)")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels, no cudnn autotuning (recorded as an override)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=positive_int, help="local executor: on the CPU, jobs run at once in worker "
                                                         "processes (default 1); on CUDA, how many GPUs to use "
                                                         "(default all)")
    p.add_argument("--jobs-per-gpu", default="1", help="local executor on CUDA: jobs packed onto each GPU at once, "
                                                      "each in its own process (an integer, or auto: from each "
                                                      "model's measured peak memory and the free memory; default 1)")
    p.add_argument("--compile", choices=COMPILES, help="override train.compile: torch.compile mode for training "
                                                       "and evaluation (reduce-overhead adds CUDA graphs; recorded "
                                                       "as an override)")
    p.add_argument("--cache-dir", help="image cache directory (default: protocols.cache's default)")
    p.add_argument("--grid", action="store_true", help="run every variant of the protocol's grid: into OUT/grid/<id>/")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("slurm (submitit) parameters")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-time", type=int, default=24 * 60, help="minutes per job (default 1440)")
    g.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job (default 1)")
    g.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (default 8)")
    g.add_argument("--slurm-mem-gb", type=int, default=64)
    g.add_argument("--slurm-array-parallelism", type=int, default=32)


def main(args) -> int:
    from bench.runner import RunOptions, default_out, run
    from protocols.config import expand_grid, load_protocol

    if args.epochs is not None and args.epochs < 1:
        raise BadInput("--epochs", "epochs", f"expected a positive integer, got {args.epochs}")
    slurm = {"timeout_min": args.slurm_time, "gpus_per_node": args.slurm_gpus, "cpus_per_task": args.slurm_cpus,
             "mem_gb": args.slurm_mem_gb, "slurm_array_parallelism": args.slurm_array_parallelism,
             "nodes": 1, "tasks_per_node": 1}
    if args.slurm_partition:
        slurm["slurm_partition"] = args.slurm_partition
    protocol = load_protocol(args.protocol)
    opts = dict(data=args.data, models=[m for m in args.models.split(",") if m] if args.models else None,
                folds=_int_list(args.folds) if args.folds else None, epochs=args.epochs,
                deterministic=args.deterministic, device=args.device, executor=args.executor,
                workers=args.workers, jobs_per_gpu=_jobs_per_gpu(args.jobs_per_gpu), compile=args.compile,
                cache_dir=args.cache_dir, progress=not args.no_progress, slurm=slurm,
                argv=args.argv)
    if not args.grid:
        code, run_dir = run(protocol, RunOptions(out=args.out, **opts))
        print(run_dir)
        return code
    if not protocol.grid:
        raise BadInput(args.protocol, "grid", "--grid given but the protocol has no grid: section")
    base = Path(args.out) if args.out else default_out(protocol)
    worst = 0
    variants = expand_grid(protocol)
    for i, v in enumerate(variants, 1):
        logging.getLogger("fibrobench.run").info("grid variant %d/%d: %s", i, len(variants), v.variant["id"])
        code, _ = run(v, RunOptions(out=str(base / "grid" / v.variant["id"]), **opts))
        worst = max(worst, code)
    print(base)
    return worst
