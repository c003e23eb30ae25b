"""core/images.centred against MNIST's own digits, which were made the way it claims to
make them (ink fitted to 20x20, centre of mass at the centre of 28x28): a test digit drawn
larger, elsewhere, on a bigger canvas comes back as about the same 28x28 image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nnps.core.idx import read_images
from nnps.core.images import box_for, centred
from tests.conftest import MNIST_10K


def test_a_moved_and_enlarged_digit_comes_back_as_mnist_made_it() -> None:
    digits = read_images(MNIST_10K / "t10k-images-idx3-ubyte.gz")[:200]
    rng = np.random.default_rng(0)
    similar = []
    for digit in digits:
        scale = rng.uniform(1.5, 4.0)
        big = np.asarray(Image.fromarray(digit).resize((round(28 * scale),) * 2, Image.Resampling.BICUBIC))
        canvas = np.zeros((140, 140), np.uint8)  # drawn somewhere on a larger pad
        y, x = rng.integers(0, 140 - big.shape[0] + 1), rng.integers(0, 140 - big.shape[1] + 1)
        canvas[y : y + big.shape[0], x : x + big.shape[1]] = big
        out = centred(canvas, (28, 28), 20).astype(float)
        a = digit.reshape(-1).astype(float)
        similar.append(out @ a / (np.linalg.norm(out) * np.linalg.norm(a)))
        ys, xs = np.indices((28, 28))
        img = out.reshape(28, 28)
        com = ((ys * img).sum() / img.sum(), (xs * img).sum() / img.sum())
        assert abs(com[0] - 14) <= 0.75 and abs(com[1] - 14) <= 0.75, com
    # a 1-pixel shift of a thin 1 costs most of its overlap: the bound is on the median and the 5th percentile
    assert np.median(similar) > 0.95 and np.percentile(similar, 5) > 0.8, (np.median(similar), min(similar))


def test_mnist_digits_are_already_what_centred_makes() -> None:
    digits = read_images(MNIST_10K / "t10k-images-idx3-ubyte.gz")[:200]
    same = [np.array_equal(centred(d, (28, 28), 20).reshape(28, 28), d) for d in digits]
    assert np.mean(same) > 0.7  # most come back bit for bit: the same box, the same centre


def test_the_box_the_ink_fills_and_an_empty_pad() -> None:
    bar = np.zeros((50, 200), np.uint8)
    bar[20:30, 10:190] = 255  # a wide stroke: its long side becomes 20 pixels, the aspect kept
    out = centred(bar, (28, 28), 20).reshape(28, 28)
    cols = np.flatnonzero(out.max(0) > 25)
    rows = np.flatnonzero(out.max(1) > 25)
    assert 19 <= len(cols) <= 21 and len(rows) <= 3
    assert not centred(np.zeros((80, 80), np.uint8), (28, 28), 20).any()
    assert box_for([str(i) for i in range(10)], 28) == 20
    assert box_for(["T-shirt/top", "Trouser"], 28) == 28  # not digits: the garment fills the frame
