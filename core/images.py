"""An image file as a network's input: MNIST's convention, white digit on black.

`nnps predict`, `nnps inspect` and `nnps serve` read images here, so a picture gives the
same pixels whichever of them reads it. Pillow decodes; a file that would decode to more
than MAX_PIXELS (a decompression bomb: a few KB of PNG that unpack to gigabytes) is
refused before it is decoded.
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


def decode(data: bytes, where: str, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Image bytes as (rows*cols,) uint8 pixels, and a note of what was done to them."""
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
    note = ""
    if gray.size != (shape[1], shape[0]):
        note += f"resized from {gray.size[0]}x{gray.size[1]}; "
        gray = gray.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    a = np.asarray(gray, dtype=np.uint8)
    if a.mean() > 127:  # dark digit on a light background: invert to MNIST's convention
        a = 255 - a
        note += "inverted (light background); "
    return a.reshape(-1), note.rstrip("; ")


def read_image(spec: str, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """An image file, or IDXFILE:INDEX (one image of an IDX file), as decode() gives it."""
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
    return decode(data, spec, shape)


def side_of(num_inputs: int) -> tuple[int, int]:
    """The square image a network with `num_inputs` inputs takes."""
    side = int(round(np.sqrt(num_inputs)))
    if side * side != num_inputs:
        raise DataError(f"the network takes {num_inputs} inputs, which is no square image")
    return side, side
