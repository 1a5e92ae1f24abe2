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


# ------------------------------------------------------------------ several inputs

AUDIO = TensorSpec("audio", (1, 512), "float32")
STATE = TensorSpec("state", (2, 1, 64), "float32")
RATE = TensorSpec("sr", (), "int64")
IDS = TensorSpec("input_ids", (1, 16), "int64")
MASK = TensorSpec("attention_mask", (1, 16), "int64")


def _vad_arrays(n, rng=np.random.default_rng(0)):
    return {"audio": rng.normal(size=(n, 512)).astype(np.float32),         # (N, *shape[1:])
            "state": np.zeros((n, 2, 1, 64), np.float32),                  # (N, *shape)
            "sr": np.full(n, 16000, np.int64)}                             # scalar: (N,)


def test_npz_with_one_key_per_input_in_both_sample_forms_and_a_scalar(tmp_path):
    np.savez(tmp_path / "d.npz", **_vad_arrays(6), y=np.arange(6) % 2)
    ds = load_dataset(str(tmp_path / "d.npz"), [AUDIO, STATE, RATE])
    assert ds.names == ["audio", "state", "sr"] and ds.n_calls == 6 and len(ds) == 6
    assert ds.calls["audio"].shape == (6, 1, 512) and ds.calls["state"].shape == (6, 2, 1, 64)
    assert ds.calls["sr"].shape == (6,) and ds.calls["sr"].dtype == np.int64
    feed = ds.feed(2)
    assert feed["audio"].shape == (1, 512) and feed["state"].shape == (2, 1, 64) and feed["sr"].shape == ()
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.head(4).n_calls == 4 and ds.head(4).y.tolist() == [0, 1, 0, 1]


def test_integer_inputs_keep_integers_and_refuse_floats(tmp_path):
    ids = np.random.default_rng(1).integers(0, 100, (5, 16))
    np.savez(tmp_path / "ok.npz", input_ids=ids.astype(np.int32), attention_mask=np.ones((5, 1, 16), bool))
    ds = load_dataset(str(tmp_path / "ok.npz"), [IDS, MASK])
    assert ds.calls["input_ids"].dtype == np.int64 and ds.calls["attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(ds.calls["input_ids"][:, 0], ids)
    np.savez(tmp_path / "bad.npz", input_ids=ids.astype(np.float32), attention_mask=np.ones((5, 16), np.int64))
    with pytest.raises(DataError, match="input 'input_ids' has dtype float32 but the model input is int64; "
                                        "integer inputs .* are never quantised"):
        load_dataset(str(tmp_path / "bad.npz"), [IDS, MASK])


@pytest.mark.parametrize("arrays, words", [
    ({"input_ids": np.zeros((4, 16), np.int64)}, "no array for model input(s) 'attention_mask' (has: input_ids)"),
    ({"input_ids": np.zeros((4, 16), np.int64), "attention_mask": np.zeros((3, 16), np.int64)},
     "inputs give different numbers of model calls (input_ids: 4, attention_mask: 3)"),
    ({"input_ids": np.zeros((4, 15), np.int64), "attention_mask": np.zeros((4, 16), np.int64)},
     "input 'input_ids' has array shape [4, 15] but the model input is [1, 16]; expected [N, 1, 16] or [N, 16]"),
    ({"input_ids": np.full((4, 16), 2**40), "attention_mask": np.zeros((4, 16), np.int64)}, None),
], ids=["missing-key", "different-counts", "bad-shape", "fits-int64"])
def test_multi_input_problems_name_the_input(tmp_path, arrays, words):
    np.savez(tmp_path / "d.npz", **arrays)
    if words is None:
        assert load_dataset(str(tmp_path / "d.npz"), [IDS, MASK]).n_calls == 4
        return
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "d.npz"), [IDS, MASK])
    assert words in str(e.value) and "d.npz" in str(e.value)


def test_int32_input_out_of_range_and_npy_for_two_inputs_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", ids=np.full((2, 4), 2**40))
    with pytest.raises(DataError, match=r"outside int32's range"):
        load_dataset(str(tmp_path / "d.npz"), [TensorSpec("ids", (1, 4), "int32")])
    np.save(tmp_path / "x.npy", np.zeros((4, 16), np.int64))
    with pytest.raises(DataError, match="a .npy holds one array but the model has 2 inputs"):
        load_dataset(str(tmp_path / "x.npy"), [IDS, MASK])


def test_entry_point_yielding_dicts_by_input_name(tmp_path):
    (tmp_path / "feed.py").write_text(textwrap.dedent("""
        import numpy as np
        def calls():
            for i in range(3):
                yield {"input_ids": np.full((1, 16), i), "attention_mask": np.ones((1, 16), np.int64), "y": [i]}
        def arrays():
            yield np.zeros((1, 16), np.int64)
    """))
    ds = load_dataset(f"{tmp_path / 'feed.py'}:calls", [IDS, MASK])
    assert ds.n_calls == 3 and ds.y.tolist() == [0, 1, 2]
    assert [int(f["input_ids"][0, 0]) for f in ds.feeds()] == [0, 1, 2]
    with pytest.raises(DataError, match="yielded a ndarray; a model with 2 inputs needs dicts"):
        load_dataset(f"{tmp_path / 'feed.py'}:arrays", [IDS, MASK])


def test_single_input_npz_found_under_the_input_name(tmp_path):
    np.savez(tmp_path / "d.npz", input=_x(4))
    assert load_dataset(str(tmp_path / "d.npz"), SPEC).n_calls == 4
