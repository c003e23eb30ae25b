"""An image as a network's input, made as MNIST's digits were: white ink on black, the
ink's bounding box scaled (aspect kept) to fit 20x20, then placed in the 28x28 frame with
its centre of mass at the frame's centre (LeCun et al.). Classes that are not digits
(Fashion-MNIST's garments, KMNIST's characters) fill the frame instead (`box_for`).

`nnps predict`, `nnps inspect`, `nnps serve` and the drawing pad of `nnps ui` all go
through `centred`, so a picture gives the same pixels whichever of them reads it, wherever
and however large it was drawn. Pillow decodes; a file that would decode to more than
MAX_PIXELS (a decompression bomb: a few KB of PNG that unpack to gigabytes) is refused
before it is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np

from nnps.core import idx
from nnps.core.errors import DataError

MAX_PIXELS = 40_000_000  # about a 6300x6300 photo; a digit is far smaller
DIGIT_BOX = 20  # of MNIST's 28: the box each digit's ink was fitted to
INK = 0.1  # a pixel is ink above this share of the brightest (noise in a photo is not)


def box_for(classes: list[str], side: int) -> int:
    """The square the ink is fitted to: 20/28 of the frame for digits (MNIST's way),
    the whole frame for other classes."""
    digits = classes == [str(i) for i in range(len(classes))]
    return round(side * DIGIT_BOX / 28) if digits else side


def centred(gray: np.ndarray, shape: tuple[int, int], box: int) -> np.ndarray:
    """(rows*cols,) uint8: the ink of a (h, w) white-on-black image fitted to box x box
    (aspect kept, Lanczos), its centre of mass moved to the frame's centre. No ink: black."""
    from PIL import Image

    rows, cols = shape
    ink = np.argwhere(gray > INK * gray.max()) if gray.max() > 0 else np.empty((0, 2), int)
    if not len(ink):
        return np.zeros(rows * cols, np.uint8)
    (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
    crop = np.ascontiguousarray(gray[top:bottom, left:right], dtype=np.uint8)  # (h, w)
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))  # Pillow's (w, h)
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    ys, xs = np.indices(small.shape)
    mass = small.sum() or 1.0
    # where small's row 0 and column 0 land: its centre of mass at pixel (14, 14) of 28x28,
    # where MNIST's are (their mean over the test set: 13.99, 14.00)
    y0 = int(round(rows / 2 - (ys * small).sum() / mass))
    x0 = int(round(cols / 2 - (xs * small).sum() / mass))
    out = np.zeros((rows, cols))
    sy, sx = max(0, -y0), max(0, -x0)  # clipped at the frame's edges
    dy, dx = max(0, y0), max(0, x0)
    h, w = min(small.shape[0] - sy, rows - dy), min(small.shape[1] - sx, cols - dx)
    out[dy : dy + h, dx : dx + w] = small[sy : sy + h, sx : sx + w]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(-1)


def decode(data: bytes, where: str, shape: tuple[int, int], box: int) -> tuple[np.ndarray, str]:
    """Image bytes as (rows*cols,) uint8 pixels (`centred`), and a note of what was done."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DataError(f"{where}: {im.width}x{im.height} pixels, more than the {MAX_PIXELS:,} read")
                gray = im.convert("L")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{where}: refused as a decompression bomb ({e})")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{where}: not an image Pillow can read ({e})")
    a = np.asarray(gray, dtype=np.uint8)
    note = f"{a.shape[1]}x{a.shape[0]}, its ink fitted to {box}x{box} and centred"
    if a.mean() > 127:  # dark ink on a light background: invert to MNIST's convention
        a = 255 - a
        note = "inverted (light background); " + note
    return centred(a, shape, box), note


def read_image(spec: str, shape: tuple[int, int], box: int) -> tuple[np.ndarray, str]:
    """An image file as decode() gives it, or IDXFILE:INDEX (one image of an IDX file, as
    it is: a dataset's images are made already)."""
    m = re.fullmatch(r"(.+):(\d+)", spec)
    if m and not Path(spec).exists():
        images = idx.read_images(Path(m.group(1)))
        i = int(m.group(2))
        if i >= len(images):
            raise DataError(f"{m.group(1)}: index {i} out of range (it holds {len(images)} images)")
        return images[i].reshape(-1), ""
    try:
        data = Path(spec).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{spec}: no such file")
    except OSError as e:
        raise DataError(f"{spec}: cannot read ({e.strerror or e})")
    return decode(data, spec, shape, box)


def side_of(num_inputs: int) -> tuple[int, int]:
    """The square image a network with `num_inputs` inputs takes."""
    side = int(round(np.sqrt(num_inputs)))
    if side * side != num_inputs:
        raise DataError(f"the network takes {num_inputs} inputs, which is no square image")
    return side, side
