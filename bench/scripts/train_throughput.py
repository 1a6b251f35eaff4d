"""Training throughput: a fold job (protocols.trainer) vs a bare PyTorch loop, data-loading share, paper wall time.

Measured side by side in one process, interleaved (bare, fold, bare, fold, ...), medians reported:
  * bare loop   : one pre-normalised float batch already on the device; forward, loss, backward, step.
  * data        : protocols.trainer.Batcher.batch (index uint8 tensor, flip, float, normalise) alone.
  * fold job    : protocols.trainer.train_fold on random uint8 images, 2 epochs; the 2nd epoch's images/s
                  (the 1st is warm-up) -- its timer covers data + step, as the fold job itself reports it.
  * eval        : protocols.trainer.predict images/s (used only for the wall-time projection).

  python -m bench.scripts.train_throughput --model resnet50 --input-size 64 --batch-size 32 --device cpu --threads 1
  python -m bench.scripts.train_throughput --model resnet50_cbam --input-size 224 --batch-size 64 --device cuda --steps 30
  (--compile MODE: both loops torch.compile'd in that mode; the fold job's compile trial is outside its epoch timer)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

# the afif2025 protocol's workload (Table 1 of the paper: 6,323 images, 80/20, 5 folds, 100 epochs)
PAPER = {"n_images": 6323, "trainval": 5056, "folds": 5, "epochs": 100, "models": 6}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _model(name: str, size: int, rt):
    from models import create_model
    torch.manual_seed(0)
    m = create_model(name, num_classes=5, pretrained=None, input_size=size).to(rt.device)
    return m.to(memory_format=torch.channels_last) if rt.channels_last else m


def bare_loop(name, size, batch, steps, rt, lr=1e-5, compile_mode="none") -> float:
    """images/s of the plainest training loop on the same model, batch and device (no data loading); with a
    compile mode, the model torch.compile'd in that mode (compiled during the untimed warm-up steps)."""
    m = _model(name, size, rt).train()
    net = m if compile_mode == "none" else torch.compile(m, mode=compile_mode)
    opt = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=rt.device)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch,), device=rt.device)

    def step():
        with rt.autocast():
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2 if compile_mode == "none" else 4):     # CUDA graphs record on the 3rd call
        step()
    _sync(rt.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(rt.device)
    return steps * batch / (time.perf_counter() - t0)


def data_only(images, batch, steps, rt) -> float:
    """seconds per batch of Batcher.batch (index + flip + float + normalise on the device)."""
    from protocols.trainer import Batcher
    b = Batcher(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), rt)
    g = torch.Generator().manual_seed(0)
    n = len(images)
    for _ in range(2):
        b.batch(torch.randperm(n, generator=g)[:batch], torch.rand(batch, generator=g) < 0.5)
    _sync(rt.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        b.batch(torch.randperm(n, generator=g)[:batch], torch.rand(batch, generator=g) < 0.5)
    _sync(rt.device)
    return (time.perf_counter() - t0) / steps


def fold_job(name, size, batch, steps, rt, protocol) -> tuple[float, float]:
    """(train images/s of epoch 2, eval images/s) of a real fold job on random uint8 images."""
    from protocols.trainer import Batcher, predict, train_fold
    n_train, n_val = steps * batch, batch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_val + batch, 3, size, size), dtype=torch.uint8, generator=g)
    labels = np.arange(len(images)) % 5
    ids = [f"i{k}" for k in range(len(images))]
    part = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    m = _model(name, size, rt)
    with tempfile.TemporaryDirectory() as d:
        train_fold(d, protocol, m, images, labels, ids, part, seed=0, device=rt.device)
        hist = open(f"{d}/history.csv").read().splitlines()
    ips = float(hist[2].split(",")[7])        # epoch 2, images_per_s column
    b = Batcher(images, protocol.data.mean, protocol.data.std, rt)
    rows = torch.arange(len(images))
    predict(m, b, rows[:batch], protocol.train.eval_batch_size)
    _sync(rt.device)
    t0 = time.perf_counter()
    predict(m, b, rows, protocol.train.eval_batch_size)
    _sync(rt.device)
    return ips, len(rows) / (time.perf_counter() - t0)


def project(train_ips: float, eval_ips: float, models: int = PAPER["models"]) -> dict:
    """Wall time of the afif2025 protocol at these rates (train on 4/5 of train-val, validate 1/5 every epoch)."""
    tv, k, ep = PAPER["trainval"], PAPER["folds"], PAPER["epochs"]
    train_imgs, val_imgs = tv * (k - 1) / k, tv / k
    test_imgs = PAPER["n_images"] - tv
    per_fold = ep * (train_imgs / train_ips + val_imgs / eval_ips) + test_imgs / eval_ips
    return {"per_fold_h": per_fold / 3600, "per_model_h": k * per_fold / 3600,
            "all_models_h_if_same_speed": models * k * per_fold / 3600}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement (and per epoch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--compile", default="none", help="torch.compile mode for both loops (train.compile; default none)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)

    from protocols.config import load_protocol, apply_overrides
    from protocols.device import resolve_device
    from protocols.trainer import Runtime, configure_determinism
    from pathlib import Path

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    base = load_protocol(Path(__file__).resolve().parents[2] / "protocols/afif2025/protocol.yaml")
    p = apply_overrides(base, {"data.input_size": a.input_size, "train.batch_size": a.batch_size,
                               "train.epochs": 2, "train.keep": "last", "models": [a.model], "grid": None,
                               "train.compile": a.compile})
    rt = Runtime.from_protocol(p, dev)
    configure_determinism(False, dev)
    images = torch.randint(0, 256, (max(4 * a.batch_size, 256), 3, a.input_size, a.input_size), dtype=torch.uint8)

    bare, fold, data, evals = [], [], [], []
    for r in range(a.repeats):          # alternate which goes first, so drift in machine load hits both
        if r % 2:
            ips, eips = fold_job(a.model, a.input_size, a.batch_size, a.steps, rt, p)
            bare.append(bare_loop(a.model, a.input_size, a.batch_size, a.steps, rt, compile_mode=a.compile))
        else:
            bare.append(bare_loop(a.model, a.input_size, a.batch_size, a.steps, rt, compile_mode=a.compile))
            ips, eips = fold_job(a.model, a.input_size, a.batch_size, a.steps, rt, p)
        fold.append(ips)
        evals.append(eips)
        data.append(data_only(images, a.batch_size, a.steps * 4, rt))
        print(f"repeat {r + 1}/{a.repeats}: bare {bare[-1]:.1f} img/s, fold job {fold[-1]:.1f} img/s, "
              f"data {1e3 * data[-1]:.2f} ms/batch", file=sys.stderr, flush=True)
    bare_ips, fold_ips, data_s = statistics.median(bare), statistics.median(fold), statistics.median(data)
    step_s = a.batch_size / bare_ips
    out = {
        "model": a.model, "input_size": a.input_size, "batch_size": a.batch_size, "steps": a.steps,
        "repeats": a.repeats, "compile": a.compile, "device": str(dev), "threads": torch.get_num_threads(),
        "amp": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else None, "channels_last": rt.channels_last,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "bare_images_per_s": bare, "fold_images_per_s": fold, "data_s_per_batch": data, "eval_images_per_s": evals,
        "median": {"bare_images_per_s": bare_ips, "fold_images_per_s": fold_ips, "ratio_fold_over_bare": fold_ips / bare_ips,
                   "paired_ratio_median": statistics.median(f / b for f, b in zip(fold, bare)),
                   "data_ms_per_batch": 1e3 * data_s, "step_ms_per_batch": 1e3 * step_s,
                   "data_fraction_of_step": data_s / (data_s + step_s),
                   "eval_images_per_s": statistics.median(evals)},
        "paper_projection": project(fold_ips, statistics.median(evals)),
    }
    m = out["median"]
    where = out["gpu"] or f"{out['threads']} CPU thread(s)"
    print(f"{a.model} {a.input_size}px batch {a.batch_size} on {dev} ({where}): "
          f"bare {m['bare_images_per_s']:.1f} img/s | fold job {m['fold_images_per_s']:.1f} img/s "
          f"(ratio of medians {m['ratio_fold_over_bare']:.3f}, median paired ratio {m['paired_ratio_median']:.3f}) | data {m['data_ms_per_batch']:.2f} ms vs step "
          f"{m['step_ms_per_batch']:.1f} ms = {100 * m['data_fraction_of_step']:.2f} % | eval {m['eval_images_per_s']:.1f} img/s")
    pj = out["paper_projection"]
    print(f"afif2025 at this speed: {pj['per_fold_h']:.2f} h/fold, {pj['per_model_h']:.2f} h/model (5 folds x 100 epochs)")
    if a.json:
        from protocols.atomic import write_json
        from bench.provenance import collect
        write_json(a.json, {**out, "provenance": collect(["train_throughput", *(argv or sys.argv[1:])], str(dev))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
