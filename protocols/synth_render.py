"""Physics of the synthetic B-mode liver frames: scanner profiles, patient anatomy, speckle, scan conversion.

Model (per frame): a patient-persistent tissue map (echogenicity E and a complex Gaussian scatterer field Z,
both in the patient's reference Cartesian coordinates) is sampled on the probe's polar grid (beams x depth
samples) after a small rigid probe motion; the scatterers, weighted by sqrt(E), are convolved with a Gaussian
complex-baseband point-spread function (axial along the beam, lateral across beams, so lateral speckle grows
with depth as in a diverging sector scan), electronic noise is added, the envelope |.| is taken (Rayleigh
distributed where E is constant), two-way depth attenuation and the scanner's time-gain compensation are
applied, the envelope is log-compressed into the scanner's dynamic range, and the polar image is scan-converted
(bilinear) into the W x H frame; pixels outside the sector are exactly 0. Overlay text and depth markers are
burned in at grey level 255, outside the sector.

Everything is in physical units (cm) and scaled by each scanner's depth setting, so the same patient code
renders at 800x600 or 96x72. Randomness comes only from the numpy Generator handed in: same seed, same bytes
(on the same platform and library versions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

# ---------------------------------------------------------------- scanner profiles


@dataclass(frozen=True)
class Device:
    """One scanner profile (values are plausible abdominal convex-probe settings, not any vendor's)."""

    name: str
    model: str          # text burned into the overlay
    depth_cm: float     # displayed depth
    half_angle_deg: float
    convex_r_cm: float  # probe footprint radius (apex sits this far above the skin line)
    psf_axial_mm: float     # sigma of the axial PSF envelope
    psf_lateral_mm: float   # sigma of the lateral PSF at mid-depth
    dyn_range_db: float
    gain_db: float
    tgc_comp: float     # fraction of the mean tissue attenuation the TGC compensates
    gamma: float        # grey map exponent
    noise_db: float     # electronic noise floor relative to mean parenchyma (E = 1)


DEVICES: tuple[Device, ...] = (
    Device("D1", "CX-5A", 16.0, 35, 5.0, 0.35, 1.2, 60, 0.0, 0.95, 1.00, -50),
    Device("D2", "AB-41", 15.0, 30, 4.0, 0.30, 1.0, 66, 2.0, 0.90, 0.90, -55),
    Device("D3", "US-9S", 18.0, 37, 6.0, 0.45, 1.6, 54, -2.0, 1.00, 1.10, -48),
    Device("D4", "CV-62", 14.0, 33, 4.5, 0.28, 0.9, 70, 1.0, 0.92, 1.00, -58),
    Device("D5", "EP-7", 17.0, 36, 5.5, 0.40, 1.4, 58, -1.0, 0.97, 1.15, -52),
    Device("D6", "LX-3C", 16.0, 28, 3.5, 0.32, 1.1, 62, 3.0, 0.88, 0.85, -54),
    Device("D7", "MQ-20", 20.0, 38, 6.0, 0.50, 1.8, 50, -3.0, 1.02, 1.05, -46),
    Device("D8", "SV-8", 15.0, 34, 5.0, 0.30, 1.0, 64, 0.0, 0.94, 0.95, -56),
)
DEVICE_BY_NAME = {d.name: d for d in DEVICES}
SITES = {"S1": ("D1", "D2", "D3", "D4", "D5"), "S2": ("D4", "D5", "D6", "D7", "D8")}
SITE_LABEL = {"S1": "HOSP-1", "S2": "HOSP-2"}
ATTEN_DB_PER_CM = 1.5    # mean one-way tissue attenuation at the imaging frequency (dB/cm)
OVERLAY_LEVEL = 255      # grey level of burned-in text and markers
# Default strength of the stage signal (latent severity = effect size x stage / 4). 1.0 was not learnable across
# patients at smoke scale (patient-level ResNet-50 smoke run: fold-validation balanced accuracy near chance);
# see docs/leakage.md ("The synthetic stage signal") for the fold-validation figures this value was chosen on.
DEFAULT_EFFECT_SIZE = 4.0
# the strongest signal the renderer draws: above it an F4 liver's surface nodules (0.45 t^3 cm) push the surface past
# the depth range the vessels are drawn in (numpy raised 'high - low < 0' at 4.5); synth refuses more (exit 2)
MAX_EFFECT_SIZE = 4.0

# ---------------------------------------------------------------- geometry (cached per device and size)


@dataclass
class Geometry:
    """Sector geometry of one device at one frame size, with the scan-conversion tables."""

    W: int
    H: int
    ppc: float          # pixels per cm
    r0: float           # skin-line radius (px from apex)
    r1: float           # deepest radius
    cx: float
    y_apex: float
    half_angle: float   # rad
    n_r: int
    n_b: int
    radii: np.ndarray   # [n_r]
    angles: np.ndarray  # [n_b]
    margin: int         # padding of the patient map around the frame
    pix: np.ndarray     # flat indices of in-sector pixels
    src: np.ndarray     # [4, n_pix] flat polar indices for bilinear scan conversion
    wts: np.ndarray     # [4, n_pix] weights
    mask: np.ndarray    # [H, W] bool, True inside the sector
    map_shape: tuple    # (Hm, Wm) of the padded scatterer map (1 px = 1 frame px)
    echo_ds: int        # the echogenicity map is stored at 1/echo_ds of the frame resolution (it is smooth)
    map_r: np.ndarray   # [He, We] radius of each echogenicity-map pixel centre (reference probe position)
    map_phi: np.ndarray  # [He, We] beam angle of each echogenicity-map pixel centre


@lru_cache(maxsize=64)
def geometry(device_name: str, W: int, H: int) -> Geometry:
    dev = DEVICE_BY_NAME[device_name]
    top = max(1.0, 0.05 * H)
    depth_px = H - 2 * top
    ppc = depth_px / dev.depth_cm
    r0 = dev.convex_r_cm * ppc
    r1 = r0 + depth_px
    half = math.radians(dev.half_angle_deg)
    half = min(half, math.asin(min(1.0, 0.45 * W / r1)))   # the sector fits in 90 % of the width
    cx = (W - 1) / 2.0
    y_apex = top - r0
    n_r = max(8, int(round(depth_px)))
    n_b = max(8, int(math.ceil(2 * half * r1 / 2.5)) + 1)   # beams <= 2.5 px apart at the deepest point
    radii = (r0 + (np.arange(n_r, dtype=np.float64) + 0.5) * (depth_px / n_r)).astype(np.float32)
    angles = np.linspace(-half, half, n_b).astype(np.float32)

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = xx - cx, yy - y_apex
    rr = np.hypot(dx, dy)
    ph = np.arctan2(dx, dy)
    fi = (rr - r0) / (depth_px / n_r) - 0.5
    fj = (ph + half) / (2 * half) * (n_b - 1)
    mask = (rr >= r0) & (rr <= r1) & (np.abs(ph) <= half)
    fi_m = np.clip(fi[mask], 0, n_r - 1.001)
    fj_m = np.clip(fj[mask], 0, n_b - 1.001)
    i0 = np.floor(fi_m).astype(np.int64)
    j0 = np.floor(fj_m).astype(np.int64)
    wi, wj = fi_m - i0, fj_m - j0
    src = np.stack([i0 * n_b + j0, i0 * n_b + j0 + 1, (i0 + 1) * n_b + j0, (i0 + 1) * n_b + j0 + 1]).astype(np.intp)
    wts = np.stack([(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj]).astype(np.float32)
    pix = np.flatnonzero(mask)

    margin = int(math.ceil(0.08 * H)) + 2
    ds = 2 if H >= 200 else 1
    Hm, Wm = H + 2 * margin, W + 2 * margin
    He, We = -(-Hm // ds), -(-Wm // ds)
    my, mx = np.mgrid[0:He, 0:We].astype(np.float64)
    mdx = mx * ds + (ds - 1) / 2 - margin - cx
    mdy = my * ds + (ds - 1) / 2 - margin - y_apex
    return Geometry(W, H, ppc, r0, r1, cx, y_apex, half, n_r, n_b, radii, angles, margin,
                    pix, src, wts, mask, (Hm, Wm), ds, np.hypot(mdx, mdy).astype(np.float32),
                    np.arctan2(mdx, mdy).astype(np.float32))


# ---------------------------------------------------------------- random fields


def gaussian_random_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with Gaussian correlation of width sigma_px.

    Large correlation lengths are generated on a coarser grid and upsampled bilinearly (same statistics, cheaper).
    """
    H, W = shape
    f = max(1, int(sigma_px // 2))
    h, w = H // f + 3, W // f + 3
    g = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), max(sigma_px / f, 0.3),
                                mode="wrap")
    g -= g.mean()
    g /= g.std() + 1e-12
    if f > 1:
        g = np.asarray(Image.fromarray(g, mode="F").resize((w * f, h * f), Image.BILINEAR))
    return np.ascontiguousarray(g[:H, :W])


def _fourier_curve(rng, phi: np.ndarray, half: float, amp: float, terms: int = 3) -> np.ndarray:
    """Smooth random function of the beam angle (patient-specific layer boundaries)."""
    out = np.zeros_like(phi)
    for k in range(1, terms + 1):
        out += (amp / k) * rng.standard_normal() * np.cos(k * math.pi * phi / (2 * half) + rng.uniform(0, 2 * math.pi))
    return out


# ---------------------------------------------------------------- patient


@dataclass
class Patient:
    """A patient's persistent tissue as seen by one scanner at one frame size."""

    pid: str
    stage: int
    severity: float          # latent fibrosis severity t in [0, 1] (stage + patient noise, x effect size)
    device: Device
    site: str
    size: tuple[int, int]
    echo: np.ndarray         # [He, We] float32 echogenicity (mean backscattered power), 1/echo_ds resolution
    scat: np.ndarray         # [Hm, Wm] complex64 scatterer field
    atten_db_cm: float
    gain_db: float
    tgc_knots_db: np.ndarray = field(default_factory=lambda: np.zeros(8, np.float32))  # operator's TGC sliders


def make_patient(rng: np.random.Generator, pid: str, stage: int, device: str, site: str,
                 size=(800, 600), effect_size: float = DEFAULT_EFFECT_SIZE, severity_sd: float = 0.45,
                 homogeneous: bool = False) -> Patient:
    """Draw one patient's anatomy and stage-dependent liver echotexture.

    The latent severity is t = effect_size * clip(stage + N(0, severity_sd), 0, 4) / 4, so adjacent stages
    overlap; with effect_size = 0 the images carry no information about the label. `homogeneous=True` gives a
    uniform phantom (E = 1 everywhere, no anatomy) for speckle-statistics checks.
    """
    W, H = size
    dev = DEVICE_BY_NAME[device]
    g = geometry(device, W, H)
    Hm, Wm = g.map_shape
    He, We = g.map_r.shape
    ds = g.echo_ds
    ppc = g.ppc
    ppe = ppc / ds                                   # echogenicity-map pixels per cm
    scat = np.empty((Hm, Wm), np.complex64)
    scat.real = rng.standard_normal((Hm, Wm), dtype=np.float32)
    scat.imag = rng.standard_normal((Hm, Wm), dtype=np.float32)
    scat *= np.float32(math.sqrt(0.5))
    t = effect_size * float(np.clip(stage + rng.normal(0.0, severity_sd), 0.0, 4.0)) / 4.0
    if homogeneous:
        # attenuation exactly compensated by the scanner's TGC: uniform brightness with depth
        return Patient(pid, stage, t, dev, site, size, np.ones((He, We), np.float32), scat,
                       ATTEN_DB_PER_CM * dev.tgc_comp, 0.0)

    d = (g.map_r - g.r0) / ppc                      # depth below the skin (cm), reference probe position
    phi = g.map_phi
    half = g.half_angle
    # body wall: skin, subcutaneous fat, muscle; boundaries vary smoothly with the beam angle
    skin = 0.2
    fat = skin + rng.uniform(0.4, 2.2) + _fourier_curve(rng, phi, half, 0.25)
    muscle = fat + rng.uniform(0.5, 1.4) + _fourier_curve(rng, phi, half, 0.2)
    # liver surface, nodular with severity (F4: scalloped contour)
    nod_amp = 0.45 * t ** 3
    width = rng.uniform(0.5, 0.9)                    # nodule width (cm along the surface)
    arc = phi * (g.r0 / ppc + muscle)                # lateral position along the surface (cm)
    bumps = np.abs(np.sin(math.pi * arc / width + rng.uniform(0, math.pi)))
    surface = muscle + 0.15 + nod_amp * (1.0 - bumps) + _fourier_curve(rng, phi, half, 0.3)
    surf_med = float(np.median(surface))
    diaph = rng.uniform(0.7, 1.3) * dev.depth_cm + _fourier_curve(rng, phi, half, 1.2) + rng.normal(0, 2.0) * phi

    echo = np.full((He, We), 1.8, np.float32)        # skin / above the skin line
    echo[d > skin] = 0.12
    echo[(d > fat) & (d <= muscle)] = 0.5
    striation = 1.0 + 0.5 * np.cos(2 * math.pi * d / rng.uniform(0.15, 0.3))
    sel = (d > fat) & (d <= muscle)
    echo[sel] *= striation[sel]
    liver = (d > surface) & (d < diaph)

    # stage-dependent parenchyma: coarser, more heterogeneous, brighter; septa network; hypoechoic nodules
    het = gaussian_random_field(rng, (He, We), (0.06 + 0.20 * t) * ppe)
    sep_field = gaussian_random_field(rng, (He, We), (0.30 + 0.15 * t) * ppe)
    septa = np.exp(-(sep_field / 0.14) ** 2)
    fatty = rng.normal(0.0, 0.18)                    # steatosis-like brightness, unrelated to stage
    par = np.exp(fatty + (0.10 + 0.75 * t) * het) * (1.0 + 0.35 * t)
    par *= 1.0 + 4.0 * t ** 2 * septa - 0.3 * t ** 3 * (1.0 - septa)
    echo[liver] = par[liver]
    capsule = (d > surface - 0.12) & (d <= surface + 0.04)
    echo[capsule] = 2.6 * (1.0 + 0.5 * t * rng.random())
    below = d >= diaph
    echo[below] = 0.25
    echo[below & (d < diaph + 0.3)] = 4.5

    x_cm = g.map_r * np.sin(phi) / ppc
    y_cm = g.map_r * np.cos(phi) / ppc
    r0c = g.r0 / ppc
    # gallbladder (sometimes): anechoic ellipse near the surface with posterior enhancement
    if rng.random() < 0.3:
        ang = rng.uniform(-0.6, 0.6) * half
        dep = r0c + surf_med + rng.uniform(1.0, 3.0)
        gx, gy = dep * math.sin(ang), dep * math.cos(ang)
        a, b, rot = rng.uniform(1.2, 2.2), rng.uniform(0.6, 1.2), rng.uniform(0, math.pi)
        u = (x_cm - gx) * math.cos(rot) + (y_cm - gy) * math.sin(rot)
        v = -(x_cm - gx) * math.sin(rot) + (y_cm - gy) * math.cos(rot)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        behind = (np.abs(phi - ang) < max(a, b) / dep * 0.7) & (d > dep - r0c + b)
        echo[behind & liver] *= 1.4
        echo[inside] = 0.002
    # vessels: anechoic tubes, portal veins with bright walls
    for _ in range(int(rng.integers(4, 9))):
        ang = rng.uniform(-0.9, 0.9) * half
        dep = r0c + rng.uniform(surf_med + 1.0, dev.depth_cm * 0.95)
        c = np.array([dep * math.sin(ang), dep * math.cos(ang)])
        th = rng.uniform(0, math.pi)
        hl = rng.uniform(0.8, 3.5)
        rad = rng.uniform(0.15, 0.7)
        p, q = c - hl * np.array([math.cos(th), math.sin(th)]), c + hl * np.array([math.cos(th), math.sin(th)])
        x0 = int(max(0, ((min(p[0], q[0]) - rad - 0.2) * ppc + g.cx + g.margin) / ds))
        x1 = int(min(We, ((max(p[0], q[0]) + rad + 0.2) * ppc + g.cx + g.margin) / ds + 2))
        y0 = int(max(0, ((min(p[1], q[1]) - rad - 0.2) * ppc + g.y_apex + g.margin) / ds))
        y1 = int(min(He, ((max(p[1], q[1]) + rad + 0.2) * ppc + g.y_apex + g.margin) / ds + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        bx, by = x_cm[y0:y1, x0:x1], y_cm[y0:y1, x0:x1]
        vx, vy = q - p
        s = np.clip(((bx - p[0]) * vx + (by - p[1]) * vy) / (vx * vx + vy * vy), 0, 1)
        dist = np.hypot(bx - p[0] - s * vx, by - p[1] - s * vy)
        sub = echo[y0:y1, x0:x1]
        inl = liver[y0:y1, x0:x1]
        if rng.random() < 0.5:
            sub[(dist <= rad + 0.1) & (dist > rad) & inl] = 3.0
        sub[(dist <= rad) & inl] = 0.002
    # rib shadow (sometimes): a dark wedge along a few beams below the body wall
    if rng.random() < 0.45:
        side = 1 if rng.random() < 0.5 else -1
        a0 = side * rng.uniform(0.45, 0.85) * half
        wdt = rng.uniform(0.08, 0.2)
        edge = np.clip(1.0 - np.abs(phi - a0) / (wdt / 2), 0, 1)
        sh = (d > muscle + 0.3) * np.clip(edge * 3.0, 0, 1)
        echo *= (1.0 - 0.93 * sh).astype(np.float32)
    # uneven probe contact / beam angle: a smooth lateral brightness change of a few dB across the sector
    echo *= np.exp(_fourier_curve(rng, phi, half, 0.35, terms=2)).astype(np.float32)
    echo = np.maximum(echo, 1e-4).astype(np.float32)
    atten = ATTEN_DB_PER_CM * rng.uniform(0.8, 1.25)
    knots = rng.normal(0.0, 4.0, 8).astype(np.float32)      # the exam's TGC slider positions (dB), 8 depth zones
    return Patient(pid, stage, t, dev, site, size, echo, scat, atten, rng.normal(0.0, 2.0), knots)


# ---------------------------------------------------------------- frames


@lru_cache(maxsize=64)
def _psf_transfer(n_r: int, n_b: int, sig_r: float, sig_b: float) -> np.ndarray:
    """Gaussian PSF transfer function on the polar grid, scaled so that sum(h^2) = 1 (unit speckle power)."""
    fr = sfft.fftfreq(n_r).astype(np.float32)[:, None]
    fb = sfft.fftfreq(n_b).astype(np.float32)[None, :]
    Hf = np.exp(-2 * math.pi ** 2 * (sig_r ** 2 * fr ** 2 + sig_b ** 2 * fb ** 2)).astype(np.float32)
    Hf *= np.float32(1.0 / math.sqrt(float(np.mean(Hf.astype(np.float64) ** 2))))
    return Hf


def speckle_envelope(scat: np.ndarray, echo: np.ndarray, sig_r: float, sig_b: float,
                     noise: np.ndarray | None = None) -> np.ndarray:
    """|PSF * (sqrt(E) Z)| (+ noise): the envelope of a complex-baseband echo signal on a polar grid.

    For constant E and circular complex Gaussian Z with E|Z|^2 = 1 the envelope is Rayleigh with E[env^2] = E.
    """
    s = scat * np.sqrt(echo)
    spec = sfft.fft2(s, workers=1)
    spec *= _psf_transfer(s.shape[0], s.shape[1], float(sig_r), float(sig_b))
    out = sfft.ifft2(spec, workers=1, overwrite_x=True)
    if noise is not None:
        out += noise
    return np.abs(out)


@lru_cache(maxsize=8)
def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _overlay(img: np.ndarray, g: Geometry, p: Patient, frame_no: int) -> np.ndarray:
    """Burn in scanner-like text, a depth scale and a grey bar, all outside the sector."""
    W, H = g.W, g.H
    dev = p.device
    # depth scale: a tick every cm, longer every 5 cm, right of the sector
    xs = int(round(min(W - 3, g.cx + 0.45 * W + 0.02 * W)))
    tick = max(1, W // 200)
    for k in range(int(dev.depth_cm) + 1):
        y = int(round(g.y_apex + g.r0 + k * g.ppc))
        if 0 <= y < H:
            ln = 3 * tick if k % 5 == 0 else tick
            img[max(0, y - tick // 2):y + tick // 2 + 1, max(0, xs - ln):xs + 1] = OVERLAY_LEVEL
    # grey bar on the left
    bw = max(2, W // 80)
    y0, y1 = int(0.3 * H), int(0.7 * H)
    x0 = max(0, int(round(g.cx - 0.45 * W - 0.02 * W - bw)))
    img[y0:y1, x0:x0 + bw] = np.linspace(OVERLAY_LEVEL, 0, y1 - y0).astype(np.uint8)[:, None]
    if H < 200:
        return img
    pil = Image.fromarray(img, mode="L")
    draw = ImageDraw.Draw(pil)
    draw.fontmode = "1"          # crisp, non-antialiased text: every text pixel is exactly OVERLAY_LEVEL
    fs = max(8, H // 42)
    font = _font(fs)
    left = [SITE_LABEL.get(p.site, p.site), f"{dev.model}  ABD", f"D {dev.depth_cm:.0f}cm",
            f"G {50 + p.gain_db + dev.gain_db:.0f}", f"DR {dev.dyn_range_db:.0f}"]
    for i, txt in enumerate(left):
        draw.text((int(0.012 * W), int(0.012 * H) + i * (fs + 3)), txt, fill=OVERLAY_LEVEL, font=font)
    right = [f"Fr {frame_no + 1}", "MI 1.1", "TIS 0.6"]
    for i, txt in enumerate(right):
        draw.text((int(0.86 * W), int(0.012 * H) + i * (fs + 3)), txt, fill=OVERLAY_LEVEL, font=font)
    return np.asarray(pil).copy()


def render_frame(p: Patient, rng: np.random.Generator, frame_no: int = 0, overlay: bool = True,
                 motion: bool = True, persistence: float | None = None, return_intermediate: bool = False):
    """One uint8 [H, W] frame of patient p (probe motion and fresh speckle drawn from rng).

    With return_intermediate=True returns a dict with the polar envelope before and after depth gain
    ("envelope", "envelope_tgc"), the polar echogenicity ("echo"), the log-compressed polar image in dB
    ("db"), the sector mask and the frame ("image").
    """
    W, H = p.size
    g = geometry(p.device.name, W, H)
    dev = p.device
    if motion:
        rot = math.radians(float(np.clip(rng.normal(0, 0.8), -2.0, 2.0)))
        sx, sy = (np.clip(rng.normal(0, 0.005 * H, 2), -0.015 * H, 0.015 * H)).tolist()
    else:
        rot, sx, sy = 0.0, 0.0, 0.0
    a = float(rng.uniform(0.75, 0.92)) if persistence is None else float(persistence)
    ang = g.angles + np.float32(rot)
    xs = (g.cx + sx + g.margin) + g.radii[:, None] * np.sin(ang)[None, :]
    ys = (g.y_apex + sy + g.margin) + g.radii[:, None] * np.cos(ang)[None, :]
    Hm, Wm = g.map_shape
    He, We = p.echo.shape
    ds = g.echo_ds
    ix = np.clip(np.rint(xs).astype(np.intp), 0, Wm - 1)
    iy = np.clip(np.rint(ys).astype(np.intp), 0, Hm - 1)
    z = p.scat.ravel().take(iy * Wm + ix)
    echo = p.echo.ravel().take((iy // ds) * We + ix // ds) if ds > 1 else p.echo.ravel().take(iy * We + ix)
    if a < 1.0:
        fresh = np.empty(z.shape, np.complex64)
        fresh.real = rng.standard_normal(z.shape, dtype=np.float32)
        fresh.imag = rng.standard_normal(z.shape, dtype=np.float32)
        z *= np.float32(a)
        fresh *= np.float32(math.sqrt((1 - a * a) * 0.5))
        z += fresh
    sig_r = dev.psf_axial_mm / 10 * g.ppc / ((g.r1 - g.r0) / g.n_r)
    r_mid = 0.5 * (g.r0 + g.r1)
    sig_b = dev.psf_lateral_mm / 10 * g.ppc / (r_mid * (2 * g.half_angle / (g.n_b - 1)))
    # the scanner's noise floor sits after the TGC, so refer it back through the depth gain
    depth_cm = (g.radii - g.r0) / g.ppc
    sliders = np.interp(depth_cm / dev.depth_cm, np.linspace(0, 1, len(p.tgc_knots_db)), p.tgc_knots_db)
    gain_db = -2 * p.atten_db_cm * depth_cm + dev.tgc_comp * 2 * ATTEN_DB_PER_CM * depth_cm + sliders
    gain = (10 ** (gain_db / 20)).astype(np.float32)[:, None]
    # electronic noise: white, receiver-filtered like the echoes, power referred back through the depth gain
    noise_pow = (10 ** (dev.noise_db / 10) / gain.astype(np.float64) ** 2).astype(np.float32)
    env = speckle_envelope(z, echo + noise_pow, sig_r, sig_b)
    env_tgc = env * gain
    db = np.log10(env_tgc + np.float32(1e-12))
    db *= np.float32(20)
    top = 0.45 * dev.dyn_range_db + dev.gain_db + p.gain_db
    v = np.clip((db - np.float32(top - dev.dyn_range_db)) * np.float32(1 / dev.dyn_range_db), 0, 1)
    if dev.gamma != 1.0:
        v **= np.float32(dev.gamma)
    polar = v.ravel()
    cart = (polar.take(g.src) * g.wts).sum(axis=0)
    img = np.zeros(H * W, np.uint8)
    img[g.pix] = np.clip(np.rint(cart * 254.0), 0, 254).astype(np.uint8)  # 255 is kept for the overlay
    img = img.reshape(H, W)
    if overlay:
        img = _overlay(img, g, p, frame_no)
    if return_intermediate:
        return {"image": img, "envelope": env, "envelope_tgc": env_tgc, "echo": echo, "db": db, "mask": g.mask}
    return img
