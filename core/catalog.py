"""The catalog of named datasets, where to find them, and a verified download.

`resolve("fashion-mnist")` looks, in order, in
1. `$NNPS_DATA_DIR/NAME` (default: `$XDG_CACHE_HOME/nnps/NAME`, i.e. `~/.cache/nnps/NAME`),
2. `/usr/share/datasets/NAME` (Debian's `dataset-fashion-mnist` installs there),
3. and, if `download=True`, fetches the four files from the entry's mirrors.

Files are identified by the SHA-256 of their DECOMPRESSED bytes where it is recorded,
because gzip output differs between compressors: Debian's package and some mirrors hold
re-compressed copies whose `.gz` digests differ from the official downloads'. Where only
the official `.gz` digest is known (KMNIST), that is what is checked. A download lands in
a temporary file, is verified, and only then renamed into place, so an interrupted or
corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nnps.core.datasets import IDX_FILES, Dataset, find_idx_files, load_idx_dir
from nnps.core.environment import DATA_DIR, XDG_CACHE_HOME
from nnps.core.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class FileSpec:
    name: str  # e.g. "train-images-idx3-ubyte.gz"
    sha256: str | None  # of the decompressed bytes
    download_sha256: str | None  # of the official .gz as the mirrors serve it


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    mirrors: tuple[str, ...]
    files: tuple[FileSpec, ...]
    classes: tuple[str, ...] | None = None  # label i's name; None: the digit itself


def _files(raw: dict[str, str | None], gz: dict[str, str]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(f"{stem}.gz", raw.get(stem), gz[stem]) for stem in IDX_FILES.values())


CATALOG: dict[str, Entry] = {
    "mnist": Entry(
        "mnist", "MNIST handwritten digits (LeCun, Cortes, Burges), 60k train / 10k test",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        _files(
            {
                "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
            {
                "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            },
        ),
    ),
    "fashion-mnist": Entry(
        "fashion-mnist", "Fashion-MNIST clothing images (Zalando Research), 60k train / 10k test",
        ("https://fashion-mnist.s3.eu-central-1.amazonaws.com/",),
        _files(
            {
                "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
            {
                "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            },
        ),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "kmnist": Entry(
        "kmnist", "Kuzushiji-MNIST cursive Japanese characters (ROIS-CODH), 60k train / 10k test",
        ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        _files(
            {},  # decompressed digests not recorded yet: the official .gz digests are checked
            {
                "train-images-idx3-ubyte": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                "train-labels-idx1-ubyte": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                "t10k-images-idx3-ubyte": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                "t10k-labels-idx1-ubyte": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            },
        ),
        # the dataset's kmnist_classmap.csv: each class's hiragana and its romanization
        ("o (お)", "ki (き)", "su (す)", "tsu (つ)", "na (な)", "ha (は)", "ma (ま)", "ya (や)", "re (れ)", "wo (を)"),
    ),
}  # fmt: skip


def class_names(data: str, n: int = 10) -> list[str]:
    """The names of labels 0..n-1 for a catalog dataset (Fashion-MNIST's "T-shirt/top", ...);
    the labels' digits for MNIST and for data given by path."""
    entry = CATALOG.get(data)
    if entry is None or entry.classes is None or len(entry.classes) != n:
        return [str(i) for i in range(n)]
    return list(entry.classes)


def cache_dir() -> Path:
    if DATA_DIR.get():
        return Path(DATA_DIR.get())
    base = XDG_CACHE_HOME.get() or str(Path.home() / ".cache")
    return Path(base) / "nnps"


def entry(name: str) -> Entry:
    try:
        return CATALOG[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: not a path, and the catalog has {', '.join(CATALOG)}")


def verify_file(path: Path, spec: FileSpec) -> None:
    """Raise DataError unless `path` holds the bytes `spec` records."""
    raw = path.read_bytes()
    if spec.download_sha256 and hashlib.sha256(raw).hexdigest() == spec.download_sha256:
        return
    if spec.sha256:
        try:
            data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})")
        digest = hashlib.sha256(data).hexdigest()
        if digest == spec.sha256:
            return
        raise DataError(f"{path}: SHA-256 of its contents is {digest[:16]}..., expected {spec.sha256[:16]}...")
    raise DataError(f"{path}: SHA-256 does not match the official {spec.name}")


def find(name: str) -> Path | None:
    """The first directory holding all of the dataset's files: the cache, then the system's."""
    for base in (cache_dir(), SYSTEM_DIR):
        if find_idx_files(base / name) is not None:
            return base / name
    return None


Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def download(e: Entry, dest: Path, mirrors: tuple[str, ...] | None = None, progress: Progress | None = None,
             timeout: float = 30.0) -> Path:  # fmt: skip
    """Fetch every file of `e` not already verified in `dest`; try each mirror in turn."""
    dest.mkdir(parents=True, exist_ok=True)
    for spec in e.files:
        target = dest / spec.name
        if target.exists():
            verify_file(target, spec)
            continue
        errors = []
        for mirror in mirrors or e.mirrors:
            url = mirror.rstrip("/") + "/" + spec.name
            try:
                _fetch(url, target, spec, progress, timeout)
                break
            except (OSError, urllib.error.URLError, DataError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', None) or err}")
        else:
            raise DataError(f"could not download {e.name}/{spec.name}: " + "; ".join(errors))
    return dest


def _fetch(url: str, target: Path, spec: FileSpec, progress: Progress | None, timeout: float) -> None:
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(spec.name, done, total)
        try:
            verify_file(tmp, spec)
        except DataError as err:
            raise DataError(f"checksum mismatch ({str(err).split(': ', 1)[1]})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve(name: str, download_missing: bool = False, progress: Progress | None = None) -> Dataset:
    """Load a catalog dataset from wherever it is, downloading it only if asked to."""
    e = entry(name)
    found = find(name)
    if found is None:
        if not download_missing:
            raise DataError(
                f"dataset {name!r} not found in {cache_dir() / name} or {SYSTEM_DIR / name}; run "
                f"`nnps data download {name}`, or pass --data DIR with the four IDX files"
                + (" (or `apt-get install dataset-fashion-mnist`)" if name == "fashion-mnist" else "")
            )
        found = download(e, cache_dir() / name, progress=progress)
    files = find_idx_files(found)
    assert files is not None
    for key, path in files.items():
        spec = next(s for s in e.files if s.name.startswith(IDX_FILES[key]))
        verify_file(path, spec)
    return load_idx_dir(found, name)


def load(source: str, progress: Progress | None = None) -> Dataset:
    """`--data`'s meaning: an existing path in any supported format, else a catalog name
    (found locally or downloaded)."""
    from nnps.core.datasets import load_path

    path = Path(source).expanduser()
    if path.exists() or source not in CATALOG:
        return load_path(path)
    return resolve(source, download_missing=True, progress=progress)
