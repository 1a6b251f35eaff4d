"""`fibrobench models`: the registry (or any timm/tv/factory model) with parameters, CBAM overhead, FLOPs, memory.

`--models` takes built-in names, `timm/<name>`, `tv/<name>` and `package.module:factory`; `--search PATTERN`
lists the timm and torchvision names matching a shell-style pattern (no facts, nothing built).

`--json OUT` schema "fibrobench.models/1":
  {"schema", "input_size", "num_classes", "flops_method", "activation_method",
   "models": {name: {"name", "input_size", "num_classes", "params_total", "params_trainable",
                     "params_cbam", "n_cbam_modules", "added_params_vs_resnet50",
                     "flops" (FlopCounterMode, batch 1, = 2 x macs), "macs", "activation_bytes"}},
   "provenance": bench.provenance.collect(...)}
"""
from __future__ import annotations

import argparse

NAME = "models"
HELP = "list registered models with params, FLOPs and activation memory"
DESCRIPTION = ("List the model registry with parameter counts, parameters added relative to resnet50, "
               "FLOPs (FlopCounterMode, 2 FLOPs per MAC) and an fp32 activation estimate at batch 1.")
SCHEMA = "fibrobench.models/1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=int, default=224, help="square input size in pixels (default 224)")
    p.add_argument("--num-classes", type=int, default=5, help="classifier outputs (default 5: F0..F4)")
    p.add_argument("--models", default=None,
                   help="comma-separated names (default: the built-in ones); also timm/<name>, tv/<name>, "
                        "package.module:factory")
    p.add_argument("--search", default=None, metavar="PATTERN",
                   help="list timm/<name> and tv/<name> models matching PATTERN (e.g. 'resnet1*') and exit")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the facts as JSON to OUT")


def format_table(rows: list[dict]) -> str:
    width = max([20] + [len(r["name"]) for r in rows])
    head = f"{'model':<{width}} {'params':>13} {'added vs resnet50':>18} {'CBAM':>4} {'GFLOPs':>8} {'GMACs':>7} {'act. MB':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<{width}} {r['params_total']:>13,} {r['added_params_vs_resnet50']:>+18,} "
                     f"{r['n_cbam_modules']:>4} {r['flops'] / 1e9:>8.3f} {r['macs'] / 1e9:>7.3f} "
                     f"{r['activation_bytes'] / 2**20:>8.1f}")
    return "\n".join(lines)


def search(pattern: str) -> list[str]:
    """timm/<name> and tv/<name> (classification) model names matching a shell-style pattern."""
    import fnmatch

    import timm
    import torchvision.models as tvm

    return ([f"timm/{n}" for n in timm.list_models(pattern)]
            + [f"tv/{n}" for n in tvm.list_models(module=tvm) if fnmatch.fnmatch(n, pattern)])


def main(args) -> int:
    from bench.provenance import collect
    from models.facts import ACTIVATION_NOTE, FLOPS_NOTE, facts_table
    from models.registry import check_input_size, get_spec, list_models
    from protocols.atomic import write_json
    from protocols.errors import BadInput

    if args.search is not None:
        found = search(args.search)
        print("\n".join(found) if found else f"no timm or torchvision model matches {args.search!r}")
        return 0
    names = list_models() if not args.models else [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        check_input_size(get_spec(n), args.input_size)
    if args.num_classes < 2:
        raise BadInput("--num-classes", None, f"need at least 2 classes, got {args.num_classes}")
    rows = facts_table(names, args.input_size, args.num_classes)
    print(f"input {args.input_size}x{args.input_size}, batch 1, {args.num_classes} classes; "
          f"FLOPs = 2 x MACs (conv/linear/matmul only); act. MB = {ACTIVATION_NOTE}")
    print(format_table(rows))
    if args.json:
        write_json(args.json, {
            "schema": SCHEMA, "input_size": args.input_size, "num_classes": args.num_classes,
            "flops_method": FLOPS_NOTE, "activation_method": ACTIVATION_NOTE,
            "models": {r["name"]: {k: v for k, v in r.items() if k not in ("flops_method", "activation_method")}
                       for r in rows},
            "provenance": collect(getattr(args, "argv", None), device="meta"),
        })
    return 0
