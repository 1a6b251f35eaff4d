"""Planted shortcuts for the synthetic generator: a label-correlated cue outside the tissue, of adjustable strength.

Kinds (`fibrobench synth --shortcut KIND --shortcut-strength S`):
  none    nothing planted (the default; the generator's output is byte-identical to a run without this module)
  text    a burned-in marker of (cue + 1) small squares at grey level 255 in the bottom-left corner, outside the
          sector, like an annotation glyph; it survives down-scaling to tiny inputs, unlike font text
  device  the scanner is assigned by stage: stage k gets STAGE_DEVICES[k mod 5] (and a site that has it), so the
          device's sector geometry, grey map and burned-in model name all follow the stage
  border  the background outside the sector is set to grey level BORDER_STEP * cue instead of 0
Each patient has one cue. With probability S it shows the patient's own stage, otherwise a stage drawn uniformly
(which may coincide), so S = 0 plants an uninformative cue and S = 1 a perfect one. The draws come from their own
random stream (seed, 3, ...): the cohort, anatomy and speckle are those of the same seed without a shortcut.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from protocols.errors import BadInput
from protocols.synth_render import OVERLAY_LEVEL, SITES, geometry

SHORTCUTS = ("none", "text", "device", "border")
STAGE_DEVICES = ("D1", "D2", "D3", "D6", "D7")   # D1-D3 exist only at site S1, D6-D7 only at S2
BORDER_STEP = 12       # grey levels per stage outside the sector (0..48). A step of 5 was too weak for a small CNN
                       # to prefer over memorising patients. Levels above ~40 defeat hashing.sector_mask's fixed
                       # threshold, so the shortcut audit subtracts the frame's background level first.


def check(kind: str, strength: float, where="synth") -> None:
    if kind not in SHORTCUTS:
        raise BadInput(where, "shortcut", f"expected one of {', '.join(SHORTCUTS)}, got {kind!r}")
    if not (isinstance(strength, (int, float)) and 0.0 <= float(strength) <= 1.0):
        raise BadInput(where, "shortcut_strength", f"must be within 0..1, got {strength!r}")


def plant(plan: pd.DataFrame, kind: str, strength: float, seed: int, n_stages: int = 5) -> pd.DataFrame:
    """The cohort plan with a `cue` column (the stage the cue shows) and, for `device`, reassigned scanners."""
    check(kind, strength)
    plan = plan.copy()
    if kind == "none":
        plan["cue"] = -1
        return plan
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    n = len(plan)
    honest = rng.random(n) < float(strength)
    random_stage = rng.integers(0, n_stages, n)
    site_pick = rng.random(n)
    cue = np.where(honest, plan["stage"].to_numpy(), random_stage).astype(int)
    plan["cue"] = cue
    if kind == "device":
        devices = [STAGE_DEVICES[c % len(STAGE_DEVICES)] for c in cue]
        sites = []
        for d, u in zip(devices, site_pick):
            have = [s for s, ds in SITES.items() if d in ds]
            sites.append(have[int(u * len(have))])
        plan["device"], plan["site"] = devices, sites
    return plan


def apply_cue(img: np.ndarray, kind: str, cue: int, device: str) -> np.ndarray:
    """Burn the cue of one frame into `img` (uint8 [H, W], rendered by synth_render.render_frame) in place."""
    if kind in ("none", "device") or cue < 0:
        return img
    H, W = img.shape
    outside = ~geometry(device, W, H).mask
    if kind == "border":
        img[outside & (img == 0)] = BORDER_STEP * int(cue)
        return img
    q = max(3, int(round(0.04 * H)))                       # square side
    y0 = H - int(round(0.03 * H)) - q
    marker = np.zeros_like(outside)
    for k in range(int(cue) + 1):
        x0 = int(round(0.015 * W)) + 2 * q * k
        marker[y0:y0 + q, x0:x0 + q] = True
    img[marker & outside] = OVERLAY_LEVEL
    return img
