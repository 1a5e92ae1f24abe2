"""Checks before any expensive work: every problem with a build, reported at once.

`preflight(config)` is the first thing a build does, before the model loads or anything is
written. It raises one `ConfigError` listing every problem it finds, in the config's own
words (flags for a command line, `[section] key` for a config file), or returns the
target profiles the config names.

It works in two stages:

1. cheap, importing neither onnx nor torch: targets exist (with "did you mean") and their
   profiles load, calibration methods are known, the model and data files exist, `.npz`
   files have the `x_key` (and a `y_key` the config sets), image folders have their
   preprocessing, a torch model has its input shape;
2. only when stage 1 found nothing: the model's input (an ONNX file's graph inputs, read
   without external data and without cleaning; a torch model's declared input_shape)
   against `input_shape` and the data files' headers (shape, dtype and sample count of
   `.npy`/`.npz` arrays, read without the data).

Stage 1 is in checks.py, which needs no valid config: it also runs (through
`raw_problems`, importable from here too) when `config_from_dict` refuses a config, so a
typo in a target is reported together with a typo in a config key. Stage 2 is here.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import DataSource, Inputs, cheap_problems, entry_point, raw_problems
from .config import BuildConfig
from .errors import one_line
from .targets import TargetProfile
from .wording import Problem

__all__ = ["preflight", "raw_problems"]


def preflight(config: BuildConfig) -> list[TargetProfile]:
    """Check everything that can be checked before the model loads; raise one `ConfigError`
    naming every problem, or return the config's target profiles (in its order, without
    the config's overrides applied). Writes nothing. Checking the same config again is free."""
    key = config.model_dump_json()
    if config._preflighted is not None and config._preflighted[0] == key:
        return list(config._preflighted[1])
    inputs = _inputs(config)
    profiles: list[TargetProfile] = []
    problems = cheap_problems(inputs, profiles)
    if not problems:  # the model is read only when the cheap checks pass (onnx takes ~1 s to import)
        problems = _model_problems(config, inputs)
    if problems:
        raise config.words.error(problems)
    config._preflighted = (key, tuple(profiles))
    return profiles


def _inputs(c: BuildConfig) -> Inputs:
    """What the checks read, from a valid config."""
    kind = next(k for k in ("onnx", "torch", "pt2") if getattr(c.model, k) is not None)
    d, distill = c.data, c.compress.distill
    data = [DataSource(("data", "calibration"), d.calibration, "calibration", d.calibration_samples,
                       ("data", "calibration_samples"))]
    if d.evaluation:
        data.append(DataSource(("data", "evaluation"), d.evaluation, "evaluation", d.evaluation_samples,
                               ("data", "evaluation_samples")))
    if distill is not None and distill.data:
        data.append(DataSource(("compress", "distill", "data"), distill.data, "distillation", distill.samples,
                               ("compress", "distill", "samples")))
    return Inputs(model_kind=kind, model_value=str(getattr(c.model, kind)), input_shape=c.model.input_shape,
                  targets=list(c.targets), targets_dirs=[Path(p) for p in c.targets_dirs],
                  calibration_method=c.quantization.calibration_method, data=data, x_key=d.x_key, y_key=d.y_key,
                  y_key_set="y_key" in d.model_fields_set, preprocess=d.preprocess is not None,
                  flags=c.words.style == "flags", shown_base=c.base_dir if c.words.style == "file" else None)


# ---------------------------------------------------------------------------------------
# Stage 2: the model's input against input_shape and the data files' headers


@dataclass
class _Input:
    name: str
    shape: tuple          # ints, or None / names for dynamic dimensions
    dtype: str | None     # numpy dtype name, None when unknown


def _model_problems(config: BuildConfig, i: Inputs) -> list[Problem]:
    if i.model_kind == "onnx":
        problems, spec = _onnx_input(config, i.model_value, i.show(i.model_value))
    else:
        problems, spec = [], _Input("input", tuple(config.model.input_shape), "float32")
    if spec is None or not all(isinstance(d, int) for d in spec.shape) or not spec.shape:
        return problems
    for src in i.data:
        problems += _data_header_problems(src, spec, i.x_key, i.show(src.spec))
    return problems


def _onnx_input(config: BuildConfig, path: str, shown: str) -> tuple[list[Problem], _Input | None]:
    import onnx
    from onnx import helper

    loc = ("model", "onnx")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends, as load_onnx says
        return [(loc, f"{shown}: not a readable ONNX model ({type(exc).__name__}: {one_line(exc)})")], None
    path = shown
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs) or "none"
        return [(loc, (f"{path}: the graph has {len(inputs)} inputs ({names}), "
                      "but edgepack supports single-input models"))], None
    vi = inputs[0]
    tt = vi.type.tensor_type
    # -1 (or 0) from some exporters marks a dynamic dimension, like a symbol
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                 for d in tt.shape.dim)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else None
    except (KeyError, TypeError, ValueError):  # an element type numpy has no dtype for
        dtype = None
    override = config.model.input_shape
    if override is None:
        return [], _Input(vi.name, dims, dtype)
    where = ("model", "input_shape")
    if len(override) != len(dims):
        return [(where, (f"{path}: input '{vi.name}' has rank {len(dims)} ({list(dims)}) but input_shape "
                        f"{list(override)} has rank {len(override)}"))], None
    if any(isinstance(h, int) and h != w for h, w in zip(dims, override)):
        return [(where, (f"{path}: input '{vi.name}' has static shape {list(dims)}, "
                        f"input_shape {list(override)} contradicts it"))], None
    return [], _Input(vi.name, tuple(override), dtype)


def _array_header(src: DataSource, x_key: str) -> tuple[tuple, Any] | None:
    """(shape, dtype) of the input array of a .npy/.npz source, read without its data;
    None for other sources or a header this cannot read (the data loader then says why)."""
    if entry_point(src.spec) is not None:
        return None
    p = Path(src.spec)
    suffix = p.suffix.lower()
    if not p.is_file() or suffix not in (".npy", ".npz"):
        return None
    import numpy as np

    def read(fp):
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        return tuple(shape), dtype

    try:
        if suffix == ".npy":
            with open(p, "rb") as fp:
                return read(fp)
        with zipfile.ZipFile(p) as z, z.open(f"{x_key}.npy") as fp:
            return read(fp)
    except (OSError, EOFError, KeyError, SyntaxError, ValueError, zipfile.BadZipFile):
        return None


def _data_header_problems(src: DataSource, spec: _Input, x_key: str, where: str) -> list[Problem]:
    """The checks data.py makes when the data loads, on the array header alone."""
    import numpy as np

    header = _array_header(src, x_key)
    if header is None:
        return []
    shape, dtype = header
    role, loc = src.role, src.loc
    sample = list(spec.shape[1:])
    if not shape or 0 in shape:
        return [(loc, f"{role} data {where} is empty, expected samples of shape {sample}")]
    if dtype.kind not in "fiu":
        return [(loc, f"{role} data {where}: dtype {dtype} is not numeric, expected {spec.dtype or 'numbers'}")]
    if spec.dtype is not None:
        want_float = np.dtype(spec.dtype).kind == "f"
        if want_float and dtype.kind != "f":
            return [(loc, (f"{role} data {where}: dtype {dtype} but model input '{spec.name}' is {spec.dtype}, "
                          "give preprocessed floating-point samples"))]
        if not want_float and dtype.kind == "f":
            return [(loc, f"{role} data {where}: dtype {dtype} but model input '{spec.name}' is {spec.dtype}")]
    if list(shape[1:]) != sample:
        return [(loc, (f"{role} data {where}: samples have shape {list(shape[1:])} (array {list(shape)}) "
                      f"but model input '{spec.name}' expects {list(spec.shape)}, i.e. samples of {sample}"))]
    batch = spec.shape[0]
    if src.limit is not None and src.limit < batch:
        return [(src.limit_loc, f"{src.limit} is fewer than the model's batch size {batch}")]
    if shape[0] < batch:
        return [(loc, f"{role} data {where}: {shape[0]} samples is fewer than the model's batch size {batch}")]
    return []
