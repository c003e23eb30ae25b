"""PNGs for the page, drawn with numpy and Pillow (fast enough to serve per request):
W^1 as a grid of per-neuron images, and a grid of test images."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from nnps.core.inspect import side_of

CELL_IMAGES = 48  # test images shown for one cell of the confusion matrix
SCALE = 3  # screen pixels per image pixel


def diverging(v: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] as RGB: blue below 0, white at 0, red above (uint8, shape + (3,))."""
    v = np.clip(v, -1, 1)[..., None]
    white, blue, red = np.array([255, 255, 255.0]), np.array([33, 102, 172.0]), np.array([178, 24, 43.0])
    rgb = np.where(v < 0, white + (-v) * (blue - white), white + v * (red - white))
    return rgb.astype(np.uint8)


def _tile(tiles: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Equal-sized (h, w, 3) tiles in a near-square grid on a grey background."""
    n = max(len(tiles), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2] if tiles else (1, 1)
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 200, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = t
    return out


def _png(rgb: np.ndarray) -> bytes:
    img = Image.fromarray(rgb).resize((rgb.shape[1] * SCALE, rgb.shape[0] * SCALE), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def neuron_grid(w1: np.ndarray, limit: int = 100) -> bytes:
    """Each hidden neuron's row of W^1 as an image of the input's shape, scaled to its own max."""
    side = side_of(w1.shape[1])
    tiles = []
    for row in w1[:limit]:
        m = float(np.max(np.abs(row))) or 1.0
        tiles.append(diverging(row.reshape(side) / m))
    return _png(_tile(tiles))


def image_grid(images: np.ndarray, shape: tuple[int, int]) -> bytes:
    """uint8 images (white on black) in a grid; an empty cell gives one grey tile."""
    tiles = [np.repeat(im.reshape(shape)[..., None], 3, axis=2) for im in images]
    return _png(_tile(tiles or [np.full((*shape, 3), 200, np.uint8)]))
