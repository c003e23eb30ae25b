"""bench/step_overhead.py on an earlier commit and on this tree, side by side in one run.

Each round runs the earlier commit's step_overhead.py and this tree's, one after the
other, each in its own process and its own local Ray, on 784-30-10 (or --hidden) at
batches 10, 100 and 1,000 with 1 and 2 workers, and keeps each row's best ms/step over
the rounds. The earlier commit is checked out into a temporary directory (git worktree)
and imported through a `nnps/` of symlinks put first on PYTHONPATH (each child prints
which code it ran). Rows are matched by what carried the steps:

    this tree (--transport)   the earlier commit (its modes)
    unix                      sock+shm   (the step file and Unix sockets)
    tcp                       link       (a TCP link per node, relayed)
    ray                       plain      (Ray calls, the vectors inline or in the object store)

A ref that has the channels already (cluster/transport.py) runs with the same --transports.

Run: .venv/bin/python bench/before_after.py [--ref e02a38a] [--rounds 2] [--hidden 30] [--batches 100]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"unix": "sock+shm", "tcp": "link", "ray": "plain"}
ROW = re.compile(r"^\s*(\d+)?\s+(\d+)\s+(\S+)\s+([\d.]+)\s")


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def checkout(ref: str, where: Path) -> Path:
    """The tree at `ref` in `where`/tree, importable as nnps through `where`/path/nnps."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where / "tree"), ref], check=True,
                   capture_output=True)  # fmt: skip
    shim = where / "path" / "nnps"
    shim.mkdir(parents=True)
    for pkg in ("core", "worker", "cluster", "ui", "cli"):
        if (where / "tree" / pkg).is_dir():
            (shim / pkg).symlink_to(where / "tree" / pkg)
    return where / "tree"


def run(tree: Path, pythonpath: str | None, args: list[str]) -> tuple[str, dict[tuple[int, int, str], float]]:
    """One step_overhead.py run: (the module it imported, {(batch, workers, mode): ms})."""
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    code = ("import runpy, sys, nnps.cluster.calibrate as c; print('code:', c.__file__, flush=True); "
            f"sys.argv = ['step_overhead.py', *{args!r}]; runpy.run_path({str(tree / 'bench' / 'step_overhead.py')!r}, "
            "run_name='__main__')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    rows, batch, used = {}, 0, ""
    for line in out.stdout.splitlines():
        if line.startswith("code:"):
            used = line.split(None, 1)[1]
        elif m := ROW.match(line):
            batch = int(m[1]) if m[1] else batch
            rows[(batch, int(m[2]), m[3])] = float(m[4])
    return used, rows


def main() -> None:
    ref, rounds, hidden = arg("--ref", "e02a38a"), int(arg("--rounds", "2")), arg("--hidden", "30")
    common = ["--quick", "--hidden", hidden] + (["--batches", arg("--batches", "")] if "--batches" in sys.argv else [])
    with tempfile.TemporaryDirectory(prefix="nnps-before-") as tmp:
        before_tree = checkout(ref, Path(tmp))
        try:
            best: dict[str, dict] = {"before": {}, "after": {}}
            channels = (before_tree / "cluster" / "transport.py").exists()  # the ref takes --transports too
            pairs = {name: name for name in PAIRS} if channels else PAIRS
            old_flags = ["--transports", ",".join(PAIRS)] if channels else ["--modes", ",".join(PAIRS.values())]
            for r in range(rounds):
                for name, tree, path, args in (
                    ("before", before_tree, str(Path(tmp) / "path"), [*common, *old_flags]),
                    ("after", REPO, None, [*common, "--transports", ",".join(PAIRS)]),
                ):  # fmt: skip
                    used, rows = run(tree, path, args)
                    print(f"round {r + 1}, {name}: {len(rows)} rows from {used}", flush=True)
                    for key, ms in rows.items():
                        best[name][key] = min(ms, best[name].get(key, ms))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_tree)], capture_output=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\n784-{hidden.replace(',', '-')}-10, best ms/step of {rounds} rounds: {ref} (before) and {head} + tree (after)")
    print(f"{'batch':>6} {'N':>2} {'channel':>8} {'before':>8} {'after':>8} {'after/before':>12}")
    for (batch, k, mode), ms in sorted(best["after"].items()):
        if k == 0 or mode not in pairs:
            continue
        old = best["before"].get((batch, k, pairs[mode]))
        ratio = f"{ms / old:>11.2f}x" if old else f"{'-':>12}"
        print(f"{batch:>6} {k:>2} {mode:>8} {old or float('nan'):>8.2f} {ms:>8.2f} {ratio}")


if __name__ == "__main__":
    main()
