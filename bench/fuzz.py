"""The readers under a coverage-guided fuzzer (atheris, libFuzzer's engine), each target for
a time, from the corpus in tests/data/fuzz/; tests/test_fuzz.py runs the same targets a few
seconds each under hypothesis. A finding is an input that raises outside the target's
errors (or crashes the process): it is written to fuzz-findings/NAME-*.bin and the run says
so. Needs atheris (`pip install atheris`). Run:

    .venv/bin/python bench/fuzz.py [--seconds 60] [--only NAME]   # one child process per target
    .venv/bin/python bench/fuzz.py --make-corpus                  # (re)write tests/data/fuzz/
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fuzz_targets


def fuzz_one(name: str, seconds: int) -> None:
    """In this process: atheris over one target until the time is up."""
    import atheris

    with atheris.instrument_imports():
        from tests.fuzz_targets import TARGETS
    target = next(t for t in TARGETS if t.name == name)
    scratch = Path(tempfile.mkdtemp(prefix=f"nnps-fuzz-{name}-"))

    def one(data: bytes) -> None:
        try:
            target.read(data, scratch)
        except target.errors:
            pass

    corpus = tempfile.mkdtemp(prefix="nnps-corpus-")  # libFuzzer adds to it: a copy, not the repo's
    for i, seed in enumerate(target.seeds()):
        Path(corpus, f"seed-{i}").write_bytes(seed)
    findings = REPO / "fuzz-findings"  # (ignored by git; a fixed one goes to tests/data/fuzz-findings/NAME/)
    findings.mkdir(exist_ok=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=4096", "-max_len=65536",
                   f"-artifact_prefix={findings}/{name}-", "-print_final_stats=1", corpus], one)  # fmt: skip
    atheris.Fuzz()


def run_all(names: list[str], seconds: int) -> None:
    print(f"| target | executions | coverage (edges) | corpus | findings |\n| --- | ---: | ---: | ---: | --- |")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--seconds", str(seconds)],
                             capture_output=True, text=True)  # fmt: skip
        log = out.stdout + out.stderr
        runs = re.findall(r"stat::number_of_executed_units: (\d+)", log)
        cov = re.findall(r"cov: (\d+)", log)
        corp = re.findall(r"corp: (\d+)/", log)
        found = re.findall(r"Test unit written to (\S+)", log)
        crashed = out.returncode != 0 and not found
        note = ", ".join(found) or ("the process died: " + log.strip().splitlines()[-1][:120] if crashed else "none")
        print(f"| {name} | {runs[-1] if runs else '?'} | {cov[-1] if cov else '?'} | {corp[-1] if corp else '?'} "
              f"| {note} |", flush=True)


def make_corpus() -> None:
    """Small valid files of each kind, from the MNIST subset the repository carries."""
    import gzip
    import io
    import json

    import numpy as np
    from PIL import Image

    from nnps.core.checkpoint import Checkpoint, to_bytes
    from nnps.core.config import TrainConfig
    from nnps.core.datasets import Dataset, load_idx_dir, write_parquet_dir
    from nnps.core.idx import write_idx
    from nnps.core.network import Network, initial_params
    from tests.fuzz_targets import CORPUS

    ds = load_idx_dir(REPO / "tests" / "data" / "mnist-10k")
    x, y = ds.x_train[:3].reshape(3, 28, 28), ds.y_train[:3]
    small = Dataset("seed", ds.x_train[:3], y, ds.x_test[:2], ds.y_test[:2])
    files: dict[str, list[bytes]] = {}
    with tempfile.TemporaryDirectory() as d:
        write_idx(Path(d, "i"), x)
        write_idx(Path(d, "l"), y)
        files["idx-images"] = [Path(d, "i").read_bytes(), gzip.compress(Path(d, "i").read_bytes(), mtime=0)]
        files["idx-labels"] = [Path(d, "l").read_bytes(), gzip.compress(Path(d, "l").read_bytes(), mtime=0)]
        write_parquet_dir(small, Path(d, "pq"))
        files["parquet"] = [Path(d, "pq", "train.parquet").read_bytes()]
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=y, x_test=ds.x_test[:2], y_test=ds.y_test[:2])
    files["npz"] = [buf.getvalue()]
    png = io.BytesIO()
    Image.fromarray(x[0]).save(png, format="PNG")
    files["image"] = [png.getvalue()]
    net = Network((784, 3, 10), "sigmoid", "sigmoid", "quadratic", "float32")
    config = TrainConfig(data="mnist-10k", hidden=(3,), steps=0)
    meta = {"step": 0, "epoch": 0, "seed": 0, "dataset": ds.fingerprint, "optimizer": "sgd", "config": config.to_dict(),
            "progress": [0.0, 0, 0]}  # fmt: skip
    files["checkpoint"] = [to_bytes(Checkpoint(net, initial_params(net, "normal", 0), {}, meta))]
    npy = io.BytesIO()
    np.save(npy, np.array([[0, 0, 0], [2, 1, 0], [1, 0, 1]], np.int64))
    files["updates"] = [npy.getvalue()]
    files["config"] = [config.to_json().encode()]
    files["metrics"] = [b'{"epoch": 1, "step": 10, "test_accuracy": 0.5}\n{"epoch": 2, "step": 20, "test_accuracy": 0.6}\n']
    files["ui-predict"] = [json.dumps({"pixels": [int(v) for v in x[0].reshape(-1)]}).encode()]
    for name, seeds in files.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for i, data in enumerate(seeds):
            (folder / f"seed-{i}{'.npz' if name == 'checkpoint' else ''}").write_bytes(data)
    print(f"wrote {sum(map(len, files.values()))} seeds under {CORPUS}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--only")
    p.add_argument("--child")
    p.add_argument("--make-corpus", action="store_true")
    args = p.parse_args()
    if args.make_corpus:
        return make_corpus()
    if args.child:
        sys.argv = sys.argv[:1]
        return fuzz_one(args.child, args.seconds)
    from tests.fuzz_targets import TARGETS

    run_all([args.only] if args.only else [t.name for t in TARGETS], args.seconds)


if __name__ == "__main__":
    main()
