"""The readers, fuzzed: whatever bytes arrive, each reader either loads and validates them
or raises the project's error for that kind of file (one line for the user), never another
exception, and never allocates much more than the input's own size before it has checked
the size it declares. Inputs: arbitrary bytes, and valid files (tests/data/fuzz/) with bytes
flipped, cut, inserted or repeated. A bounded run here (hypothesis, seeded, a few seconds);
`bench/fuzz.py` runs the same targets under atheris, coverage-guided, for as long as asked."""

from __future__ import annotations

import tracemalloc
from pathlib import Path


import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz_targets import CORPUS, TARGETS, Target, mutated

FINDINGS = CORPUS.parent / "fuzz-findings"

EXAMPLES = 150  # per target: a bounded run (seconds); bench/fuzz.py runs longer
SLACK = 16 << 20  # bytes a reader may allocate beyond its input (numpy, Pillow, pyarrow buffers)


def check(target: Target, data: bytes, tmp: Path) -> None:
    """`data` loads, or raises target.errors; allocations stay near the input's size."""
    tracemalloc.start()
    try:
        target.read(data, tmp)
    except target.errors:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= SLACK + 64 * len(data), f"{target.name}: {peak:,} bytes allocated for {len(data):,} of input"


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=4096), mutated(target.seeds()))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_input_loads_or_is_refused_in_one_line(target: Target, tmp_path: Path) -> None:
    @seed(20261203)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(inputs(target))
    def run(data: bytes) -> None:
        check(target, data, tmp_path)

    target.read(target.seeds()[0], tmp_path)  # its imports and caches first: they are not the input's
    run()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_the_seeds_load(target: Target, tmp_path: Path) -> None:
    """The corpus's own files are valid: the mutations start from real files."""
    for data in target.seeds():
        target.read(data, tmp_path)


def test_past_findings_are_refused_in_one_line(tmp_path: Path) -> None:
    """The fuzzers' findings (tests/data/fuzz-findings/NAME/), each fixed, kept as inputs."""
    found = {t.name: t for t in TARGETS}
    for folder in sorted(FINDINGS.iterdir()):
        for path in sorted(folder.iterdir()):
            check(found[folder.name], path.read_bytes(), tmp_path)


def test_a_header_that_declares_more_than_the_file_holds_allocates_nothing(tmp_path: Path) -> None:
    """IDX headers declaring 4 billion images in a few bytes, plain and gzip'd."""
    import gzip
    import struct

    from nnps.core.errors import DataError
    from nnps.core.idx import read_images

    head = struct.pack(">IIII", 0x803, 4_000_000_000, 28, 28) + bytes(100)
    for name, body in (("plain", head), ("gz", gzip.compress(head + bytes(10_000_000)))):
        path = tmp_path / name
        path.write_bytes(body)
        tracemalloc.start()
        try:
            with pytest.raises(DataError):
                read_images(path)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < SLACK, (name, peak)


def test_a_gzip_bomb_is_not_inflated_past_what_its_header_declares(tmp_path: Path) -> None:
    """A valid header for 10 images followed by 200 MB of zeros, gzip'd to a few hundred KB."""
    import gzip
    import struct

    from nnps.core.errors import DataError
    from nnps.core.idx import read_images

    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 10, 28, 28))
        for _ in range(200):
            f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="unexpected trailing bytes"):
            read_images(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < SLACK, peak
