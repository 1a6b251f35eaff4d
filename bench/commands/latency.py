"""`fibrobench latency`: params, FLOPs, latency percentiles, throughput and peak memory per model."""
from __future__ import annotations

import logging
import sys

from protocols.atomic import write_json
from protocols.errors import BadInput

NAME = "latency"
HELP = "measure params, FLOPs, latency, throughput and peak memory of the registered models"
DESCRIPTION = HELP + " (JSON schema fibrobench.latency/1, documented in bench/latency.py and docs/benchmarks.md)"


def _ints(text: str, field: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInput("<command line>", field, f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise BadInput("<command line>", field, f"expected positive integers, got {text!r}")
    return vals


def add_arguments(p) -> None:
    p.add_argument("--models", help="comma-separated model names (default: every registered model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-sizes", help="comma-separated (default 1,64 on CUDA, 1 on CPU); 1 gives the latency percentiles")
    p.add_argument("--input-size", type=int, help="square input side in pixels (default: the protocol's, else 224)")
    p.add_argument("--protocol", metavar="PROTOCOL.yaml",
                   help="take the input size, the number of classes and (without --models) the model list from this protocol")
    p.add_argument("--num-classes", type=int,
                   help="classifier outputs (default: the protocol's task, else 5)")
    p.add_argument("--precisions", help="fp32 and/or bf16 autocast (default fp32,bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--channels-last", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="channels_last memory format for model and input (default on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first (default off)")
    p.add_argument("--runs", type=int, help="timed calls at batch 1 (default 100 on CUDA, 30 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (default 20 on CUDA, 3 on CPU)")
    p.add_argument("--throughput-runs", type=int, help="timed calls at each batch > 1 (default 30 on CUDA, 5 on CPU)")
    p.add_argument("--max-batch-cap", type=int, default=1024,
                   help="cap of the CUDA doubling search for the largest batch that fits; 0 disables (default 1024)")
    p.add_argument("--train-batch", type=int,
                   help="batch of the timed training step; 0 skips (default 64 on CUDA, 0 = skipped on CPU)")
    p.add_argument("--train-runs", type=int, help="timed training steps (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads on CPU (default: torch's choice)")
    p.add_argument("--cross-check", action="store_true",
                   help="also compare our batch-1 median with torch.utils.benchmark.Timer for the first model")
    p.add_argument("--json", metavar="OUT", help="write fibrobench.latency/1 JSON here (atomic)")
    p.add_argument("--info-only", action="store_true", help="params and FLOPs only, no timing")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _fmt_mb(b):
    return "-" if b is None else f"{b / 2**20:.0f}"


def format_table(res: dict) -> str:
    """A short text table of a fibrobench.latency/1 result."""
    rows = [("model", "prec", "params M", "GFLOPs", "b1 p50/p90/p99 ms", "img/s (batch)", "max-batch img/s",
             "peak MB", "train ms", "train peak MB")]
    dev_cuda = res["device"]["type"] == "cuda"
    for name, m in res["models"].items():
        if "error" in m:
            rows.append((name, "-", "-", "-", "ERROR: " + m["error"][:60], "", "", "", "", ""))
            continue
        gfl = "-" if m.get("flops") is None else f"{m['flops'] / 1e9:.2f}"
        precs = [p for p in ("fp32", "bf16") if p in m] or ["-"]
        for prec in precs:
            per = m.get(prec, {"batch": {}})
            b1 = per["batch"].get("1")
            lat = "-" if b1 is None else f"{b1['p50_ms']:.2f}/{b1['p90_ms']:.2f}/{b1['p99_ms']:.2f}"
            bigs = [k for k in per["batch"] if k != "1"]
            tp = "-" if not bigs else f"{per['batch'][bigs[-1]]['images_per_s']:.0f} ({bigs[-1]})"
            mb = per.get("max_batch") or {}
            mbt = "-" if not mb.get("timing") else f"{mb['timing']['images_per_s']:.0f} ({mb['batch']})"
            first = next(iter(per["batch"].values()), None)
            peak = None if first is None else (first["peak_allocated_bytes"] if dev_cuda else first["peak_rss_bytes"])
            tr = m.get("train", {}).get("by_precision", {}).get(prec)
            rows.append((name, prec, f"{m['params'] / 1e6:.2f}", gfl, lat, tp, mbt, _fmt_mb(peak),
                         "-" if tr is None else f"{tr['p50_ms']:.1f}",
                         "-" if tr is None else _fmt_mb(tr["peak_allocated_bytes"] if dev_cuda else tr["peak_rss_bytes"])))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    d = res["device"]
    head = f"device: {d['type']} {d.get('name') or ''} (torch {d.get('torch')}, threads {d.get('threads')})"
    mem = "peak MB = max_memory_allocated" if dev_cuda else "peak MB = process peak RSS (VmHWM, reset per measurement)"
    return "\n".join([head, *lines, mem])


def main(args) -> int:
    import torch

    from bench import latency as L
    from protocols.device import resolve_device

    proto_models = None
    if args.protocol:
        from protocols.config import load_protocol
        proto = load_protocol(args.protocol)
        proto_models = list(proto.models)
        if args.input_size is None:
            args.input_size = int(proto.data.input_size)
        if args.num_classes is None and proto.task is not None:
            args.num_classes = len(proto.task.classes)
    if args.input_size is None:
        args.input_size = 224
    if args.num_classes is None:
        args.num_classes = 5
    if args.num_classes < 2:
        raise BadInput("<command line>", "--num-classes", f"need at least 2 classes, got {args.num_classes}")

    device = resolve_device(args.device)
    for key, value in L.DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():   # per-device defaults
        if getattr(args, key) is None:
            setattr(args, key, value)

    precs = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    bad = [p for p in precs if p not in L.PRECISIONS]
    if bad or not precs:
        raise BadInput("<command line>", "--precisions", f"unknown {bad or precs}; choose from {list(L.PRECISIONS)}")
    for field, v in (("--runs", args.runs), ("--input-size", args.input_size), ("--throughput-runs", args.throughput_runs),
                     ("--train-runs", args.train_runs)):
        if v < 1:
            raise BadInput("<command line>", field, f"must be >= 1, got {v}")
    if args.warmup < 0:
        raise BadInput("<command line>", "--warmup", f"must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise BadInput("<command line>", "--threads", f"must be >= 1, got {args.threads}")
    if args.train_batch < 0:
        raise BadInput("<command line>", "--train-batch", f"must be >= 0, got {args.train_batch}")
    if args.threads:
        torch.set_num_threads(args.threads)

    import models
    known = models.list_models()
    names = ([n.strip() for n in args.models.split(",") if n.strip()] if args.models
             else proto_models or list(known))
    if not names:
        raise BadInput("<command line>", "--models", f"no model named; built-in: {', '.join(known)}")
    from models.registry import get_spec
    for n in names:  # a name that is neither built-in nor a timm/tv/factory model is bad input, before measuring
        if n not in known:
            get_spec(n)

    logger = logging.getLogger("fibrobench.latency")
    log = (lambda s: None) if args.quiet else logger.info
    if args.info_only:
        from bench.provenance import collect
        prov = collect(args.argv, device=str(device))
        res = {"schema": L.SCHEMA, "device": L.device_block(prov, device), "packages": prov["packages"],
               "provenance": prov,
               "settings": {"input_size": args.input_size, "num_classes": args.num_classes, "info_only": True},
               "models": {n: {"input_size": args.input_size,
                              **L.model_facts(L.default_factory(n, args.input_size, args.num_classes),
                                              args.input_size)}
                          for n in names}}
    else:
        cfg = L.LatencyConfig(input_size=args.input_size, batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
                              precisions=precs, channels_last=args.channels_last, compile=args.compile,
                              runs=args.runs, warmup=args.warmup, throughput_runs=args.throughput_runs,
                              max_batch=args.max_batch_cap > 0, max_batch_cap=max(1, args.max_batch_cap),
                              train_batch=args.train_batch or None, train_runs=args.train_runs,
                              num_classes=args.num_classes)
        partial = None
        if args.json:
            partial = lambda r: write_json(args.json + ".partial", r)  # noqa: E731 - progress file, renamed at the end
        res = L.run_latency(names, cfg, device, command=args.argv, log=log, on_model=partial)
        if args.cross_check and "error" not in res["models"][names[0]]:
            m = L.default_factory(names[0], args.input_size, args.num_classes).to(device)
            log(f"cross-check {names[0]} against torch.utils.benchmark.Timer")
            res["cross_check"] = {"model": names[0], **L.cross_check(m, device, 1, args.input_size,
                                                                     runs=max(5, args.runs // 3))}
    print(format_table(res))
    if "cross_check" in res:
        c = res["cross_check"]
        print(f"cross-check {c['model']}: ours {c['ours_median_ms']:.3f} ms vs torch.utils.benchmark.Timer "
              f"{c['timer_median_ms']:.3f} ms (diff {100 * c['rel_diff']:.1f}%)")
    if args.json:
        import os
        write_json(args.json, res)
        if os.path.exists(args.json + ".partial"):
            os.unlink(args.json + ".partial")
        logger.info("wrote %s", args.json)
    failed = [n for n, m in res["models"].items() if "error" in m]
    if failed:
        logger.error("%d model(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":  # `python -m bench.commands.latency ...`: this command alone, without the other commands' imports
    from bench.cli import Parser, configure_logging, run_command

    configure_logging()
    _p = Parser(prog="fibrobench latency", description=DESCRIPTION)
    add_arguments(_p)
    _a = _p.parse_args()
    _a.argv, _a.command, _a._main = ["latency", *sys.argv[1:]], NAME, main
    sys.exit(run_command(_a))
