"""Where datasets are found, in order, and how they are downloaded and verified (over file:// URLs:
these tests never touch the network)."""

import hashlib
import tarfile

import numpy as np
import pytest
from py2_pickle import write_cifar_dir

from normlab.data import ChecksumError, DatasetNotFoundError, load_dataset, sources
from normlab.data.idx import write_idx
from normlab.data.sources import DatasetSpec, RemoteFile, download_file, locate

FILES = ("a.gz", "b.gz")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $NORMLAB_DATA, a fresh home directory: only what a test creates can be found."""
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def fill(directory, names=FILES):
    directory.mkdir(parents=True, exist_ok=True)
    for n in names:
        (directory / n).write_bytes(n.encode())
    return directory


def spec(tmp_path, downloads=()):
    return DatasetSpec("toy", FILES, tuple(downloads), system_dirs=(str(tmp_path / "system"),))


def test_lookup_order_explicit_env_cache_system(isolated, monkeypatch):
    s = spec(isolated)
    explicit, env, cache = isolated / "explicit", isolated / "env", isolated / "home" / ".cache" / "normlab"
    monkeypatch.setenv("NORMLAB_DATA", str(env))
    fill(isolated / "system")
    assert locate(s, explicit, download=False) == isolated / "system"
    fill(cache / "toy")  # the <name> subdirectory of a root
    assert locate(s, explicit, download=False) == cache / "toy"
    fill(env)  # the root itself
    assert locate(s, explicit, download=False) == env
    fill(explicit)
    assert locate(s, explicit, download=False) == explicit
    assert locate(s, None, download=False) == env


def test_a_directory_missing_one_file_is_passed_over(isolated):
    fill(isolated / "explicit", names=FILES[:1])
    fill(isolated / "system")
    assert locate(spec(isolated), isolated / "explicit", download=False) == isolated / "system"


def test_not_found_without_download_lists_the_places(isolated):
    with pytest.raises(DatasetNotFoundError, match=r"toy not found \(looked in .*explicit.*system\) and "
                                                   r"downloading is off"):
        locate(spec(isolated), isolated / "explicit", download=False)


def remote(tmp_path, name, content: bytes, algorithm="md5"):
    path = tmp_path / "server" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return RemoteFile(path.as_uri(), f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}")


def test_download_into_the_explicit_path_verifies_checksums(isolated):
    downloads = [remote(isolated, "a.gz", b"first", "md5"), remote(isolated, "b.gz", b"second", "sha256")]
    found = locate(spec(isolated, downloads), isolated / "explicit")
    assert found == isolated / "explicit" / "toy"
    assert (found / "b.gz").read_bytes() == b"second"
    assert locate(spec(isolated, downloads), isolated / "explicit", download=False) == found


def test_download_defaults_to_the_cache(isolated):
    downloads = [remote(isolated, n, n.encode()) for n in FILES]
    assert locate(spec(isolated, downloads)) == isolated / "home" / ".cache" / "normlab" / "toy"


def test_checksum_mismatch_keeps_nothing(isolated):
    bad = RemoteFile(remote(isolated, "a.gz", b"tampered").url, "md5:" + hashlib.md5(b"original").hexdigest())
    with pytest.raises(ChecksumError, match=r"a.gz: md5 checksum mismatch: expected [0-9a-f]{32}, got [0-9a-f]{32}"):
        locate(spec(isolated, [bad]), isolated / "explicit")
    assert not (isolated / "explicit" / "toy").exists()  # no partial or temporary file, no empty directory


def test_a_failed_download_says_where_to_put_the_files_by_hand(isolated):
    missing = RemoteFile((isolated / "nowhere.gz").as_uri(), "md5:" + "0" * 32)
    with pytest.raises(DatasetNotFoundError, match=r"could not download .*toy not found \(looked in .*explicit.*\): "
                                                   r"to install it by hand, put its files \[.*\] in one of those"):
        locate(spec(isolated, [missing]), isolated / "explicit")
    assert not (isolated / "explicit" / "toy").exists()


def test_unreachable_url_is_a_clear_error(isolated):
    missing = RemoteFile((isolated / "nowhere.gz").as_uri(), "md5:" + "0" * 32)
    with pytest.raises(DatasetNotFoundError, match="could not download file://.*nowhere.gz"):
        download_file(missing.url, isolated / "x.gz", missing.checksum)
    assert not (isolated / "x.gz").exists()


def test_a_monkeypatched_fetch_is_used(isolated):
    import io

    payload = b"bytes from somewhere"
    seen = []

    def fetch(url):
        seen.append(url)
        return io.BytesIO(payload)

    download_file("https://example.invalid/f", isolated / "f", "sha256:" + hashlib.sha256(payload).hexdigest(),
                  fetch=fetch)
    assert seen == ["https://example.invalid/f"] and (isolated / "f").read_bytes() == payload


def test_bad_checksum_spec(isolated):
    with pytest.raises(ValueError, match="checksum must be 'md5:<hex>' or 'sha256:<hex>', got 'crc:1'"):
        download_file("file:///x", isolated / "x", "crc:1")


def test_canonical_addresses_and_checksums_are_declared():
    fashion = sources.SOURCES["fashion-mnist"]
    assert fashion.downloads[0].url == ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
                                        "train-images-idx3-ubyte.gz")
    assert fashion.downloads[0].checksum == "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert "/usr/share/datasets/fashion-mnist" in fashion.system_dirs
    cifar = sources.SOURCES["cifar10"].downloads[0]
    assert cifar.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar.checksum == "md5:c58f30108f718f92721af3b95e74349a"
    assert all(len(r.checksum) == 36 for s in sources.SOURCES.values() for r in s.downloads)


def test_cifar10_download_verifies_and_unpacks_the_archive(isolated, monkeypatch):
    x_train, y_train = write_cifar_dir(isolated / "build" / "cifar-10-batches-py", n=2)
    archive = isolated / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(isolated / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    real = sources.SOURCES["cifar10"]
    monkeypatch.setitem(sources.SOURCES, "cifar10",
                        DatasetSpec("cifar10", real.files, (RemoteFile(archive.as_uri(), "md5:" + md5),)))
    ds = load_dataset("cifar10", isolated / "data")
    assert ds.directory == isolated / "data" / "cifar10"
    assert not (ds.directory / "cifar-10-python.tar.gz").exists()  # unpacked, then removed
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)


def test_idx_dataset_from_an_explicit_directory(isolated, rng):
    d = isolated / "fm"
    d.mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    ds = load_dataset("mnist", d, download=False)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.classes[3] == "3"


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"dataset must be one of \['cifar10', 'fashion-mnist', 'mnist'\], got 'svhn'"):
        load_dataset("svhn")


REAL = "/usr/share/datasets/fashion-mnist"


def test_real_fashion_mnist_from_debians_package():
    import os

    if not os.path.isdir(REAL):
        pytest.skip(f"{REAL} is not installed (apt install dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist", REAL, download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.classes[9] == "Ankle boot"
