"""Every repository path that the README, the docs, a comment or a docstring names exists:
`core/training.py`, `core/costmodel.sweep_shape` (a module and a name defined in it),
`tests/data/fuzz/NAME/` (NAME: any folder there)."""

from __future__ import annotations

import re

from tests.conftest import REPO

TOP = ("core", "worker", "cluster", "ui", "cli", "bench", "tests", "docs", "k8s", ".ci")
PATH = re.compile(r"(?<![\w/.$-])((?:" + "|".join(re.escape(t) for t in TOP) + r")/[\w./*-]*[\w*/])")
TEXTS = [REPO / "README.md", REPO / "Makefile", *(REPO / "docs").rglob("*.md"),
         *(p for top in TOP for p in (REPO / top).rglob("*.py") if p.name != "test_doc_paths.py")]  # fmt: skip


def exists(name: str) -> bool:
    pattern = re.sub(r"\b[A-Z][A-Z_]*\b", "*", name.rstrip("./"))  # NAME, N: placeholders
    if any(REPO.glob(pattern)) or (REPO / pattern).exists() or (REPO / f"{pattern}.py").is_file():
        return True
    module, _, attr = pattern.rpartition(".")  # core/costmodel.sweep_shape, cluster/transport.Transport
    source = REPO / f"{module}.py"
    return bool(module and source.is_file() and re.search(rf"^\s*(def|class) {attr}\b|^{attr}\b",
                                                           source.read_text(), re.M))  # fmt: skip


def test_every_path_named_exists() -> None:
    missing = [f"{text.relative_to(REPO)}:{i}: {m}" for text in TEXTS
               for i, line in enumerate(text.read_text().splitlines(), 1)
               for m in PATH.findall(line) if not exists(m)]  # fmt: skip
    assert not missing, "\n".join(missing)


def test_a_path_that_is_not_there_is_found() -> None:
    assert not exists("worker/node_relay.py") and not exists("core/costmodel.no_such_name")
    assert exists("core/costmodel.sweep_shape") and exists("tests/data/fuzz/NAME/") and exists("docs/results/") and exists("core/costmodel")
