"""Every environment variable nnps reads is declared once (core/environment.py), with its
default, and named in the README; a bad value is one line that echoes it."""

from __future__ import annotations

import ast
import re

import pytest

from nnps.core.environment import BORROWED, LINK_PORT, VARIABLES, WORKER_THREADS
from nnps.core.errors import ConfigError
from tests.conftest import REPO

PRODUCT = [p for pkg in ("core", "worker", "cluster", "ui", "cli") for p in (REPO / pkg).rglob("*.py")]


def names_in_code(path) -> set[str]:
    """The strings in a file's code that are a variable's whole name (as os.environ reads it)."""
    constants = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
    return {c for c in constants if isinstance(c, str) and re.fullmatch(r"NNPS_[A-Z_]+", c)}


def environment_reads(path) -> list[str]:
    """Where a file reads the environment itself: os.environ, os.getenv, or a CLI option's
    envvar= given as a literal name instead of a declared variable's."""
    found = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "os" \
                and n.attr in ("environ", "getenv", "environb"):  # fmt: skip
            found.append(f"line {n.lineno}: os.{n.attr}")
        if isinstance(n, ast.keyword) and n.arg == "envvar" and not (
                isinstance(n.value, ast.Attribute) and n.value.attr == "name"):  # fmt: skip
            found.append(f"line {n.value.lineno}: envvar={ast.unparse(n.value)}")
    return found


def test_the_environment_is_read_only_through_its_declarations() -> None:
    for path in PRODUCT:
        if path.name != "environment.py":
            assert not environment_reads(path), f"{path.relative_to(REPO)}: {environment_reads(path)}"
    names = [v.name for v in (*VARIABLES, *BORROWED)]
    assert len(names) == len(set(names)) and all(v.meaning for v in (*VARIABLES, *BORROWED))


def test_each_variable_is_read_only_where_it_is_declared() -> None:
    declared = {v.name for v in VARIABLES}
    for path in PRODUCT:
        named = names_in_code(path)
        if path.name == "environment.py":
            assert named == declared
        else:
            assert not named, f"{path.relative_to(REPO)} reads {sorted(named)} itself: use core/environment.py's"
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(NNPS_[A-Z_]+)` \| `?([^|`]*?)`?[ (|]", readme, re.M)
    assert sorted(name for name, _ in rows) == sorted(declared)


def test_bad_values_are_one_line(monkeypatch) -> None:
    for v in VARIABLES:
        monkeypatch.setenv(v.name, "")  # set but empty counts as unset
    monkeypatch.setenv("NNPS_WORKER_THREADS", "0")
    with pytest.raises(ConfigError, match=r"^NNPS_WORKER_THREADS='0': expected a whole number >= 1, or auto$"):
        WORKER_THREADS.count()
    monkeypatch.setenv("NNPS_LINK_PORT", "70000")
    with pytest.raises(ConfigError, match=r"^NNPS_LINK_PORT='70000': expected a TCP port, 0 to 65535"):
        LINK_PORT.port()
    monkeypatch.setenv("NNPS_LINK_PORT", "47000")
    assert LINK_PORT.port() == 47000
    for v in VARIABLES:
        monkeypatch.delenv(v.name)  # unset: the declared default
    assert (LINK_PORT.port(), WORKER_THREADS.count()) == (0, None)
