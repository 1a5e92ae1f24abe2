"""Calibration and evaluation data: arrays in memory, validated against the model input.

Sources: a `.npy` array, a `.npz` file (inputs under `x`, optional labels under `y`, key
names configurable), a folder of images with declared preprocessing (class sub-folders
give labels), or a Python entry point `file.py:function` / `module:function` returning an
iterable of batches (`x`, `(x, y)` or `{"x": ..., "y": ...}`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .graph import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Samples stacked along axis 0, each shaped like one model input without its batch."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        y = None if self.y is None else self.y[:n]
        return Dataset(self.x[:n], y, self.source, self.class_names)

    def batches(self, batch: int):
        """Model-shaped input batches; a trailing partial batch is dropped."""
        for i in range(0, len(self) - batch + 1, batch):
            yield self.x[i : i + batch]


def load_dataset(spec: str, input_spec: TensorSpec, *, x_key="x", y_key="y", preprocess=None,
                 limit: int | None = None, role: str = "calibration") -> Dataset:
    """Load, check against the model input, and cut to `limit` samples."""
    x, y, class_names = _read(spec, input_spec, x_key, y_key, preprocess, role)
    ds = _validate(x, y, spec, input_spec, role).head(limit)
    ds.class_names = class_names
    batch = input_spec.shape[0]
    if len(ds) < batch:
        what = f"{role}_samples = {limit}" if limit is not None and limit < batch else f"{len(ds)} samples"
        raise DataError(f"{role} data {spec}: {what} is fewer than the model's batch size {batch}")
    return ds


def _read(spec, input_spec, x_key, y_key, preprocess, role):
    head, sep, func = spec.rpartition(":")
    if sep and (head.endswith(".py") or (not Path(spec).exists() and "/" not in head and head)):
        return (*_from_entry_point(head, func, x_key, y_key, role), None)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{role} data {spec} does not exist")
    if path.is_dir():
        return _from_image_folder(path, input_spec, preprocess, role)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None, None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if x_key not in z.files:
                    raise DataError(f"{path}: no array '{x_key}' (has: {', '.join(z.files) or 'none'}); "
                                    "set x_key to the inputs' key")
                return z[x_key], (z[y_key] if y_key in z.files else None), None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{role} data {path}: expected a .npy or .npz file, an image folder, or file.py:function")


def _from_entry_point(module_spec, func_name, x_key, y_key, role):
    where = f"{module_spec}:{func_name}"
    try:
        if module_spec.endswith(".py"):
            path = Path(module_spec)
            if not path.is_file():
                raise DataError(f"{role} data entry point file {path} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"_edgepack_data_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            # as `python -m` would: modules next to where the user runs edgepack are importable
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_spec)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: importing it failed ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise DataError(f"{where}: no callable named '{func_name}'")
    xs, ys = [], []
    try:
        for batch in fn():
            if isinstance(batch, dict):
                bx, by = batch.get(x_key), batch.get(y_key)
            elif isinstance(batch, (tuple, list)):
                bx, by = batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                bx, by = batch, None
            xs.append(np.asarray(bx))
            ys.append(None if by is None else np.asarray(by))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: iterating its batches failed ({type(exc).__name__}: {exc})") from None
    if not xs:
        raise DataError(f"{role} data {where} yielded no batches; expected at least one sample")
    if any(y is None for y in ys) and any(y is not None for y in ys):
        raise DataError(f"{where}: some batches carry labels and some do not")
    try:
        x = np.concatenate(xs)
        y = None if ys[0] is None else np.concatenate(ys)
    except ValueError as exc:
        raise DataError(f"{where}: batches do not stack ({exc})") from None
    return x, y


def _from_image_folder(path: Path, input_spec: TensorSpec, preprocess, role):
    if preprocess is None:
        raise DataError(f"{role} data {path} is an image folder; declare its preprocessing "
                        "([data.preprocess] size, mean, std, channel_order, layout)")
    from PIL import Image

    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    if subdirs:
        class_names = [d.name for d in subdirs]
        files = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        class_names = None
        files = [(f, None) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{role} data {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    h, w = preprocess.size
    mode = "L" if preprocess.channel_order == "L" else "RGB"
    arrays = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                img = im.convert(mode).resize((w, h), Image.BILINEAR)
        except Exception as exc:
            raise DataError(f"{f}: not a readable image ({exc})") from None
        a = np.asarray(img, dtype=np.float32)
        a = a[..., None] if a.ndim == 2 else a
        if preprocess.channel_order == "BGR":
            a = a[..., ::-1]
        c = a.shape[-1]
        mean = np.asarray(preprocess.mean[:c], np.float32)
        std = np.asarray(preprocess.std[:c], np.float32)
        a = (a * preprocess.scale - mean) / std
        arrays.append(a.transpose(2, 0, 1) if preprocess.layout == "NCHW" else a)
    x = np.stack(arrays).astype(np.float32)
    y = None if class_names is None else np.asarray([lbl for _, lbl in files], np.int64)
    return x, y, class_names


def _validate(x, y, spec: str, input_spec: TensorSpec, role: str) -> Dataset:
    x = np.asarray(x)
    want = tuple(input_spec.shape)
    sample = want[1:]
    if x.size == 0 or x.ndim == 0:
        raise DataError(f"{role} data {spec} is empty; expected samples of shape {list(sample)}")
    if x.dtype.kind not in "fiub" or x.dtype.kind == "b":
        raise DataError(f"{role} data {spec}: dtype {x.dtype} is not numeric; expected {input_spec.dtype}")
    want_float = np.dtype(input_spec.dtype).kind == "f"
    if want_float and x.dtype.kind != "f":
        raise DataError(
            f"{role} data {spec}: dtype {x.dtype} but model input '{input_spec.name}' is {input_spec.dtype}; "
            "give preprocessed floating-point samples"
        )
    if not want_float and x.dtype.kind == "f":
        raise DataError(f"{role} data {spec}: dtype {x.dtype} but model input '{input_spec.name}' "
                        f"is {input_spec.dtype}")
    if tuple(x.shape[1:]) != sample:
        raise DataError(
            f"{role} data {spec}: samples have shape {list(x.shape[1:])} (array {list(x.shape)}) "
            f"but model input '{input_spec.name}' expects {list(want)}, i.e. samples of {list(sample)}"
        )
    if want_float:
        bad = ~np.isfinite(x)
        if bad.any():
            raise DataError(f"{role} data {spec}: {int(bad.sum())} NaN/Inf values (first sample with one: "
                            f"{int(np.argwhere(bad.reshape(len(x), -1).any(1))[0][0])}); expected finite numbers")
    x = x.astype(input_spec.dtype, copy=False)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[0] == len(x) and y.shape[1] > 1:
            y = y.argmax(1)  # one-hot
        if y.ndim != 1 or y.shape[0] != len(x):
            raise DataError(f"{role} data {spec}: labels have shape {list(y.shape)}; expected [{len(x)}] class indices")
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{role} data {spec}: labels have dtype {y.dtype}; expected integer class indices")
        if (y < 0).any():
            raise DataError(f"{role} data {spec}: negative labels; expected class indices ≥ 0")
        y = y.astype(np.int64)
    return Dataset(x, y, spec)
