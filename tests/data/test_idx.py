"""The IDX reader and writer, and every way an IDX file can be broken."""

import gzip

import numpy as np
import pytest

from normlab.data import DataFormatError
from normlab.data.datasets import read_idx_pair
from normlab.data.idx import read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(name, dtype, tmp_path, rng):
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)


def test_header_is_the_documented_big_endian_layout(tmp_path):
    write_idx(tmp_path / "x", np.arange(6, dtype=np.int16).reshape(2, 3))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == b"\x00\x00\x0b\x02"
    assert raw[4:12] == b"\x00\x00\x00\x02\x00\x00\x00\x03"
    assert raw[12:16] == b"\x00\x00\x00\x01"  # big-endian elements


def write(path, data: bytes, compress=True):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_wrong_magic(tmp_path):
    path = write(tmp_path / "a.gz", b"\x50\x4b\x03\x04" + bytes(20))
    with pytest.raises(DataFormatError, match=r"a.gz: not an IDX file: magic number .* got 50 4b 03 04"):
        read_idx(path)


def test_unknown_element_type(tmp_path):
    path = write(tmp_path / "a.gz", b"\x00\x00\x07\x01" + bytes(8))
    with pytest.raises(DataFormatError, match="not an IDX file"):
        read_idx(path)


def test_too_short_for_a_header(tmp_path):
    with pytest.raises(DataFormatError, match="too short for an IDX header"):
        read_idx(write(tmp_path / "a", b"\x00\x00", compress=False))


def test_truncated_header(tmp_path):
    with pytest.raises(DataFormatError, match="truncated header: 3 dimensions need 16 bytes, got 8"):
        read_idx(write(tmp_path / "a.gz", b"\x00\x00\x08\x03\x00\x00\x00\x05"))


def test_truncated_data(tmp_path):
    a = np.zeros((10, 4, 4), np.uint8)
    write_idx(tmp_path / "a", a, compress=False)
    raw = (tmp_path / "a").read_bytes()
    path = write(tmp_path / "b.gz", raw[:-7])
    with pytest.raises(DataFormatError, match=r"b.gz: truncated: header says shape \(10, 4, 4\) of uint8"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    write_idx(tmp_path / "a", np.zeros((2, 2), np.uint8), compress=False)
    path = write(tmp_path / "b", (tmp_path / "a").read_bytes() + b"\x00", compress=False)
    with pytest.raises(DataFormatError, match="has trailing bytes"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(5000, dtype=np.int32))
    raw = (tmp_path / "a.gz").read_bytes()
    path = write(tmp_path / "b.gz", raw[: len(raw) // 2], compress=False)
    with pytest.raises(DataFormatError, match="b.gz: truncated or corrupted gzip data"):
        read_idx(path)


def test_corrupted_gzip(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(5000, dtype=np.int32))
    raw = bytearray((tmp_path / "a.gz").read_bytes())
    raw[30:60] = bytes(30)  # damage the deflate stream (the CRC check catches what inflating does not)
    path = write(tmp_path / "b.gz", bytes(raw), compress=False)
    with pytest.raises(DataFormatError, match="truncated or corrupted gzip data"):
        read_idx(path)


def test_image_and_label_files_must_match(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((5, 3, 3), np.uint8))
    write_idx(tmp_path / "y.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match="y.gz: 4 labels for 5 images in x.gz"):
        read_idx_pair(tmp_path / "x.gz", tmp_path / "y.gz")
    write_idx(tmp_path / "y.gz", np.full(5, 10, np.uint8))
    with pytest.raises(DataFormatError,
                       match=r"labels must lie in \[0, 10\), got 5 outside it \(e.g. 10; minimum 10, maximum 10\)"):
        read_idx_pair(tmp_path / "x.gz", tmp_path / "y.gz")
    write_idx(tmp_path / "y.gz", np.zeros((5, 2), np.uint8))
    with pytest.raises(DataFormatError, match=r"expected labels of shape \(N,\)"):
        read_idx_pair(tmp_path / "x.gz", tmp_path / "y.gz")
    write_idx(tmp_path / "y.gz", np.arange(5, dtype=np.uint8))
    x, y = read_idx_pair(tmp_path / "x.gz", tmp_path / "y.gz")
    assert x.shape == (5, 1, 3, 3) and y.dtype == np.int64


@pytest.mark.parametrize("cuts", [(2,), (4 + 4 * 3 + 7,), (1, 9, 9)])
def test_multi_member_gzip_is_its_members_concatenated(tmp_path, cuts):
    """A gzip file of several members (`cat a.gz b.gz`) decompresses to their concatenation; it used to be
    refused as "trailing bytes". Cuts inside the header, inside the data, and an empty member."""
    array = (np.arange(5 * 7 * 3) % 251).astype(np.uint8).reshape(5, 7, 3)
    plain = tmp_path / "plain.idx"
    write_idx(plain, array, compress=False)
    raw = plain.read_bytes()
    bounds = [0, *cuts, len(raw)]
    path = tmp_path / "multi.idx.gz"
    path.write_bytes(b"".join(gzip.compress(raw[a:b], mtime=0) for a, b in zip(bounds, bounds[1:])))
    np.testing.assert_array_equal(read_idx(path), array)


def test_multi_member_gzip_still_bounded_by_its_header(tmp_path):
    raw_path = tmp_path / "plain.idx"
    write_idx(raw_path, np.arange(10, dtype=np.uint8), compress=False)
    raw = raw_path.read_bytes()
    extra = tmp_path / "extra.idx.gz"
    extra.write_bytes(gzip.compress(raw, mtime=0) + gzip.compress(b"\0" * 100, mtime=0))
    with pytest.raises(DataFormatError, match="extra.idx.gz: has trailing bytes"):
        read_idx(extra)
    short = tmp_path / "short.idx.gz"
    short.write_bytes(gzip.compress(raw[:8], mtime=0) + gzip.compress(raw[8:12], mtime=0)[:-6])
    with pytest.raises(DataFormatError, match="short.idx.gz: truncated"):
        read_idx(short)
    garbage = tmp_path / "garbage.idx.gz"
    garbage.write_bytes(gzip.compress(raw, mtime=0) + b"\x1f\x8bnot a member")
    with pytest.raises(DataFormatError, match="garbage.idx.gz: truncated or corrupted gzip data"):
        read_idx(garbage)
