"""A run, end to end: protocol -> manifest -> splits -> leakage gate -> run.json -> fold jobs -> ensemble.

The run directory is the only state: `run_job(run_dir, model, fold)` needs nothing else, so any executor
(in-process, one process per GPU, Slurm array task) can run any job, and re-running resumes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import provenance
from bench.executors import make_executor
from protocols.atomic import write_json
from protocols.config import Protocol, apply_overrides, from_dict, load_protocol, protocol_sha256
from protocols.errors import BadInput
from protocols.joblock import describe, lock_state
from protocols.runfiles import class_names, job_dir, read_done, read_json
from protocols.splits import check_matches_manifest, make_splits, partition_of, read_splits, write_splits

SCHEMA = "fibrobench.run/1"


@dataclass
class RunOptions:
    """What the command line adds to a protocol; everything here is recorded in run.json["options"]."""
    data: str
    out: str | None = None
    models: list[str] | None = None      # override of protocol.models (recorded as a protocol override)
    folds: list[int] | None = None       # subset of folds to run (the ensemble then has fewer members)
    epochs: int | None = None            # quick-run override (recorded as a protocol override)
    deterministic: bool | None = None    # override of train.deterministic
    compile: str | None = None           # override of train.compile (recorded as a protocol override)
    device: str = "auto"
    executor: str = "local"
    workers: int | None = None           # local: CPU worker processes; on CUDA, how many GPUs (default all)
    jobs_per_gpu: int | str = 1          # local on CUDA: jobs packed onto each GPU at once, or "auto"
    cache_dir: str | None = None
    progress: bool = True
    slurm: dict = field(default_factory=dict)
    argv: list[str] | None = None


def default_out(p: Protocol) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{p.name.replace('@', '-')}-{stamp}"


def overrides_of(opts: RunOptions) -> dict:
    o = {}
    if opts.models:
        o["models"] = list(opts.models)
    if opts.epochs is not None:
        o["train.epochs"] = int(opts.epochs)
    if opts.deterministic is not None:
        o["train.deterministic"] = bool(opts.deterministic)
    if opts.compile is not None:
        o["train.compile"] = opts.compile
    return o


def fold_seed(p: Protocol, fold: int) -> int:
    """Fold k trains with train.seed + k: the same seed for every model in the run."""
    return p.train.seed + fold


_log = logging.getLogger("fibrobench.run").info  # shown as "fibrobench run: ..." (bench.cli.configure_logging)


# ---------------------------------------------------------------- data helpers

_IMAGES: dict = {}


def load_data(source: str, size: int, cache_dir=None, progress=False, task=None):
    """(manifest df labelled by `task`, uint8 images [N,3,S,S]); the images of the last (source, size) stay in memory."""
    from protocols.cache import load_images
    from protocols.data import load_manifest

    df = load_manifest(source, task=task)
    key = (str(source), int(size), str(cache_dir), tuple(df["image_id"]))
    if key not in _IMAGES:
        _IMAGES.clear()
        _IMAGES[key] = load_images(df, size, cache_dir=cache_dir, progress=progress)
    return df, _IMAGES[key]


def build_model(p: Protocol, name: str):
    """The registry model for this protocol: one output per class of its task, pretrained per protocol,
    activation swapped if asked."""
    from models import create_model
    from models.activations import set_activation

    m = create_model(name, num_classes=len(p.task.classes), pretrained=p.pretrained, input_size=p.data.input_size,
                     allow_random_init=p.allow_random_init)
    n_swapped = set_activation(m, p.train.activation)
    return m, n_swapped


# ---------------------------------------------------------------- preparing a run


def _flops_per_image(model, input_size: int) -> int | None:
    """Forward FLOPs of one image (models.facts.count_flops on the meta device: no arithmetic); None when the
    model cannot run on the meta device. Only used to start the largest jobs first."""
    import torch

    from models.facts import count_flops
    try:
        meta = model.to("meta").eval()
        return count_flops(meta, torch.empty(1, 3, input_size, input_size, device="meta"))
    except Exception:  # noqa: BLE001 - an ordering hint; params are the fallback
        return None


def _clusters_for(df, p: Protocol):
    if p.split.level != "cluster":
        return None
    from protocols.leakage import find_clusters
    return find_clusters(df)


def _leakage_gate(run_dir: Path, df, splits: dict, p: Protocol) -> bool:
    """Write leakage.json (once per splits) and apply the protocol's gate; False = the run must stop."""
    if p.leakage.gate == "off":
        return True
    from protocols.leakage import audit_splits, gate_failures

    path = run_dir / "leakage.json"
    audit = None
    if path.exists():
        old = read_json(path)
        if old.get("split", {}).get("sha256") == splits["sha256"]:
            audit = old
    if audit is None:
        _log("leakage audit of the splits ...")
        audit = audit_splits(df, splits, df.attrs.get("root"))
        audit["provenance"] = provenance.collect(seeds={"split": splits.get("seed")})
        write_json(path, audit)
    failures = gate_failures(audit)          # leakage, and label conflicts (their own finding)
    if failures:
        reasons = "; ".join(failures)
        if p.leakage.gate == "fail":
            _log(f"leakage gate FAILED ({reasons}); not training (leakage.gate: fail)")
            return False
        _log(f"WARNING: leakage found ({reasons}); training anyway (leakage.gate: warn)")
    return True


def _check_models(p: Protocol, from_command_line: bool) -> None:
    """Every model name (of the protocol, or of --models) is known and accepts the input size (BadInput)."""
    from models.registry import check_input_size, get_spec

    for i, name in enumerate(p.models):
        try:
            check_input_size(get_spec(name), p.data.input_size)
        except BadInput as exc:        # name where the model was named, not the registry
            where = ("<command line>", "--models") if from_command_line else (p.source or "<protocol>", f"models[{i}]")
            raise BadInput(*where, exc.message) from None


def _make_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(run_dir, "--out", f"cannot create the run directory: {exc.strerror or exc}") from None


def prepare(protocol: Protocol, opts: RunOptions) -> tuple[Path, Protocol, dict]:
    """Create/verify RUN_DIR: splits.json, leakage.json, run.json: status "running", or "failed" when the
    leakage gate stops the run (then nothing is trained)."""
    from protocols.data import data_fingerprint

    overrides = overrides_of(opts)
    p = apply_overrides(protocol, overrides) if overrides else protocol
    folds = sorted(set(opts.folds)) if opts.folds else list(range(p.split.n_folds))
    if any(k < 0 or k >= p.split.n_folds for k in folds):
        raise BadInput("--folds", "folds", f"fold indices must be in 0..{p.split.n_folds - 1}, got {folds}")
    run_dir = Path(opts.out) if opts.out else default_out(p)
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(run_dir, "--out", "exists and is not a directory")
    _check_models(p, "models" in overrides)    # nothing is created before the protocol's models are known to exist
    df, _ = load_data(opts.data, p.data.input_size, opts.cache_dir, progress=opts.progress and sys.stderr.isatty(),
                      task=p.task)
    task_source = "protocol" if p.task is not None else "inferred: the data's labels, sorted by name"
    p = dataclasses.replace(p, task=df.attrs["task"])   # the resolved protocol always names its classes
    sha = protocol_sha256(p)
    run_path = run_dir / "run.json"
    previous = read_json(run_path, required=False)
    if previous and previous.get("protocol_sha256") != sha:
        raise BadInput(run_path, "protocol_sha256", "this run dir was made with a different protocol "
                       "(or different --models/--epochs/--deterministic, or another task); use a new --out")
    fingerprint = data_fingerprint(df)
    if previous and previous.get("data", {}).get("fingerprint") != fingerprint:
        raise BadInput(run_path, "data.fingerprint", "the data changed since this run dir was made; use a new --out")

    splits_path = run_dir / "splits.json"
    if splits_path.exists():
        splits = read_splits(splits_path)
        check_matches_manifest(splits, df, splits_path)
        if class_names(splits, splits_path) != list(p.task.classes):
            raise BadInput(splits_path, "class_names", f"{class_names(splits, splits_path)} differ from the task's "
                           f"{list(p.task.classes)}; use a new --out")
        want = {"level": p.split.level, "seed": p.split.seed, "test_fraction": p.split.test_fraction,
                "n_folds": p.split.n_folds}
        if {k: splits[k] for k in want} != want:
            raise BadInput(splits_path, "level", f"existing splits {dict((k, splits[k]) for k in want)} do not "
                           f"match the protocol's {want}; use a new --out")
    else:
        splits = make_splits(df, p.split.level, p.split.test_fraction, p.split.n_folds, p.split.seed,
                             groups=_clusters_for(df, p), class_names=list(p.task.classes))

    models_info = {}
    for name in p.models:   # builds each model once: fails early on unknown names / missing weights
        m, swapped = build_model(p, name)
        models_info[name] = {"weights": m.fibro_weights, "params": int(sum(t.numel() for t in m.parameters())),
                             "activation": p.train.activation, "activation_swaps": swapped}
        if getattr(m, "fibro_code", None):  # a user factory: which file of code built it
            models_info[name]["code"] = m.fibro_code
        models_info[name]["flops_per_image"] = _flops_per_image(m, p.data.input_size)
        del m
    _make_dir(run_dir)          # everything is validated: only now does the run directory appear
    if not splits_path.exists():
        write_splits(run_dir, splits)

    seeds = {"split": p.split.seed, "train": {f"fold{k}": fold_seed(p, k) for k in range(p.split.n_folds)}}
    run = {
        "schema": SCHEMA,
        "protocol": p.to_dict(),
        "protocol_sha256": sha,
        "protocol_source": str(Path(protocol.source).resolve()) if protocol.source else None,
        "task_source": task_source,
        "overrides": overrides,
        "data": {"root": str(df.attrs.get("root", "")), "source": str(Path(opts.data).resolve()),
                 "fingerprint": fingerprint, "n_images": int(len(df)),
                 "has_patient_id": bool("patient_id" in df.columns and df["patient_id"].notna().all())},
        "splits_sha256": splits["sha256"],
        "models": models_info,
        "smoke": p.smoke,
        "options": {"folds": folds, "device": opts.device, "executor": opts.executor, "workers": opts.workers,
                    "jobs_per_gpu": opts.jobs_per_gpu, "cache_dir": opts.cache_dir},
        "seeds": seeds,
        "provenance": provenance.collect(opts.argv, opts.device, seeds),
        "status": "running",
        "started_utc": (previous or {}).get("started_utc")
        or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if not _leakage_gate(run_dir, df, splits, p):
        run["status"] = "failed"
        run["failure"] = "leakage gate"
    write_json(run_path, run)
    return run_dir, p, run


# ---------------------------------------------------------------- one job (any process)


def read_run(run_dir) -> tuple[dict, Protocol]:
    run_path = Path(run_dir) / "run.json"
    if not run_path.exists():
        raise BadInput(run_path, None, "not a run directory (no run.json)")
    run = read_json(run_path)
    p = from_dict(run["protocol"], source=str(run_path))
    if protocol_sha256(p) != run["protocol_sha256"]:
        raise BadInput(run_path, "protocol_sha256", "does not match the recorded protocol")
    if p.task is None:   # made before tasks were protocol data: the task is read from its splits, as reports do
        from reports.task import task_of

        splits_path = Path(run_dir) / "splits.json"
        task = task_of(run, class_names(read_json(splits_path), splits_path), splits_path).to_dict()
        task = {k: v for k, v in task.items() if k != "source" and v is not None and v != {}}
        p = from_dict({**run["protocol"], "task": task}, source=str(run_path))
    return run, p


def run_job(run_dir, model: str, fold: int, device: str = "auto", progress: bool = False) -> dict:
    """Train one (model, fold) job from what RUN_DIR holds, holding its lock; a job with DONE returns at once,
    a job locked by another live process returns {"locked_by": holder} (see protocols.joblock)."""
    from protocols.joblock import JobLock

    job = job_dir(run_dir, model, fold)
    done = read_done(job)
    if done is not None:
        return done
    lock = JobLock(job)
    if not lock.acquire():
        _log(f"{model} fold {fold}: running elsewhere ({describe(lock.holder)}); not starting it here")
        return {"locked_by": lock.holder}
    try:
        done = read_done(job)       # finished by the previous holder between our first look and the lock
        if done is not None:
            return done
        extra = {"trained_by": {k: lock.info[k] for k in ("host", "pid", "slurm_job_id")}}
        if lock.taken_over:
            extra["lock_taken_over_from"] = lock.taken_over
        _log(f"{model} fold {fold}: training (pid {lock.info['pid']} on {lock.info['host']})")
        return _train_job(Path(run_dir), model, fold, device, progress, extra)
    finally:
        lock.release()


def _train_job(run_dir: Path, model: str, fold: int, device: str, progress: bool, extra: dict) -> dict:
    from protocols.trainer import seed_job, train_fold

    job = job_dir(run_dir, model, fold)
    run, p = read_run(run_dir)
    splits = read_splits(run_dir / "splits.json")
    if splits["sha256"] != run["splits_sha256"]:
        raise BadInput(run_dir / "splits.json", "sha256", "differs from run.json splits_sha256")
    df, images = load_data(run["data"]["source"], p.data.input_size, run["options"].get("cache_dir"), task=p.task)
    seed = fold_seed(p, fold)
    seed_job(seed)
    if class_names(splits, run_dir / "splits.json") != list(p.task.classes):
        raise BadInput(run_dir / "splits.json", "class_names", f"differ from run.json's task {list(p.task.classes)}")
    model_obj, swapped = build_model(p, model)
    return train_fold(job, p, model_obj, images, df["label"].to_numpy(), df["image_id"].tolist(),
                      partition_of(splits, fold), seed=seed, device=device, progress=progress,
                      extra_done={"model": model, "fold": fold, "activation_swaps": swapped,
                                  "weights_random_init": bool(model_obj.fibro_weights.get("random_init")), **extra})


def probe_memory(run_dir: str, models: list[str], device: str) -> list[dict]:
    """The CUDA allocator's peak of one job of each model on `device` (for --jobs-per-gpu auto; see bench.packing):
    the run's images on the device once, then per model (cache emptied, peak reset) two training steps at the
    protocol's batch size and one evaluation batch. Run in a fresh process (bench.packing.measure_peaks)."""
    import torch

    from protocols.trainer import Batcher, Runtime, configure_determinism, loss_fn, make_optimizer, predict

    dev = torch.device(device)
    torch.cuda.set_device(dev)
    free_at_start, total = torch.cuda.mem_get_info(dev)
    run, p = read_run(run_dir)
    _, images = load_data(run["data"]["source"], p.data.input_size, run["options"].get("cache_dir"), task=p.task)
    rt = Runtime.from_protocol(p, dev)
    configure_determinism(p.train.deterministic, dev)
    batcher = Batcher(images, p.data.mean, p.data.std, rt)
    bs = min(p.train.batch_size, len(images))
    rows, y = torch.arange(bs), torch.zeros(bs, dtype=torch.long, device=dev)
    out = []
    for model in models:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        torch.manual_seed(0)
        m, _ = build_model(p, model)
        m = m.to(dev)
        if rt.channels_last:
            m = m.to(memory_format=torch.channels_last)
        opt, crit = make_optimizer(p, m.parameters()), loss_fn(p.train.loss)
        m.train()
        for _ in range(2):
            with rt.autocast():
                loss = crit(m(batcher.batch(rows)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        predict(m, batcher, torch.arange(min(p.train.eval_batch_size, len(images))), p.train.eval_batch_size)
        torch.cuda.synchronize(dev)
        out.append({"model": model, "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(dev)),
                    "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
                    "free_at_start_bytes": int(free_at_start), "total_bytes": int(total), "device": device,
                    "gpu": torch.cuda.get_device_name(dev)})
        del m, opt, loss
    return out


def jobs_of(run: dict) -> list[tuple[str, int]]:
    """Every (model, fold) job of the run, largest first (forward FLOPs per image, parameters where FLOPs could not
    be counted), so that packed workers start the long jobs early; ties keep the protocol's order."""
    models = run["protocol"]["models"]
    info = run.get("models", {})

    def size(m):
        i = info.get(m, {})
        return (i.get("flops_per_image") or 0, i.get("params") or 0)

    order = sorted(range(len(models)), key=lambda i: (tuple(-x for x in size(models[i])), i))
    return [(models[i], k) for i in order for k in run["options"]["folds"]]


POLL_S = (0.5, 10.0)   # a run waiting for jobs held by other processes looks again after 0.5 s, doubling to 10 s


def run_all(ex, run_dir, jobs) -> None:
    """Run `jobs` through executor `ex` until every one is DONE. Jobs locked by another live process (a second
    `fibrobench run` on this --out, a Slurm task) are waited for, and run here if their holder dies."""
    run_dir = Path(run_dir)
    todo, attempts, waiting_for, wait = list(jobs), {}, None, POLL_S[0]
    while True:
        if todo:
            for j in todo:
                attempts[j] = attempts.get(j, 0) + 1
            ex.run(run_job, run_dir, todo)
        pending = [j for j in jobs if read_done(job_dir(run_dir, *j)) is None]
        if not pending:
            return
        holders = {j: lock_state(job_dir(run_dir, *j)) for j in pending}
        todo = [j for j in pending if holders[j] is None]
        stuck = [j for j in todo if attempts.get(j, 0) >= 3]
        if stuck:
            raise RuntimeError(f"job(s) neither finished nor locked after 3 attempts: {stuck}")
        if not todo:
            names = sorted(f"{m} fold {k} ({describe(holders[(m, k)])})" for m, k in pending)
            if names != waiting_for:
                _log(f"waiting for {len(pending)} job(s) running in other processes: " + "; ".join(names))
                waiting_for = names
            time.sleep(wait)
            wait = min(2 * wait, POLL_S[1])
        else:
            wait = POLL_S[0]


# ---------------------------------------------------------------- finishing


def finish(run_dir) -> dict:
    """Ensemble every model whose jobs are DONE; mark run.json complete (or failed if jobs are missing)."""
    from protocols.runfiles import ensemble_model

    run_dir = Path(run_dir)
    run, _ = read_run(run_dir)
    splits = read_splits(run_dir / "splits.json")
    missing = [f"{m}/fold{k}" for m, k in jobs_of(run) if read_done(job_dir(run_dir, m, k)) is None]
    summary = {}
    if not missing:
        for m in run["protocol"]["models"]:
            summary[m] = ensemble_model(run_dir, m, splits, run["options"]["folds"])
    run["ensemble"] = summary
    run["status"] = "complete" if not missing else "failed"
    if missing:
        run["failure"] = f"incomplete jobs: {', '.join(missing)}"
    run["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(run_dir / "run.json", run)
    return run


def run(protocol_path, opts: RunOptions, executor=None) -> tuple[int, Path]:
    """The whole run; returns (exit code, run dir). `executor`: a bench.executors executor (default from opts)."""
    protocol = load_protocol(protocol_path) if not isinstance(protocol_path, Protocol) else protocol_path
    if opts.executor == "local":     # fail before writing anything (Slurm jobs resolve it on their own node)
        from protocols.device import resolve_device
        resolve_device(opts.device)
    run_dir, p, run_doc = prepare(protocol, opts)
    if run_doc["status"] == "failed":
        return 1, run_dir
    jobs = jobs_of(run_doc)
    _log(f"{run_dir}: {len(jobs)} job(s) ({', '.join(p.models)} x folds {run_doc['options']['folds']})")
    ex = executor or make_executor(opts.executor, run_dir, device=opts.device, workers=opts.workers,
                                   progress=opts.progress, slurm=opts.slurm, jobs_per_gpu=opts.jobs_per_gpu,
                                   memory_probe=probe_memory)
    try:
        run_all(ex, run_dir, jobs)
    except BaseException:
        doc = read_json(run_dir / "run.json")
        doc["status"] = "failed"
        doc["failure"] = "a job raised; re-run the same command to resume"
        write_json(run_dir / "run.json", doc)
        raise
    final = finish(run_dir)
    for m, s in final.get("ensemble", {}).items():
        _log(f"{m}: ensemble of folds {s['members']} on {s['n_test']} holdout images, accuracy {s['accuracy']:.4f}")
    return (0 if final["status"] == "complete" else 1), run_dir
