"""Reading image files for predict: layouts, dtypes, and errors that name the file."""

import numpy as np
import pytest
from PIL import Image

from normlab.data import DataFormatError
from normlab.data.images import read_images


@pytest.fixture
def gray(rng):
    return rng.integers(0, 256, (28, 28), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["hw", "chw", "hwc"])
def test_one_grayscale_image_in_any_layout(tmp_path, gray, layout):
    array = {"hw": gray, "chw": gray[None], "hwc": gray[..., None]}[layout]
    np.save(tmp_path / "x.npy", array)
    images, batched = read_images(tmp_path / "x.npy", (1, 28, 28))
    assert images.shape == (1, 1, 28, 28) and not batched and np.array_equal(images[0, 0], gray)


def test_batches_of_color_images_channels_first_or_last(tmp_path, rng):
    x = rng.integers(0, 256, (5, 3, 8, 6), dtype=np.uint8)
    np.save(tmp_path / "nchw.npy", x)
    np.save(tmp_path / "nhwc.npy", x.transpose(0, 2, 3, 1))
    for name in ("nchw.npy", "nhwc.npy"):
        images, batched = read_images(tmp_path / name, (3, 8, 6))
        assert batched and np.array_equal(images, x)


def test_png_is_read_as_the_model_channels(tmp_path, rng):
    rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    images, _ = read_images(tmp_path / "rgb.png", (3, 28, 28))
    assert np.array_equal(images[0], rgb.transpose(2, 0, 1))  # PNG is lossless
    gray, _ = read_images(tmp_path / "rgb.png", (1, 28, 28))
    assert np.array_equal(gray[0, 0], np.asarray(Image.fromarray(rgb).convert("L")))


def test_float_images_must_be_in_unit_range_and_integers_in_bytes(tmp_path, gray):
    np.save(tmp_path / "unit.npy", gray / 255)
    images, _ = read_images(tmp_path / "unit.npy", (1, 28, 28))
    assert images.dtype == np.float32 and np.allclose(images[0, 0] * 255, gray, atol=1e-4)
    np.save(tmp_path / "bytes.npy", gray.astype(np.float64))
    with pytest.raises(DataFormatError, match=r"bytes.npy: float pixels must be in \[0, 1\] \(uint8 for 0..255\)"):
        read_images(tmp_path / "bytes.npy", (1, 28, 28))
    np.save(tmp_path / "int.npy", gray.astype(np.int64))
    assert read_images(tmp_path / "int.npy", (1, 28, 28))[0].dtype == np.uint8
    np.save(tmp_path / "neg.npy", gray.astype(np.int64) - 1000)
    with pytest.raises(DataFormatError, match="neg.npy: integer pixels must be in 0..255"):
        read_images(tmp_path / "neg.npy", (1, 28, 28))


def test_errors_name_the_file_the_expected_and_the_actual(tmp_path, gray):
    np.save(tmp_path / "small.npy", gray[:20])
    with pytest.raises(DataFormatError, match=r"small.npy: expected one image of shape \(1, 28, 28\), \(28, 28, 1\), "
                                              r"\(28, 28\) .* got shape \(20, 28\)"):
        read_images(tmp_path / "small.npy", (1, 28, 28))
    (tmp_path / "image.jpg").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"image.jpg: expected a .npy or .png file, got '.jpg'"):
        read_images(tmp_path / "image.jpg", (1, 28, 28))
    with pytest.raises(DataFormatError, match="missing.png: no such file"):
        read_images(tmp_path / "missing.png", (1, 28, 28))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="broken.png: not a readable PNG image"):
        read_images(tmp_path / "broken.png", (1, 28, 28))
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    with pytest.raises(DataFormatError, match="broken.npy: not a readable .npy array"):
        read_images(tmp_path / "broken.npy", (1, 28, 28))
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(tmp_path / "tall.png")
    with pytest.raises(DataFormatError, match=r"tall.png: expected one image .* got shape \(30, 28\)"):
        read_images(tmp_path / "tall.png", (1, 28, 28))


def test_a_zip_file_named_npy_is_refused_and_closed(tmp_path, gray):
    np.savez(tmp_path / "archive.npz", images=gray)
    (tmp_path / "x.npy").write_bytes((tmp_path / "archive.npz").read_bytes())
    with pytest.raises(DataFormatError, match=r"x.npy: a zip \(.npz\) archive, not a .npy array"):
        read_images(tmp_path / "x.npy", (1, 28, 28))


def test_a_npy_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    """A few bytes whose header claims 2**60 float64 values: a DataFormatError naming the file, not a
    MemoryError (or an allocation of the claimed size)."""
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (2**30, 2**30)})
        f.write(b"\0" * 64)
    with pytest.raises(DataFormatError, match=r"huge.npy: the .npy header declares an array of shape "
                                              r"\(1073741824, 1073741824\)"):
        read_images(path, (1, 28, 28))


def test_a_memory_error_while_loading_names_the_file(tmp_path, gray, monkeypatch):
    np.save(tmp_path / "x.npy", gray)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np, "load", out_of_memory)
    with pytest.raises(DataFormatError, match="x.npy: the .npy header declares an array too large to load"):
        read_images(tmp_path / "x.npy", (1, 28, 28))


def test_a_png_of_the_wrong_size_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(DataFormatError, match=r"big.png: expected one image of 28x28 pixels .* got shape \(64, 64\)"):
        read_images(tmp_path / "big.png", (1, 28, 28))


def test_a_png_decompression_bomb_is_a_data_format_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 784 pixels: more than twice the limit
    with pytest.raises(DataFormatError, match="bomb.png: refused as a possible decompression bomb"):
        read_images(tmp_path / "bomb.png", (1, 28, 28))
