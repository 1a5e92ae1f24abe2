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
                  inputs=c.model.inputs,
                  targets=list(c.targets), targets_dirs=[Path(p) for p in c.targets_dirs],
                  calibration_method=c.quantization.calibration_method, data=data, x_key=d.x_key, y_key=d.y_key,
                  y_key_set="y_key" in d.model_fields_set,
                  x_key_set="x_key" in d.model_fields_set, preprocess=d.preprocess is not None,
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
        problems, specs = _onnx_inputs(config, i.model_value, i.show(i.model_value))
    else:
        problems, specs = [], [_Input(n, s, d) for n, s, d in config.model.declared_inputs()]
    if not specs or any(not all(isinstance(d, int) for d in s.shape) for s in specs):
        return problems
    for src in i.data:
        problems += _data_header_problems(src, specs, i.x_key, i.show(src.spec))
    return problems


def _onnx_inputs(config: BuildConfig, path: str, shown: str) -> tuple[list[Problem], list[_Input]]:
    import onnx
    from onnx import helper

    loc = ("model", "onnx")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends, as load_onnx says
        return [(loc, f"{shown}: not a readable ONNX model ({type(exc).__name__}: {one_line(exc)})")], []
    path = shown
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if not graph_inputs:
        return [(loc, f"{path}: the graph has no inputs")], []
    names = [vi.name for vi in graph_inputs]
    where = ("model", "input_shape")
    declared = config.model.inputs or {}
    if config.model.input_shape is not None and len(graph_inputs) != 1:
        return [(where, (f"{path}: one input_shape given but the graph has {len(graph_inputs)} inputs "
                        f"({', '.join(names)}); give one per input name"))], []
    unknown = [n for n in declared if n not in names]
    if unknown:
        return [(("model", "inputs"), (f"{path}: names input(s) {', '.join(map(repr, unknown))} the graph does not "
                                      f"have (inputs: {', '.join(names)})"))], []
    problems, specs = [], []
    for vi in graph_inputs:
        tt = vi.type.tensor_type
        # -1 (or 0) from some exporters marks a dynamic dimension, like a symbol
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                     for d in tt.shape.dim)
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else None
        except (KeyError, TypeError, ValueError):  # an element type numpy has no dtype for
            dtype = None
        d = declared.get(vi.name)
        if d is not None and d.dtype is not None and dtype is not None and d.dtype != dtype:
            problems.append((("model", "inputs"), f"{path}: input '{vi.name}' is {dtype} in the graph, "
                                                  f"the config declares {d.dtype}"))
        override = config.model.input_shape if config.model.input_shape is not None else (d.shape if d else None)
        if override is None:
            specs.append(_Input(vi.name, dims, dtype))
            continue
        if len(override) != len(dims):
            problems.append((where, (f"{path}: input '{vi.name}' has rank {len(dims)} ({list(dims)}) but its "
                                     f"input_shape {list(override)} has rank {len(override)}")))
        elif any(isinstance(h, int) and h != w for h, w in zip(dims, override)):
            problems.append((where, (f"{path}: input '{vi.name}' has static shape {list(dims)}, "
                                     f"input_shape {list(override)} contradicts it")))
        specs.append(_Input(vi.name, tuple(override), dtype))
    dynamic = [s for s in specs if not all(isinstance(d, int) for d in s.shape)]
    if dynamic and not problems:
        shown = ", ".join(f"'{s.name}' {[d if d is not None else '?' for d in s.shape]}" for s in dynamic)
        if config.words.style == "flags":
            fix = " ".join(f"--input-shape {s.name}=..." if len(specs) > 1 else "--input-shape ..." for s in dynamic)
        elif len(specs) > 1:
            fix = ", ".join(f"[model.inputs.{s.name}] shape" for s in dynamic)
        else:
            fix = "[model] input_shape"
        problems.append((where, f"{path}: input(s) {shown} have dynamic dims; give static shapes with {fix}"))
    return problems, ([] if problems else specs)


def _array_headers(src: DataSource, specs: list[_Input], x_key: str) -> dict[str, tuple] | None:
    """(shape, dtype) per input name of a .npy/.npz source, read without its data; None for
    other sources or headers this cannot read (the data loader then says why)."""
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
            if len(specs) != 1:
                return None
            with open(p, "rb") as fp:
                return {specs[0].name: read(fp)}
        with zipfile.ZipFile(p) as z:
            members = [m[:-4] for m in z.namelist() if m.endswith(".npy")]
            out = {}
            for s in specs:
                key = (x_key if x_key in members else s.name) if len(specs) == 1 else s.name
                if key not in members:
                    out[s.name] = members  # no array for this input: the keys it has
                    continue
                with z.open(f"{key}.npy") as fp:
                    out[s.name] = read(fp)
            return out
    except (OSError, EOFError, KeyError, SyntaxError, ValueError, zipfile.BadZipFile):
        return None


def _data_header_problems(src: DataSource, specs: list[_Input], x_key: str, where: str) -> list[Problem]:
    """The checks data.py makes when the data loads, on the array headers alone."""
    import numpy as np

    role, loc = src.role, src.loc
    if len(specs) > 1 and entry_point(src.spec) is None and Path(src.spec).suffix.lower() == ".npy":
        return [(loc, (f"{role} data {where}: a .npy holds one array but the model has {len(specs)} inputs "
                      f"({', '.join(s.name for s in specs)}); give an .npz with one key per input name"))]
    headers = _array_headers(src, specs, x_key)
    if headers is None:
        return []
    missing = [s.name for s in specs if isinstance(headers[s.name], list)]
    if missing:
        have = ", ".join(headers[missing[0]]) or "none"
        if len(specs) == 1:
            return [(loc, (f"{where}: no array {x_key!r} or {missing[0]!r} for the inputs (has: {have}); "
                          "store them under the input's name or set x_key in [data]"))]
        return [(loc, (f"{where}: no array for model input(s) {', '.join(map(repr, missing))} (has: {have}); "
                      f"a multi-input model's data has one key per input name"))]
    calls = {}
    for spec in specs:
        shape, dtype = headers[spec.name]
        what = f"{role} data {where}" + (f": input '{spec.name}'" if len(specs) > 1 else "")
        full, sample = list(spec.shape), list(spec.shape[1:])
        if not shape or 0 in shape:
            return [(loc, f"{what} is empty, expected samples of shape {sample}")]
        if dtype.kind not in "fiub":
            return [(loc, f"{what}: dtype {dtype} is not numeric, expected {spec.dtype or 'numbers'}")]
        if spec.dtype is not None:
            want_float = np.dtype(spec.dtype).kind == "f"
            if want_float and dtype.kind != "f":
                return [(loc, (f"{what}: dtype {dtype} but model input '{spec.name}' is {spec.dtype}, "
                              "give preprocessed floating-point samples"))]
            if not want_float and dtype.kind == "f":
                return [(loc, f"{what}: dtype {dtype} but model input '{spec.name}' is {spec.dtype}")]
        if list(shape[1:]) == full:
            calls[spec.name] = shape[0]
        elif full and list(shape[1:]) == sample:
            calls[spec.name] = shape[0] // full[0]
        else:
            forms = f"samples of {sample}" + (f" or of {full}" if full and full[0] != 1 else "")
            return [(loc, (f"{what}: samples have shape {list(shape[1:])} (array {list(shape)}) "
                          f"but model input '{spec.name}' expects {full}, i.e. {forms}"))]
    batch = specs[0].shape[0] if specs[0].shape else 1
    if len(set(calls.values())) > 1:
        return [(loc, f"{role} data {where}: inputs give different numbers of model calls "
                      f"({', '.join(f'{k}: {v}' for k, v in calls.items())})")]
    if src.limit is not None and src.limit < batch:
        return [(src.limit_loc, f"{src.limit} is fewer than the model's batch size {batch}")]
    if min(calls.values()) < 1:
        rows = headers[specs[0].name][0][0]
        return [(loc, f"{role} data {where}: {rows} samples is fewer than the model's batch size {batch}")]
    return []
