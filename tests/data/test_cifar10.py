"""CIFAR-10 batches as Python 2 wrote them, read without executing anything."""

import pickle

import numpy as np
import pytest
from py2_pickle import LABEL_NAMES, cifar_batch, cifar_meta, dumps_py2, write_cifar_dir

from normlab.data import DataFormatError, UnsafePickleError
from normlab.data.cifar10 import read_batch, read_cifar10, read_label_names, safe_load_pickle


def pattern_images(n):
    """Image i: red plane all i, green plane all 100 + i, blue plane (32 * row + col) % 256."""
    x = np.zeros((n, 3, 32, 32), np.uint8)
    x[:, 0] = np.arange(n)[:, None, None]
    x[:, 1] = 100 + np.arange(n)[:, None, None]
    x[:, 2] = (np.arange(1024) % 256).reshape(32, 32)
    return x


def test_the_writer_produces_what_standard_pickle_reads_as_cifar():
    """The synthesized file is what the format says: the standard unpickler with encoding='bytes' gives a
    dict with bytes keys and a (N, 3072) uint8 array."""
    data = pickle.loads(cifar_batch(pattern_images(3), [1, 2, 3]), encoding="bytes")
    assert set(data) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert data[b"data"].dtype == np.uint8 and data[b"data"].shape == (3, 3072)
    assert data[b"labels"] == [1, 2, 3] and data[b"filenames"][0] == b"img_0.png"


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_batch_reads_as_channel_planes_in_row_major_order(numpy_module, tmp_path):
    images = pattern_images(4)
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch(images, [3, 1, 4, 1], numpy_module=numpy_module))
    x, y = read_batch(path)
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1]
    assert np.all(x[2, 0] == 2) and np.all(x[2, 1] == 102)
    assert x[1, 2, 1, 3] == 35  # row 1, column 3 of the blue plane: value 32 * 1 + 3
    np.testing.assert_array_equal(x, images)


def test_label_names(tmp_path):
    (tmp_path / "batches.meta").write_bytes(cifar_meta())
    assert read_label_names(tmp_path / "batches.meta") == [n.decode() for n in LABEL_NAMES]


def test_read_cifar10_directory(tmp_path):
    x_train, y_train = write_cifar_dir(tmp_path, n=3)
    xt, yt, xs, _ys, names = read_cifar10(tmp_path)
    assert xt.shape == (15, 3, 32, 32) and xs.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(xt, x_train)
    np.testing.assert_array_equal(yt, y_train)
    assert names[0] == "airplane"


def malicious(module: bytes, name: bytes, arg: bytes) -> bytes:
    return (pickle.PROTO + b"\x02" + pickle.GLOBAL + module + b"\n" + name + b"\n" + pickle.SHORT_BINSTRING
            + bytes([len(arg)]) + arg + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


@pytest.mark.parametrize("module, name", [(b"os", b"system"), (b"posix", b"system"), (b"__builtin__", b"eval"),
                                          (b"builtins", b"exec"), (b"subprocess", b"call")])
def test_a_pickle_reaching_for_other_globals_is_refused_and_never_run(module, name, tmp_path):
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w')" if b"eval" in name or b"exec" in name else f"touch {marker}"
    path = tmp_path / "data_batch_1"
    path.write_bytes(malicious(module, name, code.encode()))
    with pytest.raises(UnsafePickleError, match=rf"data_batch_1: refusing to load {module.decode()}.{name.decode()}"):
        read_batch(path)
    assert not marker.exists()


def test_a_global_hidden_inside_the_dict_is_refused(tmp_path):
    inner = malicious(b"os", b"system", b"true")[2:-1]  # the REDUCE expression alone
    body = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + pickle.SHORT_BINSTRING + b"\x04data"
            + inner + pickle.SETITEMS + pickle.STOP)
    with pytest.raises(UnsafePickleError, match="os.system"):
        safe_load_pickle(body, "batch")


def test_python3_bytes_pickles_are_not_the_format():
    # Python 3 writes bytes at protocol 2 through _codecs.encode: not something a CIFAR batch holds.
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        safe_load_pickle(pickle.dumps({b"data": b"x"}, protocol=2), "batch")


def test_truncated_batch_is_a_clear_error(tmp_path):
    good = cifar_batch(pattern_images(2), [0, 1])
    path = tmp_path / "data_batch_1"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match="data_batch_1: not a readable pickle \\(truncated or corrupted\\)"):
        read_batch(path)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a pickle at all")
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        read_batch(path)


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "a CIFAR-10 batch must be a dict, got list"),
    ({b"data": np.zeros((1, 3072), np.uint8)}, "needs the key b'labels'"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"b'data' must be a uint8 array of shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"one label per image \(2\), got 1"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, r"labels must lie in \[0, 10\)"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": b"x"}, "b'labels' must be a list of ints"),
])
def test_wrong_structure_is_named(obj, message, tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(dumps_py2(obj))
    with pytest.raises(DataFormatError, match=message):
        read_batch(path)


def test_a_label_beyond_int64_is_a_data_format_error_naming_the_file(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 2**70]}, protocol=4))
    with pytest.raises(DataFormatError, match=r"test_batch: labels must lie in \[0, 10\), got 1180591620717411303424"):
        read_batch(path)


def test_a_fortran_order_data_array_is_read_as_its_values(tmp_path):
    """A genuine Fortran-order b'data' (numpy pickles the order flag and the bytes in that order) is the
    same images; it used to be refused as "not contiguous"."""
    data = np.asfortranarray(pattern_images(2).reshape(2, 3072))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [3, 7]}, protocol=4))
    images, labels = read_batch(path)
    assert images.flags.c_contiguous and images.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(images.reshape(2, 3072), data)
    assert labels.tolist() == [3, 7]


@pytest.mark.parametrize("dtype", ["S2", "U2"])
def test_byte_and_string_arrays_are_refused_by_their_dtype(dtype):
    with pytest.raises(UnsafePickleError, match=r"refusing dtype .*2: only plain numbers"):
        safe_load_pickle(pickle.dumps(np.array(["ab"], dtype=dtype), protocol=4), "batch")
