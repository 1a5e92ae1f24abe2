"""Stage: loading calibration / evaluation data from every supported source."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from PIL import Image

from edgepack.config import Preprocess
from edgepack.errors import DataError
from edgepack.stages.data import load_dataset
from edgepack.stages.graph import TensorSpec

SPEC = TensorSpec("input", (1, 3, 8, 8), "float32")


def _x(n, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(dtype)


def test_npy(tmp_path):
    x = _x(10)
    np.save(tmp_path / "c.npy", x)
    ds = load_dataset(str(tmp_path / "c.npy"), SPEC)
    assert ds.y is None and len(ds) == 10
    np.testing.assert_array_equal(ds.x, x)
    assert ds.x.dtype == np.float32


def test_npy_float64_is_cast_and_limit_applies(tmp_path):
    x = _x(10, dtype=np.float64)
    np.save(tmp_path / "c.npy", x)
    ds = load_dataset(str(tmp_path / "c.npy"), SPEC, limit=4)
    assert ds.x.dtype == np.float32 and len(ds) == 4
    np.testing.assert_allclose(ds.x, x[:4].astype(np.float32))


def test_npz_with_custom_keys(tmp_path):
    x, y = _x(12), np.arange(12) % 5
    np.savez(tmp_path / "d.npz", images=x, labels=y, x=np.zeros(3))  # a decoy under the default key
    ds = load_dataset(str(tmp_path / "d.npz"), SPEC, x_key="images", y_key="labels")
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.y.dtype == np.int64


def test_npz_missing_key_names_key(tmp_path):
    np.savez(tmp_path / "d.npz", images=_x(4))
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "d.npz"), SPEC)
    assert "d.npz" in str(e.value) and "'x'" in str(e.value) and "images" in str(e.value)


def test_npz_one_hot_labels_become_indices(tmp_path):
    y = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=_x(4), y=np.eye(3)[y])
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "d.npz"), SPEC).y, y)


def _png(path, size_wh, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size_wh, colour).save(path)


def _image_folder(root):
    """Two classes with uniform-colour images of a different size than the model input."""
    colours = {"cat": [(255, 0, 0), (10, 20, 30)], "dog": [(0, 128, 255), (200, 100, 50), (7, 7, 7)]}
    for cls, cs in colours.items():
        for i, c in enumerate(cs):
            _png(root / cls / f"img{i}.png", (13, 11), c)
    (root / "dog" / "notes.txt").write_text("not an image")
    return [c for cs in colours.values() for c in cs], [0, 0, 1, 1, 1]


def test_image_folder_rgb_nchw(tmp_path):
    colours, labels = _image_folder(tmp_path / "imgs")
    pre = Preprocess(size=(8, 8), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0), scale=1 / 255,
                     channel_order="RGB", layout="NCHW")
    ds = load_dataset(str(tmp_path / "imgs"), SPEC, preprocess=pre)
    assert ds.x.shape == (5, 3, 8, 8) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.class_names == ["cat", "dog"]
    mean, std = np.array(pre.mean), np.array(pre.std)
    for i, c in enumerate(colours):
        want = (np.array(c) / 255 - mean) / std
        np.testing.assert_allclose(ds.x[i], np.broadcast_to(want[:, None, None], (3, 8, 8)), atol=1e-5)


def test_image_folder_bgr_nhwc(tmp_path):
    colours, labels = _image_folder(tmp_path / "imgs")
    pre = Preprocess(size=(6, 4), channel_order="BGR", layout="NHWC", scale=1.0)
    ds = load_dataset(str(tmp_path / "imgs"), TensorSpec("input", (1, 6, 4, 3), "float32"), preprocess=pre)
    assert ds.x.shape == (5, 6, 4, 3)
    for i, c in enumerate(colours):
        np.testing.assert_allclose(ds.x[i, 3, 2], np.array(c[::-1], np.float32), atol=1e-4)


def test_image_folder_greyscale_without_classes(tmp_path):
    for i, v in enumerate((0, 51, 255)):
        _png(tmp_path / "imgs" / f"{i}.png", (9, 9), v, mode="L")
    pre = Preprocess(size=(8, 8), channel_order="L", mean=(0.5,), std=(0.5,))
    ds = load_dataset(str(tmp_path / "imgs"), TensorSpec("input", (1, 1, 8, 8), "float32"), preprocess=pre)
    assert ds.y is None and ds.x.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(ds.x[:, 0, 4, 4], [-1.0, -0.6, 1.0], atol=1e-5)


def test_image_folder_needs_declared_preprocessing(tmp_path):
    _image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="preprocess"):
        load_dataset(str(tmp_path / "imgs"), SPEC)


def test_entry_point_yielding_x_y_batches(tmp_path):
    (tmp_path / "feed.py").write_text(textwrap.dedent("""
        import numpy as np

        def batches():
            rng = np.random.default_rng(7)
            for i in range(3):
                yield rng.normal(size=(4, 3, 8, 8)).astype(np.float32), np.full(4, i)

        def dict_batches():
            for i in range(2):
                yield {"img": np.full((5, 3, 8, 8), float(i), np.float32), "cls": np.arange(5)}

        def nothing():
            return iter(())
    """))
    ds = load_dataset(f"{tmp_path / 'feed.py'}:batches", SPEC)
    rng = np.random.default_rng(7)
    want = np.concatenate([rng.normal(size=(4, 3, 8, 8)).astype(np.float32) for _ in range(3)])
    np.testing.assert_array_equal(ds.x, want)
    np.testing.assert_array_equal(ds.y, np.repeat([0, 1, 2], 4))

    ds = load_dataset(f"{tmp_path / 'feed.py'}:dict_batches", SPEC, x_key="img", y_key="cls")
    assert len(ds) == 10 and ds.x[7].max() == 1.0
    np.testing.assert_array_equal(ds.y, np.tile(np.arange(5), 2))

    with pytest.raises(DataError, match="no batches"):
        load_dataset(f"{tmp_path / 'feed.py'}:nothing", SPEC)
    with pytest.raises(DataError, match="missing_fn"):
        load_dataset(f"{tmp_path / 'feed.py'}:missing_fn", SPEC)


@pytest.mark.parametrize("name, array, needle", [
    ("shape.npy", np.zeros((4, 1, 8, 8), np.float32), "shape"),
    ("ints.npy", np.zeros((4, 3, 8, 8), np.int64), "int64"),
    ("nan.npy", np.where(np.arange(4 * 192).reshape(4, 3, 8, 8) == 200, np.nan, 0.0).astype(np.float32), "NaN"),
    ("empty.npy", np.zeros((0, 3, 8, 8), np.float32), "empty"),
])
def test_invalid_arrays_are_refused_with_file_name(tmp_path, name, array, needle):
    np.save(tmp_path / name, array)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / name), SPEC)
    assert name in str(e.value) and needle in str(e.value)


def test_fewer_samples_than_batch_is_refused(tmp_path):
    np.save(tmp_path / "few.npy", _x(3))
    with pytest.raises(DataError, match="batch"):
        load_dataset(str(tmp_path / "few.npy"), TensorSpec("input", (4, 3, 8, 8), "float32"))
