"""Reproduce the accuracy results and record their learning curves.

Runs `nnps train` for each configuration below and copies its metrics.jsonl to
docs/results/NAME.jsonl, then prints the final test accuracy of each. The MNIST runs use
the 10k-image subset in ../shared/data/mnist-10k (numbers on it are NOT comparable to
full-MNIST results); Fashion-MNIST is the full 60k/10k set.

Run: .venv/bin/python bench/accuracy.py [NAME ...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST_10K = REPO.parent / "shared" / "data" / "mnist-10k"
RESULTS = REPO / "docs" / "results"

RUNS = {
    "seed-mnist10k": [  # the seed's network, exactly
        "--data", str(MNIST_10K), "--hidden", "30", "--activation", "sigmoid", "--output", "sigmoid", "--cost",
        "quadratic", "--weight-init", "normal", "--lr", "3.0", "--batch-size", "10", "--epochs", "30"],
    "relu-mnist10k": [
        "--data", str(MNIST_10K), "--hidden", "300", "--activation", "relu", "--output", "softmax", "--cost",
        "cross-entropy", "--weight-init", "scaled", "--optimizer", "momentum", "--lr", "0.05", "--momentum", "0.9",
        "--l2", "0.0005", "--schedule", "cosine", "--batch-size", "32", "--epochs", "30"],
    "relu-fashion": [
        "--data", "fashion-mnist", "--hidden", "500,300", "--activation", "relu", "--output", "softmax", "--cost",
        "cross-entropy", "--weight-init", "scaled", "--optimizer", "momentum", "--lr", "0.05", "--momentum", "0.9",
        "--l2", "0.0005", "--schedule", "cosine", "--batch-size", "64", "--epochs", "40"],
}  # fmt: skip


def main(names: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"{'run':<16} {'epochs':>6} {'test acc':>9} {'best':>7} {'train s':>8}")
    for name in names or list(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", *RUNS[name], "--run-dir", tmp,
                                  "--json"], capture_output=True, text=True, check=True)  # fmt: skip
            summary = json.loads(out.stdout.strip().splitlines()[-1])
            shutil.copy(Path(tmp) / "metrics.jsonl", RESULTS / f"{name}.jsonl")
        rows = [json.loads(line) for line in (RESULTS / f"{name}.jsonl").read_text().splitlines()]
        best = max(r["test_accuracy"] for r in rows)
        print(f"{name:<16} {len(rows):>6} {rows[-1]['test_accuracy']:>9.2%} {best:>7.2%} "
              f"{summary['train_seconds']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
