"""One conversion of any PIL image mode to 8 bits, shared by the training cache and the near-duplicate hashes.

"L" and "RGB" are kept; "1" -> "L"; 16-bit and 32-bit integer grey ("I;16*", "I") are scaled by 255/65535 with
rounding (values clipped to 0..65535, so a 12-bit image stays dark rather than being stretched per image);
"LA" drops alpha; RGBA (alpha dropped, no compositing), palette and the other colour modes become RGB through
PIL; floating-point images ("F") are refused with BadInput. `to_gray8` adds PIL's RGB -> L luma conversion.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from protocols.errors import BadInput

INT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(im: Image.Image, path="") -> Image.Image:
    """An "L" or "RGB" image with the conversions documented above."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in INT_MODES:
        a = np.asarray(im).astype(np.int64)
        a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8), mode="L")
    if mode == "LA":
        return im.getchannel("L")
    if mode == "F":
        raise BadInput(path, "image", "floating-point images are not supported (export 8- or 16-bit)")
    return im.convert("RGB")     # RGBA (alpha dropped), P/PA (palette expanded), CMYK, YCbCr, LAB, HSV


def to_gray8(im: Image.Image, path="") -> Image.Image:
    """An 8-bit grey ("L") image: to_8bit, then PIL's ITU-R 601-2 luma for colour."""
    im = to_8bit(im, path)
    return im if im.mode == "L" else im.convert("L")
