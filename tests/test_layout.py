"""The package's shape: one namespace, dependencies one way (cli -> api -> ui -> cluster -> worker -> core;
api is the package `nnps` itself: `import nnps`, `nnps.model`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "worker", "cluster", "ui", "api", "cli"]
# what each package may import from nnps: the design's one-way chain
ALLOWED = {"core": {"core"}, "worker": {"core", "worker"}, "cluster": {"core", "worker", "cluster"},
           "ui": {"core", "cluster", "ui"}, "api": {"core", "worker", "cluster", "ui", "api"},
           "cli": {"core", "worker", "cluster", "ui", "api", "cli"}}  # fmt: skip
FORBIDDEN_THIRD_PARTY = {"core": {"ray", "typer", "rich", "click", "aiohttp", "matplotlib"},
                         "worker": {"typer", "rich"}, "ui": {"typer", "rich", "ray"}, "api": {"typer", "rich"}}  # fmt: skip


def layer(name: str) -> str:
    """The package an `nnps...` import reaches: nnps.core -> core; nnps, nnps.model -> api."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "api"


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


SOURCES = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + list((REPO / "tests").rglob("*.py")) + list(
    (REPO / "bench").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_bare_top_level_imports(path: Path) -> None:
    bare = [n for n in imports(path) if n.split(".")[0] in PACKAGES and n.split(".")[0] != "api"]
    assert not bare, f"{path.relative_to(REPO)} imports {bare}: use nnps.{bare[0]} (bare names fail once installed)"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_dependencies_point_one_way(pkg: str) -> None:
    for path in (REPO / pkg).rglob("*.py"):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "nnps":
                assert layer(name) in ALLOWED[pkg], f"{path.relative_to(REPO)} imports {name}"
            assert parts[0] not in FORBIDDEN_THIRD_PARTY.get(pkg, set()), f"{path.relative_to(REPO)} imports {name}"


def siblings(path: Path, pkg: str) -> set[str]:
    """The modules of `pkg` that `path` imports: `nnps.pkg.x` and `from nnps.pkg import x`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == f"nnps.{pkg}":
            found |= {a.name for a in node.names}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {n.split(".")[2] for n in names if n.startswith(f"nnps.{pkg}.")}
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_import_cycle_within_a_package(pkg: str) -> None:
    """Modules of a package import each other one way (function-level imports included)."""
    graph = {p.stem: siblings(p, pkg) for p in (REPO / pkg).glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import cycle in {pkg}/: {' -> '.join([*path[path.index(module):], module])}"
        if module not in done:
            for other in graph.get(module, ()):
                visit(other, [*path, module])
            done.add(module)

    for module in graph:
        visit(module, [])


def test_installed_under_one_namespace(tmp_path: Path) -> None:
    """From outside the repo (as a user's code runs), nnps.core imports and core does not."""
    code = ("import nnps, nnps.core, nnps.cli, nnps.cluster, nnps.worker, nnps.ui\nassert callable(nnps.train)\n"
            "try:\n import core\nexcept ModuleNotFoundError:\n print('ok')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n"


def test_functions_fit_on_a_screen() -> None:
    """No function of the product over about 60 lines (a command's option list included)."""
    long = [f"{p.relative_to(REPO)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 65]  # fmt: skip
    assert not long, long


def test_the_training_loop_reaches_its_executor_through_the_protocol() -> None:
    """core/training.py calls what `Executor` declares: no getattr, no `type: ignore`."""
    text = (REPO / "core" / "training.py").read_text()
    assert "getattr(" not in text and "type: ignore" not in text
