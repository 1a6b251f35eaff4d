"""Synthetic liver-ultrasound dataset: patients, stages, sites and scanners -> OUT/F0..F4/*.png + manifest.csv.

Layout written (see protocols/synth_render.py for the image physics):
  OUT/F0..F4/img_NNNNNN.png   8-bit single-channel grey PNG (mode "L"); file names carry no patient information
  OUT/manifest.csv            path (relative posix), label (F0..F4), patient_id, site, device; sorted by path.
                              With hide_patient_id the patient_id column is left out (like the public dataset)
                              and the truth goes to OUT/patients_truth.csv (path, patient_id) for auditing tools.
  OUT/synth.json              schema "fibrobench.synth/1": generator version, parameters, counts, provenance.
The whole tree is written into a hidden sibling folder (.OUT.tmp-<host>-<pid>-<random>) and renamed into place at
the end, so an interrupted run never leaves a folder that looks like a complete dataset; Ctrl-C and SIGTERM remove it
at once, and the next synth into OUT removes those left by a killed process (kill -9) on this host.

Cohort: one patient per stage, the others allocated in the proportions of the public dataset's images (2,114 /
861 / 793 / 857 / 1,698 of 6,323, largest-remainder rounding), so no class is ever empty; each patient has 1 + Poisson(6) frames (mean 7, at most 16; `mean_frames` changes the mean),
a site (S1 55 %, S2 45 %) and one of that site's five scanner profiles (D4, D5 are used at both sites). Stage is
independent of site and scanner. Same seed -> same cohort and byte-identical PNGs, whatever `workers` is.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import socket
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from protocols.atomic import write_json, write_text
from protocols.errors import BadInput
from protocols.runfiles import LEGACY_CLASS_NAMES as CLASS_NAMES  # the synthetic data are METAVIR stages
from protocols.synth_render import DEFAULT_EFFECT_SIZE, MAX_EFFECT_SIZE, SITES, make_patient, render_frame
from protocols.synth_shortcuts import apply_cue, plant
from protocols.synth_shortcuts import check as check_shortcut

SYNTH_VERSION = "1"
PAPER_IMAGE_COUNTS = (2114, 861, 793, 857, 1698)   # the public dataset's images per stage (6,323 in all)
PREVALENCE = tuple(c / sum(PAPER_IMAGE_COUNTS) for c in PAPER_IMAGE_COUNTS)
DEFAULT_PATIENTS = 900        # x mean 7 frames ~ 6,300 frames, the public dataset's size
MEAN_FRAMES = 7
MAX_FRAMES = 16
SITE_SHARE = {"S1": 0.55, "S2": 0.45}
PNG_COMPRESS_LEVEL = 1        # lossless either way; level 1 + zlib Z_RLE (compress_type=3) is ~2x faster than
                              # the default level 6 and the files are as small (speckle barely compresses)


def allocate(n: int, proportions) -> np.ndarray:
    """Largest-remainder rounding of n into integer counts with the given proportions (sums to n)."""
    p = np.asarray(proportions, dtype=float) / float(np.sum(proportions))
    raw = n * p
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def stage_counts(n_patients: int) -> np.ndarray:
    """Patients per stage: one each, the rest in the paper's proportions (within 2 of n * p for every stage)."""
    return 1 + allocate(n_patients - len(CLASS_NAMES), PREVALENCE)


def plan_cohort(n_patients: int, seed: int = 0, mean_frames: float = MEAN_FRAMES) -> pd.DataFrame:
    """One row per patient: index, patient_id, stage, site, device, n_frames (depends only on the arguments)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    stages = rng.permutation(np.repeat(np.arange(5), stage_counts(n_patients)))
    sites = rng.choice(list(SITE_SHARE), size=n_patients, p=list(SITE_SHARE.values()))
    devices = [SITES[s][int(rng.integers(len(SITES[s])))] for s in sites]
    n_frames = np.minimum(1 + rng.poisson(mean_frames - 1, size=n_patients), MAX_FRAMES)
    width = max(4, len(str(n_patients)))
    return pd.DataFrame({"index": np.arange(n_patients), "patient_id": [f"P{i:0{width}d}" for i in range(n_patients)],
                         "stage": stages, "site": sites, "device": devices, "n_frames": n_frames})


def patient_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of one patient (independent of every other patient and of worker scheduling)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(index)]))


def render_patient_frames(row: dict, seed: int, size=(800, 600), effect_size: float = DEFAULT_EFFECT_SIZE,
                          overlay: bool = True, shortcut: str = "none"):
    """All frames of one planned patient, as a list of uint8 [H, W] arrays (with the planted cue, if any)."""
    rng = patient_rng(seed, row["index"])
    p = make_patient(rng, row["patient_id"], int(row["stage"]), row["device"], row["site"], size=size,
                     effect_size=effect_size)
    frames = [render_frame(p, rng, k, overlay=overlay) for k in range(int(row["n_frames"]))]
    return [apply_cue(f, shortcut, int(row.get("cue", -1)), row["device"]) for f in frames]


def _render_and_write(task):
    row, names, seed, size, effect_size, overlay, root, shortcut = task
    out = []
    for name, img in zip(names, render_patient_frames(row, seed, size, effect_size, overlay, shortcut)):
        rel = f"{CLASS_NAMES[int(row['stage'])]}/{name}"
        Image.fromarray(img, mode="L").save(os.path.join(root, rel), format="PNG", compress_level=PNG_COMPRESS_LEVEL,
                                      compress_type=3)
        out.append({"path": rel, "label": CLASS_NAMES[int(row["stage"])], "patient_id": row["patient_id"],
                    "site": row["site"], "device": row["device"]})
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise BadInput(out, None, "exists and is not a directory")
        if any(out.iterdir()):
            if not overwrite:
                raise BadInput(out, None, "exists and is not empty (choose a new directory, or --overwrite "
                                          "a folder written by `fibrobench synth`)")
            if not (out / "synth.json").is_file():
                raise BadInput(out, None, "refusing to overwrite: not a folder written by `fibrobench synth` "
                                          "(no synth.json)")


_TMP = ".tmp-"    # OUT is written as .OUT.tmp-<host>-<pid>-<random> beside it, then renamed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # someone else's process
        return True
    return True


def clean_stale_tmp(out: Path) -> list[Path]:
    """Remove the hidden temporary folders of earlier `synth` runs into `out` whose process (on this host) is gone
    (killed with SIGKILL, or the machine went down); a folder of a live process or of another host is left alone."""
    removed = []
    host = socket.gethostname()
    for p in Path(out).parent.glob(f".{glob.escape(Path(out).name)}{_TMP}*"):
        parts = p.name[len(f".{Path(out).name}{_TMP}"):].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or not p.is_dir():
            continue
        if not _alive(int(parts[1])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        logging.getLogger("fibrobench.synth").info("removed %d unfinished temporary folder(s) of an interrupted "
                                                   "synth run: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def generate_dataset(out_dir, n_patients: int = DEFAULT_PATIENTS, seed: int = 0, size=(800, 600),
                     effect_size: float = DEFAULT_EFFECT_SIZE, hide_patient_id: bool = False, overlay: bool = True,
                     progress: bool = False, workers: int = 1, overwrite: bool = False,
                     provenance: dict | None = None, shortcut: str = "none",
                     shortcut_strength: float = 1.0, mean_frames: float = MEAN_FRAMES) -> pd.DataFrame:
    """Write a synthetic dataset to out_dir; return the full truth (path, label, patient_id, site, device).

    The returned frame always has patient_id, even when hide_patient_id leaves it out of manifest.csv.
    `shortcut` plants a label-correlated cue (protocols/synth_shortcuts.py) of `shortcut_strength` in 0..1.
    `mean_frames` (1..MAX_FRAMES) sets the mean frames per patient (1 + Poisson(mean_frames - 1), at most MAX_FRAMES).
    """
    out = Path(out_dir)
    W, H = (int(v) for v in size)
    if n_patients < 5:
        raise BadInput(out, "n_patients", f"need at least 5 patients (one per stage), got {n_patients}")
    if W < 32 or H < 32 or W > 4096 or H > 4096:
        raise BadInput(out, "size", f"width and height must be within 32..4096, got {W}x{H}")
    if not (0 <= effect_size <= MAX_EFFECT_SIZE and math.isfinite(effect_size)):
        raise BadInput(out, "effect_size", f"must be a number within 0..{MAX_EFFECT_SIZE:g} (above it the F4 liver "
                                           f"surface leaves the rendered depth range), got {effect_size}")
    if not (1 <= mean_frames <= MAX_FRAMES and math.isfinite(mean_frames)):
        raise BadInput(out, "mean_frames", f"must be a number within 1..{MAX_FRAMES}, got {mean_frames}")
    check_shortcut(shortcut, shortcut_strength, out)
    _check_target(out, overwrite)

    plan = plant(plan_cohort(n_patients, seed, mean_frames), shortcut, shortcut_strength, seed)
    total = int(plan["n_frames"].sum())
    name_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    ids = name_rng.permutation(total)
    starts = np.concatenate([[0], np.cumsum(plan["n_frames"].to_numpy())])
    width = max(6, len(str(total)))

    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out)
    tmp = out.parent / f".{out.name}{_TMP}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for c in CLASS_NAMES:
            (tmp / c).mkdir(parents=True)
        tasks = [(row, [f"img_{i:0{width}d}.png" for i in ids[starts[k]:starts[k + 1]]], seed, (W, H),
                  float(effect_size), bool(overlay), str(tmp), shortcut)
                 for k, row in enumerate(plan.to_dict("records"))]
        rows = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="frame", desc="synth")
        if workers > 1:
            # fork: workers need no re-import of the caller's __main__ (scripts without a main guard work); they
            # only run numpy/scipy/PIL code, so forking a process that imported torch is safe here
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as ex:
                for r in ex.map(_render_and_write, tasks, chunksize=2):
                    rows.extend(r)
                    if bar:
                        bar.update(len(r))
        else:
            for t in tasks:
                r = _render_and_write(t)
                rows.extend(r)
                if bar:
                    bar.update(len(r))
        if bar:
            bar.close()
        truth = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
        manifest = truth.drop(columns=["patient_id"]) if hide_patient_id else truth
        if hide_patient_id:
            write_text(tmp / "patients_truth.csv", truth[["path", "patient_id"]].to_csv(index=False, lineterminator="\n"))
        img_counts = truth["label"].value_counts().reindex(CLASS_NAMES, fill_value=0)
        write_json(tmp / "synth.json", {
            "schema": "fibrobench.synth/1", "generator_version": SYNTH_VERSION,
            "params": {"n_patients": int(n_patients), "seed": int(seed), "size": [W, H],
                       "effect_size": float(effect_size), "hide_patient_id": bool(hide_patient_id),
                       "overlay": bool(overlay), "shortcut": shortcut,
                       "shortcut_strength": float(shortcut_strength), "mean_frames": float(mean_frames)},
            "format": "8-bit single-channel grey PNG (mode L); overlay text/markers at 255, outside the sector 0",
            "n_images": int(len(truth)), "n_patients": int(n_patients),
            "class_counts_images": {c: int(img_counts[c]) for c in CLASS_NAMES},
            "class_counts_patients": {c: int(v) for c, v in zip(CLASS_NAMES, stage_counts(n_patients))},
            "provenance": provenance})
        write_text(tmp / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n"))
        _check_target(out, overwrite)
        if out.exists():
            if any(out.iterdir()):
                shutil.rmtree(out)
            else:
                out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    truth.attrs["root"] = str(out.resolve())
    return truth


def read_synth_info(root) -> dict | None:
    """synth.json of a generated dataset, or None when the folder was not written by the generator."""
    p = Path(root) / "synth.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(p, None, f"not valid JSON ({exc})") from None
