"""Calibration and evaluation data: arrays in memory, validated against the model's inputs.

A model has one or more inputs, each with a name, dtype and static shape. Data for it is
one array per input, a stack of samples along axis 0, in either of two forms:
- `(N, *input_shape)`: each sample is one whole model call;
- `(N, *input_shape[1:])`: samples are stacked along the input's first (batch) dim, so a
  model with batch B takes B consecutive samples per call (a scalar input is `(N,)`).

Sources: a `.npy` array (single-input models), a `.npz` file (one key per input name, or
`x` for a single input; optional labels under `y`; key names configurable), a folder of
images with declared preprocessing (class sub-folders give labels), or a Python entry
point `file.py:function` / `module:function` returning an iterable of batches (`x`,
`(x, y)`, or a dict with one key per input name and optionally the labels key).

In memory a `Dataset` holds, per input, one entry per model call: `(calls, *input_shape)`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import USER_CODE_ERRORS, DataError, what_raised
from .graph import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Model calls: per input name, an array `(calls, *input_shape)`; labels, one per sample
    (a sample is one row of the first input's batch axis: `calls * batch` labels)."""

    calls: dict[str, np.ndarray]
    y: np.ndarray | None
    source: str
    class_names: list[str] | None = None

    @classmethod
    def of(cls, x: np.ndarray, y=None, source: str = "memory", *, name: str = "input", batch: int = 1) -> "Dataset":
        """A single-input dataset from samples stacked along axis 0 (model batch `batch`)."""
        x = np.asarray(x)
        n = (len(x) // batch) * batch
        return cls({name: x[:n].reshape(n // batch, batch, *x.shape[1:])}, None if y is None else y[:n], source)

    @property
    def names(self) -> list[str]:
        return list(self.calls)

    @property
    def n_calls(self) -> int:
        return int(next(iter(self.calls.values())).shape[0])

    @property
    def batch(self) -> int:
        """Samples per call: the first input's leading dim (1 for a scalar input)."""
        first = next(iter(self.calls.values()))
        return int(first.shape[1]) if first.ndim >= 2 else 1

    def __len__(self) -> int:
        return self.n_calls * self.batch

    @property
    def x(self) -> np.ndarray:
        """The first input's samples stacked along axis 0, `(calls * batch, *input_shape[1:])`."""
        first = next(iter(self.calls.values()))
        return first.reshape(-1, *first.shape[2:]) if first.ndim >= 2 else first

    def head(self, n: int | None) -> "Dataset":
        """The first `n` samples (whole calls)."""
        if n is None or n >= len(self):
            return self
        calls = n // self.batch
        y = None if self.y is None else self.y[: calls * self.batch]
        return Dataset({k: v[:calls] for k, v in self.calls.items()}, y, self.source, self.class_names)

    def feed(self, i: int) -> dict[str, np.ndarray]:
        """The inputs of model call `i`, by input name."""
        return {k: np.asarray(v[i]) for k, v in self.calls.items()}  # a scalar input stays a 0-d array

    def feeds(self):
        """Every model call's inputs, by input name."""
        for i in range(self.n_calls):
            yield self.feed(i)


def load_dataset(spec: str, inputs: list[TensorSpec] | TensorSpec, *, x_key="x", y_key="y", preprocess=None,
                 limit: int | None = None, role: str = "calibration", labels: str = "classes") -> Dataset:
    """Load, check against the model inputs, and cut to `limit` samples.

    `labels`: "classes" (one class index per sample, one-hot accepted) or "task" (any
    numeric array with one row per sample, read by the model's task: a detection's boxes
    `[K, 5]` padded with class -1 rows, a sequence's symbols padded with -1)."""
    inputs = [inputs] if isinstance(inputs, TensorSpec) else list(inputs)
    arrays, y, class_names = _read(spec, inputs, x_key, y_key, preprocess, role)
    ds = _validate(arrays, y, spec, inputs, role, labels)
    batch = ds.batch
    if limit is not None and limit < batch:
        raise DataError(f"{role} data {spec}: {role}_samples = {limit} is fewer than the model's batch size {batch}")
    ds = ds.head(limit)
    ds.class_names = class_names
    if ds.n_calls == 0:
        raise DataError(f"{role} data {spec}: {len(next(iter(arrays.values())))} samples is fewer than "
                        f"the model's batch size {batch}")
    return ds


def _describe(inputs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in inputs)


def _read(spec, inputs, x_key, y_key, preprocess, role):
    """Raw arrays by input name, labels or None, class names or None."""
    head, sep, func = spec.rpartition(":")
    if sep and (head.endswith(".py") or (not Path(spec).exists() and "/" not in head and head)):
        return (*_from_entry_point(head, func, inputs, x_key, y_key, role), None)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{role} data {spec} does not exist")
    single = len(inputs) == 1
    if path.is_dir():
        if not single:
            raise DataError(f"{role} data {path} is an image folder but the model has {len(inputs)} inputs "
                            f"({_describe(inputs)}); give an .npz with one key per input name")
        x, y, names = _from_image_folder(path, inputs[0], preprocess, role)
        return {inputs[0].name: x}, y, names
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        _check_regular(path, role)
    try:
        if suffix == ".npy":
            if not single:
                raise DataError(f"{role} data {path}: a .npy holds one array but the model has {len(inputs)} inputs "
                                f"({_describe(inputs)}); give an .npz with one key per input name")
            return {inputs[0].name: np.load(path, allow_pickle=False)}, None, None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _pick(dict(z.items()), str(path), inputs, x_key, y_key), \
                    (z[y_key] if y_key in z.files else None), None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from None
    raise DataError(f"{role} data {path}: expected a .npy or .npz file, an image folder, or file.py:function")


def _pick(arrays: dict, where: str, inputs: list[TensorSpec], x_key: str, y_key: str) -> dict[str, np.ndarray]:
    """The model inputs' arrays out of a dict of named arrays (an .npz, or one entry-point batch)."""
    if len(inputs) == 1:
        name = inputs[0].name
        for key in (x_key, name):
            if key in arrays:
                return {name: arrays[key]}
        have = ", ".join(k for k in arrays if k != y_key) or "none"
        raise DataError(f"{where}: no array '{x_key}' (has: {have}); set x_key to the inputs' key "
                        f"(or name the array after the model input '{name}')")
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        have = ", ".join(k for k in arrays if k != y_key) or "none"
        raise DataError(f"{where}: no array for model input(s) {', '.join(map(repr, missing))} (has: {have}); "
                        f"a multi-input model needs one key per input name ({_describe(inputs)})")
    return {s.name: arrays[s.name] for s in inputs}


def _from_entry_point(module_spec, func_name, inputs, x_key, y_key, role):
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
    except USER_CODE_ERRORS as exc:  # sys.exit() or Ctrl-C in user code is reported, not obeyed
        raise DataError(f"{where}: importing it failed ({what_raised(exc)})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise DataError(f"{where}: no callable named '{func_name}'")
    parts: dict[str, list] = {s.name: [] for s in inputs}
    ys = []
    try:
        for batch in fn():
            if isinstance(batch, dict):
                got, by = _pick(batch, f"{where} (a yielded dict)", inputs, x_key, y_key), batch.get(y_key)
            elif len(inputs) > 1:
                raise DataError(f"{where}: yielded a {type(batch).__name__}; a model with {len(inputs)} inputs "
                                f"needs dicts with one key per input name ({_describe(inputs)})")
            elif isinstance(batch, (tuple, list)):
                got, by = {inputs[0].name: batch[0]}, (batch[1] if len(batch) > 1 else None)
            else:
                got, by = {inputs[0].name: batch}, None
            for k, v in got.items():
                parts[k].append(np.asarray(v))
            ys.append(None if by is None else np.asarray(by))
    except DataError:
        raise
    except USER_CODE_ERRORS as exc:
        raise DataError(f"{where}: iterating its batches failed ({what_raised(exc)})") from None
    if not ys:
        raise DataError(f"{role} data {where} yielded no batches; expected at least one sample")
    if any(y is None for y in ys) and any(y is not None for y in ys):
        raise DataError(f"{where}: some batches carry labels and some do not")
    try:
        arrays = {k: (np.concatenate(v) if v[0].ndim else np.stack(v)) for k, v in parts.items()}
        y = None if ys[0] is None else np.concatenate([np.atleast_1d(v) for v in ys])
    except ValueError as exc:
        raise DataError(f"{where}: batches do not stack ({exc})") from None
    return arrays, y


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
    for f, _ in files:  # a FIFO would block the read for ever, a device read without end
        _check_regular(f, role)
    if not files:
        raise DataError(f"{role} data {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    h, w = preprocess.size
    mode = "L" if preprocess.channel_order == "L" else "RGB"
    arrays = []
    for f, _ in files:
        try:
            with _open_regular(f, role) as fh, Image.open(fh) as im:
                img = im.convert(mode).resize((w, h), Image.BILINEAR)
        except DataError:
            raise
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


def _special_kind(mode: int) -> str:
    return next((what for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                                         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                                         (stat.S_ISDIR, "a folder")) if test(mode)), "a special file")


def _expected_file(path: Path) -> str:
    return f"a {path.suffix.lower()} file" if path.suffix.lower() in (".npy", ".npz") else "an image file"


def _check_regular(path: Path, role: str) -> None:
    """DataError unless `path` is a regular file (a symlink counts as what it points to)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"{role} data {path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{role} data {path} is not a regular file but {_special_kind(mode)}; "
                        f"expected {_expected_file(path)}")


def _open_regular(path: Path, role: str):
    """`path` opened for binary reading, refused unless it is a regular file. Opened without
    blocking and checked on the open descriptor, so a file swapped for a FIFO after the
    folder was listed cannot hang the build."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{role} data {path}: cannot read it ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{role} data {path} is not a regular file but {_special_kind(mode)}; "
                        f"expected {_expected_file(path)}")
    return os.fdopen(fd, "rb")


def _as_calls(a: np.ndarray, s: TensorSpec, spec: str, role: str) -> np.ndarray:
    """One input's data as `(calls, *input_shape)`, from either sample form."""
    shape = tuple(s.shape)
    if a.ndim == 0 or a.size == 0:
        raise DataError(f"{role} data {spec}: input '{s.name}' is empty; expected samples of shape {list(shape)}")
    if tuple(a.shape[1:]) == shape:
        return a
    if shape and tuple(a.shape[1:]) == shape[1:]:
        calls = len(a) // shape[0]
        return a[: calls * shape[0]].reshape(calls, *shape)
    forms = f"[N, {', '.join(map(str, shape))}]" if shape else "[N]"
    if shape:
        forms += f" or [N, {', '.join(map(str, shape[1:]))}]" if shape[1:] else " or [N]"
    raise DataError(f"{role} data {spec}: input '{s.name}' has array shape {list(a.shape)} but the model input "
                    f"is {list(shape)}; expected {forms}")


def _check_dtype(a: np.ndarray, s: TensorSpec, spec: str, role: str) -> np.ndarray:
    want = np.dtype(s.dtype)
    where = f"{role} data {spec}: input '{s.name}'"
    if a.dtype.kind not in "fiub":
        raise DataError(f"{where} has dtype {a.dtype}, not numbers; expected {want}")
    if want.kind == "f":
        if a.dtype.kind != "f":
            raise DataError(f"{where} has dtype {a.dtype} but the model input is {want}; "
                            "give preprocessed floating-point samples")
        bad = ~np.isfinite(a)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(a), -1).any(1))[0][0])
            raise DataError(f"{where} has {int(bad.sum())} NaN/Inf values (first in sample {first}); "
                            "expected finite numbers")
        return a.astype(want, copy=False)
    if a.dtype.kind == "f":
        raise DataError(f"{where} has dtype {a.dtype} but the model input is {want}; integer inputs "
                        "(token ids, masks, rates) take integer data and are never quantised")
    if want.kind == "b":
        if a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
            raise DataError(f"{where} has values other than 0 and 1 but the model input is bool")
        return a.astype(bool)
    if a.dtype.kind == "b":
        return a.astype(want)
    info = np.iinfo(want)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise DataError(f"{where} has values in [{a.min()}, {a.max()}], outside {want}'s range")
    return a.astype(want, copy=False)


def _validate(arrays: dict, y, spec: str, inputs: list[TensorSpec], role: str, labels: str = "classes") -> Dataset:
    calls = {}
    for s in inputs:
        a = np.asarray(arrays[s.name])
        calls[s.name] = _as_calls(_check_dtype(a, s, spec, role) if a.ndim else a, s, spec, role)
    counts = {k: len(v) for k, v in calls.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"{role} data {spec}: inputs give different numbers of model calls "
                        f"({', '.join(f'{k}: {v}' for k, v in counts.items())}); every input needs the same samples")
    ds = Dataset(calls, None, spec)
    if y is not None:
        rows = len(np.asarray(arrays[inputs[0].name]))
        ds.y = _labels(y, len(ds), rows, spec, role) if labels == "classes" else _task_labels(y, len(ds), rows, spec,
                                                                                              role)
    return ds


def _task_labels(y, n: int, rows: int, spec: str, role: str) -> np.ndarray:
    """Labels a task reads: numeric, one row per sample (padding is the task's convention)."""
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] not in (n, rows) or y.dtype.kind not in "fiub":
        raise DataError(f"{role} data {spec}: labels have shape {list(y.shape)} and dtype {y.dtype}; expected "
                        f"numbers with one row per sample ({rows})")
    return y[:n]


def check_class_labels(data: Dataset, output: np.ndarray, output_name: str, task=None) -> None:
    """DataError when class-index labels cannot index the model's first output (`output`: the
    float baseline's, all calls concatenated): a label past the last class scores 0 % for every
    artifact, float included, which would otherwise read as a passed build. One score per
    sample is a binary decision: labels 0 or 1."""
    if data.y is None or (task is not None and task.name != "classification") or not len(output):
        return
    classes = output.reshape(len(output), -1).shape[1]
    top = 1 if classes == 1 else classes - 1
    bad = int((data.y > top).sum())
    if bad:
        raise DataError(f"evaluation data {data.source}: {bad} of {len(data.y)} labels are outside the model's classes "
                        f"(largest label {int(data.y.max())}; output '{output_name}' has {classes} score"
                        f"{'s' if classes > 1 else ''} per sample, so labels must be 0..{top})")


def _labels(y, n: int, rows: int, spec: str, role: str) -> np.ndarray:
    """Class indices, one per sample; `rows` is how many samples the data had before it was cut to whole calls."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] in (n, rows) and y.shape[1] > 1:
        y = y.argmax(1)  # one-hot
    if y.ndim != 1 or y.shape[0] not in (n, rows):
        raise DataError(f"{role} data {spec}: labels have shape {list(y.shape)}; expected [{rows}] class indices")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{role} data {spec}: labels have dtype {y.dtype}; expected integer class indices")
    if (y < 0).any():
        raise DataError(f"{role} data {spec}: negative labels; expected class indices ≥ 0")
    return y[:n].astype(np.int64)
