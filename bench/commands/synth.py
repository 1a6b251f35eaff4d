"""`fibrobench synth OUT_DIR`: write a synthetic B-mode liver-ultrasound dataset (F0..F4 folders + manifest.csv)."""
from __future__ import annotations

import os
import re
import sys

from bench.funnel import nonneg_int, positive_int
from protocols.errors import BadInput

NAME = "synth"
HELP = "generate a synthetic liver-ultrasound dataset (ImageFolder F0..F4 + manifest.csv)"
DESCRIPTION = (HELP + ". Patients with several near-duplicate frames each, stage prevalence as in the public "
               "dataset, 2 sites and 8 scanner profiles; same seed -> byte-identical PNGs.")


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m:
        raise BadInput("--size", None, f"expected WIDTHxHEIGHT such as 800x600, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p):
    from protocols.synth import DEFAULT_EFFECT_SIZE, DEFAULT_PATIENTS, MAX_FRAMES, MEAN_FRAMES

    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must not exist or be empty)")
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help=f"number of patients (mean 7 frames each; default {DEFAULT_PATIENTS} ~ 6,300 frames)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--size", default="800x600", help="frame size WIDTHxHEIGHT (default 800x600)")
    p.add_argument("--frames-per-patient", type=float, default=MEAN_FRAMES, metavar="MEAN",
                   help=f"mean frames per patient, 1 + Poisson(MEAN - 1), at most {MAX_FRAMES} (default {MEAN_FRAMES})")
    p.add_argument("--effect-size", type=float, default=DEFAULT_EFFECT_SIZE,
                   help=f"strength of the stage-dependent echotexture (default {DEFAULT_EFFECT_SIZE:g}); "
                        "0 = images carry no label information")
    p.add_argument("--shortcut", default="none", choices=["none", "text", "device", "border"],
                   help="plant a label-correlated cue outside the tissue: a burned-in text marker, scanners assigned "
                        "by stage, or a grey-level change outside the sector (default: none)")
    p.add_argument("--shortcut-strength", type=float, default=1.0,
                   help="probability that a patient's cue shows its own stage (else a random one); default 1")
    p.add_argument("--no-patient-id", action="store_true",
                   help="leave patient_id out of manifest.csv (like the public dataset); truth -> patients_truth.csv")
    p.add_argument("--no-overlay", action="store_true", help="no burned-in text, depth scale or grey bar")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="worker processes (default: CPU count, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it was written by `fibrobench synth`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    from bench.provenance import collect
    from protocols.synth import generate_dataset

    size = parse_size(args.size)
    if args.workers < 1:
        raise BadInput("--workers", None, f"must be >= 1, got {args.workers}")
    prov = collect(args.argv, device="cpu", seeds={"synth": args.seed})
    df = generate_dataset(args.out_dir, n_patients=args.patients, seed=args.seed, size=size,
                          effect_size=args.effect_size, hide_patient_id=args.no_patient_id,
                          overlay=not args.no_overlay, progress=not args.quiet and sys.stderr.isatty(),
                          workers=args.workers, overwrite=args.overwrite, provenance=prov,
                          shortcut=args.shortcut, shortcut_strength=args.shortcut_strength,
                          mean_frames=args.frames_per_patient)
    counts = df["label"].value_counts().sort_index()
    print(f"wrote {len(df)} frames of {df['patient_id'].nunique()} patients to {args.out_dir} "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0
