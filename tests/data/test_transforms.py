"""Split, standardization, augmentation and minibatches."""

import numpy as np
import pytest

from normlab.data import (
    Augment,
    Standardizer,
    batch_indices,
    epoch_order,
    num_batches,
    random_crop,
    random_flip,
    train_val_split,
)


def test_split_is_a_partition_and_reproducible(rng):
    x = np.arange(50)[:, None] * np.ones((1, 3))
    y = np.arange(50)
    xt, yt, xv, yv = train_val_split(x, y, 10, np.random.default_rng(3))
    assert len(xt) == 40 and len(xv) == 10
    assert sorted(np.concatenate([yt, yv]).tolist()) == list(range(50))
    np.testing.assert_array_equal(xt[:, 0], yt)  # examples stay with their labels
    again = train_val_split(x, y, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(again[3], yv)


@pytest.mark.parametrize("val_size", [-1, 50, 2.5])
def test_split_rejects_bad_sizes(val_size, rng):
    with pytest.raises(ValueError, match=r"val_size must be an integer in \[0, 50\)"):
        train_val_split(np.zeros((50, 2)), np.zeros(50), val_size, rng)


def test_standardizer_gives_zero_mean_unit_std_per_channel(rng):
    x = rng.integers(0, 256, (40, 3, 5, 5), dtype=np.uint8)
    x[:, 1] //= 4  # channels with different statistics
    s = Standardizer.fit(x)
    out = s(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(s.mean[1], x[:, 1].mean() / 255)
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\) images, got shape \(2, 1, 5, 5\)"):
        s(x[:2, :1])


def test_random_crop_cuts_windows_of_the_padded_image(rng):
    x = rng.standard_normal((16, 2, 6, 7)).astype(np.float32)
    out = random_crop(x, 2, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    shifted = 0
    for i in range(16):
        windows = [(t, l) for t in range(5) for l in range(5)
                   if np.array_equal(out[i], padded[i, :, t:t + 6, l:l + 7])]
        assert windows, f"crop {i} is not a window of the padded image"
        shifted += (2, 2) not in windows
    assert shifted > 8  # most crops moved
    np.testing.assert_array_equal(random_crop(x, 0, rng), x)
    np.testing.assert_array_equal(out, random_crop(x, 2, np.random.default_rng(0)))


def test_random_flip(rng):
    x = rng.standard_normal((30, 1, 3, 4))
    np.testing.assert_array_equal(random_flip(x, rng, p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(random_flip(x, rng, p=0.0), x)
    out = random_flip(x, np.random.default_rng(1))
    flipped = [np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)]
    assert all(f or np.array_equal(o, xi) for f, o, xi in zip(flipped, out, x)) and 5 < sum(flipped) < 25


def test_augment_is_a_function_of_the_generator(rng):
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    a = Augment()(x, np.random.default_rng(4))
    np.testing.assert_array_equal(a, Augment()(x, np.random.default_rng(4)))
    assert not np.array_equal(a, x)


def test_transforms_reject_non_images(rng):
    for f in (lambda: random_crop(np.zeros((2, 3)), 1, rng), lambda: random_flip(np.zeros((2, 3)), rng)):
        with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\) images"):
            f()
    with pytest.raises(ValueError, match="padding must be a non-negative integer"):
        random_crop(np.zeros((1, 1, 2, 2)), -1, rng)


def test_an_epoch_visits_every_example_once(rng):
    order = epoch_order(103, rng)
    batches = list(batch_indices(order, 10))
    assert len(batches) == num_batches(103, 10) == 11 and len(batches[-1]) == 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert len(list(batch_indices(order, 10, drop_last=True))) == num_batches(103, 10, drop_last=True) == 10
    assert not np.array_equal(epoch_order(103, rng), order)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        list(batch_indices(order, 0))
