"""PNG pictures of what `nnps.core.inspect` computes, drawn with matplotlib.

Weights and gradients use a diverging colour map centred on 0 (blue negative, red
positive), scaled per neuron so that each neuron's pattern is visible whatever its size.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nnps.core.errors import NnpsError
from nnps.core.inspect import Inside, Mistakes, ShardSums

Array = np.ndarray
DIVERGING = "RdBu_r"


def pyplot(who: str = "nnps inspect") -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise NnpsError(f"{who} needs matplotlib: pip install 'nnps[plot]'")
    return plt


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight", pad_inches=0.1)  # titles and labels whole, never cut at the edge
    pyplot().close(fig)
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def neuron_grid(rows: Array, side: tuple[int, int], title: str, labels: Sequence[str] | None = None) -> Any:
    """Each row of `rows` (a neuron's weights over the pixels) as a side[0] x side[1] image."""
    plt = pyplot()
    r, c = _grid(len(rows))
    fig, axes = plt.subplots(r, c, figsize=(1.1 * c + 0.4, 1.1 * r + 0.7), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(rows):
            v = float(np.max(np.abs(rows[i]))) or 1.0
            ax.imshow(rows[i].reshape(side), cmap=DIVERGING, vmin=-v, vmax=v)
            if labels is not None:
                ax.set_title(labels[i], fontsize=6)
    fig.suptitle(title, fontsize=10)
    return fig


def heat(matrix: Array, title: str, xlabel: str, ylabel: str, columns: Sequence[str] | None = None) -> Any:
    """A layer's weights (or gradient) W^l, (n_l, n_{l-1}), each row scaled to its own max;
    `columns`: the inputs' names (a table's features), written under their columns."""
    plt = pyplot()
    scale = np.max(np.abs(matrix), axis=1, keepdims=True)
    scaled = matrix / np.where(scale == 0, 1, scale)
    width = 2 + matrix.shape[1] / (3 if columns is not None else 12)
    fig, ax = plt.subplots(figsize=(min(14, max(width, 5)), min(9, 1.5 + matrix.shape[0] / 10)))
    im = ax.imshow(scaled, cmap=DIVERGING, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if columns is not None and len(columns) <= 80:
        ax.set_xticks(range(len(columns)), list(columns), rotation=60, ha="right", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, label="per-neuron scale")
    fig.tight_layout()
    return fig


def _strip(ax: Any, values: Array, title: str, diverging: bool) -> None:
    """A vector as one row of coloured cells (a layer's z, a or delta)."""
    if diverging:
        v = float(np.max(np.abs(values))) or 1.0
        ax.imshow(values[None, :], cmap=DIVERGING, vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
    else:
        ax.imshow(values[None, :], cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_yticks([])
    ax.set_title(f"{title}  [{values.min():.3g}, {values.max():.3g}]", fontsize=8, loc="left")


def forward_and_backward(inside: Inside, side: tuple[int, int], names: Sequence[str],
                         features: Sequence[str] | None = None) -> Any:  # fmt: skip
    """The input, each layer's z^l and a^l, delta^L (BP1), delta^l (BP2), dC/db^l (BP3), and
    the outputs beside the target. A table's row (`features`: its columns) is drawn as bars."""
    plt = pyplot()
    L = len(inside.zs)
    fig = plt.figure(figsize=(13, 2.2 + 1.3 * L))
    grid = fig.add_gridspec(L + 1, 4, width_ratios=[1.1, 3, 3, 3])
    ax = fig.add_subplot(grid[:, 0])
    said = (f"true {names[inside.label]}, predicted {names[inside.prediction]}" if isinstance(inside.label, int)
            else "a row and its targets")  # fmt: skip
    if features is None:
        ax.imshow(inside.pixels.reshape(side), cmap="gray")
        ax.set_axis_off()
    else:
        shown = min(len(features), 40)
        ax.barh(range(shown), inside.pixels[:shown], color=np.where(inside.pixels[:shown] < 0, "tab:blue", "tab:red"))
        ax.set_yticks(range(shown), list(features[:shown]), fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("standardized value", fontsize=7)
    ax.set_title(f"x: {said}", fontsize=9)
    for l in range(L):
        n = l + 1
        _strip(fig.add_subplot(grid[l, 1]), inside.zs[l], f"z^{n} = W^{n} a^{n - 1} + b^{n}", True)
        _strip(fig.add_subplot(grid[l, 2]), inside.activations[n], f"a^{n} = sigma(z^{n})", False)
        eq = f"BP1: delta^{n} = grad_a C (.) sigma'(z^{n})" if n == L else \
            f"BP2: delta^{n} = (W^{n + 1})^T delta^{n + 1} (.) sigma'(z^{n})"  # fmt: skip
        _strip(fig.add_subplot(grid[l, 3]), inside.deltas[l], f"{eq} = dC/db^{n} (BP3)", True)
    ax = fig.add_subplot(grid[L, 1:])
    k = np.arange(len(inside.output))
    ax.bar(k - 0.2, inside.output, 0.4, label="a^L (output)")
    ax.bar(k + 0.2, inside.target, 0.4, label="y (one-hot target)" if isinstance(inside.label, int)
           else "y (the targets, standardized)", color="tab:gray")  # fmt: skip
    ax.set_xticks(k, list(names), fontsize=7)
    ax.set_title(f"the outputs beside the target; C_x = {inside.cost:.4f}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrix(confusion: Array, names: Sequence[str], title: str) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(np.log1p(confusion), cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    ax.set_xticks(range(len(names)), list(names), rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), list(names), fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def worst_mistakes(images: Array, m: Mistakes, labels: Array, names: Sequence[str], side: tuple[int, int],
                   count: int = 36) -> Any:  # fmt: skip
    plt = pyplot()
    worst = m.worst[:count]
    r, c = _grid(max(len(worst), 1))
    fig, axes = plt.subplots(r, c, figsize=(1.4 * c, 1.55 * r + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, worst):
        ax.imshow(images[i].reshape(side), cmap="gray")
        ax.set_title(f"#{i}: {names[m.predicted[i]]} {m.confidence[i]:.2f}\ntrue {names[labels[i]]}", fontsize=6)
    fig.suptitle("the most confidently wrong test images: predicted (its output), true", fontsize=9)
    return fig


def shards(s: ShardSums, layers: list[tuple[str, Array, Array, list[Array]]]) -> Any:
    """For each layer given (name, the whole batch's dC/db, the total, each shard's), the
    shards' sums beside their total and the batch's own sum."""
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), 1, figsize=(12, 2.6 * len(layers)), squeeze=False)
    for ax, (name, whole, total, parts) in zip(axes[:, 0], layers):
        n = len(whole)
        x = np.arange(n)
        width = 0.8 / (len(parts) + 2)
        for i, part in enumerate(parts):
            ax.bar(x + i * width, part, width, label=f"shard {i + 1} ({len(s.shards[i])} examples)")
        ax.bar(x + len(parts) * width, total, width, label="sum of the shards", color="black")
        ax.bar(x + (len(parts) + 1) * width, whole, width, label="whole batch, one call", color="tab:gray")
        ax.set_title(f"{name}: sum over examples of dC_x/db, per shard", fontsize=9)
        ax.axhline(0, color="black", lw=0.5)
        ax.legend(fontsize=6, ncol=4)
    fig.suptitle(f"step {s.step}'s mini-batch over {len(s.shards)} shards: the shards' gradient sums add up to the "
                 f"batch's (max |difference| over all parameters {s.max_difference:.2g})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    pyplot().close(fig)
    return buf.getvalue()


def animation(frames: list[bytes], path: Path, ms: int = 400) -> Path:
    """PNG frames (same size) as an animated GIF."""
    from PIL import Image

    images = [Image.open(io.BytesIO(f)).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0)
    return path
