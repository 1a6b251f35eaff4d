"""`fibrobench weights fetch|where MODEL...`: the one command that downloads (published ImageNet weights, hash-checked).

`fetch` downloads through torchvision's / timm's own functions into their usual caches (torch hub cache,
Hugging Face cache) and checks the file against the library's published hash; `where` only says where
`run` looks for each model's weights offline and whether they are there.

`--json OUT` schema "fibrobench.weights/1":
  {"schema", "action": "fetch"|"where", "models": {name: RECORD}, "provenance": bench.provenance.collect(...)}
  fetch RECORD = {"model", "library", "tag", "url", "hf_repo", "path", "already_cached", "sha256",
                  "published_hash" (torch.hub file-name prefix or HF LFS sha256; null if the library publishes
                  none), "verified"} or {"model", "error"}
  where RECORD = {"model", "sources": [{"library", "tag", "expected", "cached": path|null}]}
"""
from __future__ import annotations

import logging

NAME = "weights"
HELP = "fetch published ImageNet weights (explicit download, hash-checked) or show where they are expected"
DESCRIPTION = ("`fetch`: download each model's published ImageNet weights through torchvision's or timm's own "
               "mechanism into their usual caches and check the library's published hash (the only command that "
               "uses the network; `run` never does). `where`: the offline locations `run` looks in.")
SCHEMA = "fibrobench.weights/1"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_ in (("fetch", "download (if not cached) and hash-check the weights of MODEL..."),
                          ("where", "show where the weights of MODEL... are expected offline (no network)")):
        a = sub.add_parser(action, help=help_, description=help_)
        a.add_argument("models", nargs="+", metavar="MODEL",
                       help="built-in name, timm/<name>[.tag] or tv/<name>")
        a.add_argument("--json", metavar="OUT", help=f"also write the records as JSON ({SCHEMA})")


def _where(spec) -> dict:
    from models.hub import imagenet_sources

    return {"model": spec.name, "sources": [
        {"library": s.library, "tag": s.tag, "expected": s.where(),
         "cached": None if s.cache_path() is None else str(s.cache_path())} for s in imagenet_sources(spec)]}


def main(args) -> int:
    from bench.provenance import collect
    from models.hub import fetch
    from models.registry import get_spec
    from protocols.atomic import write_json

    log = logging.getLogger("fibrobench.weights")
    specs = [get_spec(n) for n in args.models]  # every name checked before anything is downloaded
    records, failed = {}, []
    for spec in specs:
        if args.action == "where":
            rec = _where(spec)
            for s in rec["sources"] or [{"library": "-", "tag": "-", "expected": "no published weights known",
                                          "cached": None}]:
                print(f"{spec.name:<28} {s['library']}:{s['tag']:<24} "
                      f"{'CACHED ' + s['cached'] if s['cached'] else 'missing ' + s['expected']}")
        else:
            try:
                rec = fetch(spec)
                state = "already cached" if rec["already_cached"] else "downloaded"
                check = (f"sha256 matches the published {rec['published_hash']}" if rec["verified"]
                         else "no published hash to check against")
                print(f"{spec.name}: {state} {rec['path']} ({check})")
            except Exception as exc:  # noqa: BLE001 - one model's failure (network, hash) is recorded, others go on
                rec = {"model": spec.name, "error": f"{type(exc).__name__}: {exc}"}
                failed.append(spec.name)
                log.error("%s: FAILED %s", spec.name, rec["error"])
        records[spec.name] = rec
    if args.json:
        write_json(args.json, {"schema": SCHEMA, "action": args.action, "models": records,
                               "provenance": collect(getattr(args, "argv", None), device="none")})
    return 1 if failed else 0
