"""Time summarize_run (all statistics) and HTML rendering on a fake run: six models, 1,267 holdout images, 10,000 resamples.

Usage: python -m bench.scripts.report_speed [--models 6] [--n-test 1267] [--n-boot 10000] [--images-per-patient 3] [--json OUT]
Targets (issue 7): statistics <= 10 s, rendering <= 5 s on the 2-core development machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["resnet50", "resnet50_cbam", "resnet50_cbam_post", "vgg16", "densenet121", "efficientnet_b0",
          "vit_b_16"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--n-test", type=int, default=1267, help="holdout images (approximately; 20 %% of patients)")
    ap.add_argument("--images-per-patient", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from bench.scripts.fake_run import make_fake_run
    from reports.render import build_context, render_html
    from reports.rundir import load_run
    from reports.summary import summarize_loaded

    n_patients = round(args.n_test / 0.2 / args.images_per_patient)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_fake_run(Path(tmp) / "run", models=tuple(MODELS[:args.models]), n_patients=n_patients,
                                images_per_patient=args.images_per_patient)
        t = time.perf_counter()
        run = load_run(run_dir)
        t_load = time.perf_counter() - t
        stats_s, render_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            summary = summarize_loaded(run, n_boot=args.n_boot, seed=0)
            stats_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            html = render_html(build_context(run, summary))
            render_s.append(time.perf_counter() - t)
    out = {"models": args.models, "n_test": summary["n_test"], "n_test_clusters": summary["clusters"]["n_test_clusters"],
           "n_boot": args.n_boot, "load_s": round(t_load, 3), "stats_s": [round(s, 3) for s in stats_s],
           "render_s": [round(s, 3) for s in render_s], "html_bytes": len(html.encode()),
           "stats_best_s": round(min(stats_s), 3), "render_best_s": round(min(render_s), 3)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
