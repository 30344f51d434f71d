"""Where dataset files come from.

`locate(spec, path)` looks for a dataset's files, in order, in
  1. `path`, the explicit location (e.g. `normlab train --data-dir`),
  2. `$NORMLAB_DATA`,
  3. `~/.cache/normlab`,
  4. the dataset's system directories (Fashion-MNIST: /usr/share/datasets/fashion-mnist, where Debian's
     `dataset-fashion-mnist` package installs it),
taking in each root either the root itself or its `<dataset name>` subdirectory. If none holds every file,
it downloads them from the dataset's canonical address into `<first writable root of 1-3>/<name>`,
verifying each against its published checksum before it is put in place.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from normlab.data.cifar10 import META, TEST_BATCH, TRAIN_BATCHES
from normlab.data.errors import ChecksumError, DatasetNotFoundError
from normlab.files import atomic_file


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: where from, and its published checksum ("md5:<hex>" or "sha256:<hex>").
    An archive (.tar.gz) is unpacked into the dataset directory after it is verified."""

    url: str
    checksum: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's files (paths relative to its directory), how to download them, and the system
    directories that may already hold them."""

    name: str
    files: tuple[str, ...]
    downloads: tuple[RemoteFile, ...]
    system_dirs: tuple[str, ...] = ()

    def holds_files(self, directory: Path) -> bool:
        return all((directory / f).is_file() for f in self.files)


_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the mirror torchvision uses
_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

def _idx_downloads(base_url: str, md5s: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(base_url + name, "md5:" + md5) for name, md5 in zip(_IDX_FILES, md5s))


SOURCES: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", _IDX_FILES,
        _idx_downloads(_FASHION, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                  "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "mnist": DatasetSpec(
        "mnist", _IDX_FILES,
        _idx_downloads(_MNIST, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        tuple(f"cifar-10-batches-py/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH, META)),
        (RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "md5:c58f30108f718f92721af3b95e74349a"),),
    ),
}

Fetch = Callable[[str], BinaryIO]


def locate(spec: DatasetSpec, path: str | os.PathLike | None = None, *, download: bool = True,
           fetch: Fetch | None = None) -> Path:
    """The directory holding every file of `spec` (see the module docstring for the order).

    With download=False, or when every download fails, raises DatasetNotFoundError listing the places
    looked at. `fetch(url)` opens a URL for reading (default urllib's urlopen, which also reads file://).
    """
    roots = [Path(path).expanduser()] if path is not None else []  # the user roots, 1-3
    if os.environ.get("NORMLAB_DATA"):
        roots.append(Path(os.environ["NORMLAB_DATA"]).expanduser())
    roots.append(Path.home() / ".cache" / "normlab")
    candidates = [d for root in roots for d in (root, root / spec.name)]
    candidates += [Path(d) for d in spec.system_dirs]
    for directory in candidates:
        if spec.holds_files(directory):
            return directory
    looked = ", ".join(str(d) for d in candidates)
    if not download:
        raise DatasetNotFoundError(f"{spec.name} not found (looked in {looked}) and downloading is off; "
                                   f"put its files {list(spec.files)} in one of those directories")
    by_hand = f"to install it by hand, put its files {list(spec.files)} in one of those directories"
    errors = []
    for root in roots:
        target = root / spec.name
        created = not target.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            errors.append(f"{target}: {e}")
            continue
        try:
            for remote in spec.downloads:
                dest = target / remote.filename
                download_file(remote.url, dest, remote.checksum, fetch=fetch)
                if dest.name.endswith((".tar.gz", ".tgz")):
                    extract_archive(dest, target)
                    dest.unlink()
        except (DatasetNotFoundError, ChecksumError) as e:
            if created and not any(target.iterdir()):
                target.rmdir()  # leave no empty directory behind
            raise type(e)(f"{e}; {spec.name} not found (looked in {looked}): {by_hand}") from e
        if spec.holds_files(target):
            return target
        raise DatasetNotFoundError(f"{spec.name}: downloaded into {target} but the files {list(spec.files)} "
                                   "are not all there")
    raise DatasetNotFoundError(f"{spec.name} not found (looked in {looked}) and no directory to download "
                               f"into: {'; '.join(errors)}")


def download_file(url: str, dest: Path, checksum: str, *, fetch: Fetch | None = None) -> None:
    """Download `url` to `dest`, atomically: into a temporary file beside it, verified against `checksum`
    ("md5:<hex>" or "sha256:<hex>"), then renamed. On a mismatch nothing is left at `dest` and
    ChecksumError names the file, the expected and the actual checksum."""
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not expected:
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    fetch = fetch or (lambda u: urllib.request.urlopen(u, timeout=60))
    digest = hashlib.new(algorithm)
    with atomic_file(dest) as out:
        try:
            with fetch(url) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except OSError as e:
            raise DatasetNotFoundError(f"could not download {url}: {e}") from e
        if digest.hexdigest() != expected.lower():
            raise ChecksumError(f"{url}: {algorithm} checksum mismatch: expected {expected}, got "
                                f"{digest.hexdigest()}; the download is corrupted or not the published file, "
                                "and was not kept")


def extract_archive(archive: Path, target: Path) -> None:
    """Unpack a .tar.gz into `target`, refusing members that would land outside it, links to outside,
    or device files (tarfile's "data" filter)."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
