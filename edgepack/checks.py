"""The cheap checks of a build, on a config dict: no valid config needed, no onnx or torch imported.

Stage 1 of `preflight` (see preflight.py): targets exist (with "did you mean") and their
profiles load, calibration methods are known, the model and data files exist, `.npz` files
have the `x_key` (and a `y_key` the config sets), image folders have their preprocessing, a
torch model has its input shape.

They read an `Inputs`: what preflight takes from a valid config, or `raw_problems` takes
from a config dict that did not validate, whatever in it has the right type. That is why
this module does not import config.py: `config_from_dict` runs `raw_problems` when it
refuses a config, so a typo in a target is reported together with a typo in a config key.
"""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, one_line
from .targets import TargetProfile, load_profile, load_targets, unknown_target
from .wording import CALIBRATION_METHODS, Problem, as_written, did_you_mean, not_one_of

INT8_KINDS = ("ort-int8", "tflite-int8")


@dataclass
class DataSource:
    loc: tuple           # where the config sets it, e.g. ("data", "calibration")
    spec: str            # .npy / .npz / folder / file.py:function / module:function
    role: str            # calibration | evaluation | distillation
    limit: int | None = None
    limit_loc: tuple = ()


@dataclass
class Inputs:
    """What the checks read, from a valid config or from a raw (refused) config dict."""

    model_kind: str | None = None   # onnx | torch | pt2, when exactly one is given
    model_value: str | None = None
    input_shape: tuple | None = None
    inputs: dict | None = None      # [model.inputs]: per-input tables
    targets: list[str] = field(default_factory=list)
    targets_dirs: list[Path] = field(default_factory=list)
    calibration_method: str | None = None
    data: list[DataSource] = field(default_factory=list)
    x_key: str = "x"
    y_key: str = "y"
    y_key_set: bool = False
    x_key_set: bool = False         # an explicit x_key (else inputs are found by name in stage 2)
    preprocess: bool = False
    flags: bool = False             # the config was made from `edgepack build` flags
    shown_base: Path | None = None  # a config file's folder: paths are shown as the file has them

    def show(self, path: str) -> str:
        return as_written(path, self.shown_base)

    @classmethod
    def from_dict(cls, raw: dict, flags: bool = False, shown_base: Path | None = None) -> Inputs:
        """Whatever has the right type in a config dict that failed validation."""
        def get(d, k):
            return d.get(k) if isinstance(d, dict) else None

        model, d, q = get(raw, "model"), get(raw, "data"), get(raw, "quantization")
        distill = get(get(raw, "compress"), "distill")
        i = cls(flags=flags, shown_base=shown_base)
        sources = [k for k in ("onnx", "torch", "pt2") if get(model, k) is not None]
        if len(sources) == 1 and isinstance(get(model, sources[0]), (str, Path)):
            i.model_kind, i.model_value = sources[0], str(get(model, sources[0]))
            if i.model_kind == "torch" and ":" not in i.model_value:
                i.model_kind = None  # refused by validation already
        i.input_shape = get(model, "input_shape")
        i.inputs = get(model, "inputs") if isinstance(get(model, "inputs"), dict) else None
        targets = get(raw, "targets")
        i.targets = [t for t in targets if isinstance(t, str)] if isinstance(targets, list) else []
        dirs = get(raw, "targets_dirs")
        i.targets_dirs = [Path(p) for p in dirs if isinstance(p, (str, Path))] if isinstance(dirs, list) else []
        method = get(q, "calibration_method")
        i.calibration_method = method if isinstance(method, str) else None
        for loc, spec, role in ((("data", "calibration"), get(d, "calibration"), "calibration"),
                                (("data", "evaluation"), get(d, "evaluation"), "evaluation"),
                                (("compress", "distill", "data"), get(distill, "data"), "distillation")):
            if isinstance(spec, str) and spec:
                i.data.append(DataSource(loc, spec, role))
        for key in ("x_key", "y_key"):
            if isinstance(get(d, key), str):
                setattr(i, key, get(d, key))
        i.y_key_set = isinstance(get(d, "y_key"), str)
        i.x_key_set = isinstance(get(d, "x_key"), str)
        i.preprocess = get(d, "preprocess") is not None
        return i


def raw_problems(data: dict, flags: bool = False, shown_base: Path | None = None) -> list[Problem]:
    """Stage 1 on a config dict that did not validate (paths as in the dict); `flags`: the
    dict was made from `edgepack build` flags; `shown_base`: a config file's folder, which
    messages show paths relative to, as the file has them."""
    return cheap_problems(Inputs.from_dict(data, flags, shown_base), [])


# ---------------------------------------------------------------------------------------
# The checks


def cheap_problems(i: Inputs, profiles: list[TargetProfile]) -> list[Problem]:
    """Every stage-1 problem; the target profiles that load are appended to `profiles`."""
    problems = _model_file_problems(i)
    problems += _target_problems(i, profiles)
    for src in i.data:
        problems += _data_file_problems(src, i)
    return problems


def _model_file_problems(i: Inputs) -> list[Problem]:
    if i.model_kind is None:
        return []
    loc = ("model", i.model_kind)
    out: list[Problem] = []
    path = i.model_value.rpartition(":")[0] if i.model_kind == "torch" else i.model_value
    p = Path(path)
    if not p.exists():
        out.append((loc, f"model file {i.show(path)} does not exist"))
    elif p.is_dir():
        out.append((loc, f"{i.show(path)} is a folder, expected a model file"))
    elif not p.is_file():
        out.append((loc, f"{i.show(path)} is not a regular file (a pipe, socket or device), expected a model file"))
    if i.model_kind in ("torch", "pt2"):
        if importlib.util.find_spec("torch") is None:
            out.append((loc, "this model is a PyTorch source, install the torch extra: pip install 'edgepack[torch]'"))
        if i.input_shape is None and not i.inputs:
            out.append((("model", "input_shape"), ("required for a PyTorch model (the static input shape it is "
                                                  "exported with, e.g. 1,3,224,224)")))
    return out


def _target_problems(i: Inputs, profiles: list[TargetProfile]) -> list[Problem]:
    loc = ("targets",)
    out: list[Problem] = []
    broken: dict[str, ConfigError] = {}
    available = load_targets(i.targets_dirs, broken)
    seen: set[str] = set()
    for spec in i.targets:
        profile = None
        if spec.endswith(".toml"):
            if not Path(spec).is_file():
                out.append((loc, f"target profile file {i.show(spec)} does not exist"))
            else:
                try:
                    profile = load_profile(Path(spec))
                except ConfigError as exc:
                    out.append((loc, str(exc)))
        elif spec in available:
            profile = available[spec]
        elif spec in broken:
            out.append((loc, str(broken[spec])))
        else:
            out.append((loc, unknown_target(spec, available)))
        if profile is None:
            continue
        if profile.name in seen:
            out.append((loc, f"target {profile.name!r} is named twice"))
            continue
        seen.add(profile.name)
        profiles.append(profile)
    method = i.calibration_method
    if method is not None:
        if method not in CALIBRATION_METHODS:
            out.append((("quantization", "calibration_method"), not_one_of(method, CALIBRATION_METHODS)))
    else:
        for p in profiles:
            m = p.quantization.calibration_method
            if m not in CALIBRATION_METHODS and any(k in p.artifacts for k in INT8_KINDS):
                out.append((loc, (f"target {p.name!r}: [quantization] calibration_method: "
                                 f"{not_one_of(m, CALIBRATION_METHODS)}")))
    return out


def entry_point(spec: str) -> str | None:
    """The module or file of a `file.py:function` / `module:function` data source, as data.py reads it."""
    head, sep, _ = spec.rpartition(":")
    if sep and (head.endswith(".py") or (not Path(spec).exists() and "/" not in head and head)):
        return head
    return None


def _data_file_problems(src: DataSource, i: Inputs) -> list[Problem]:
    role, loc = src.role, src.loc
    entry = entry_point(src.spec)
    if entry is not None:
        if entry.endswith(".py") and not Path(entry).is_file():
            return [(loc, f"{role} data entry point file {i.show(entry)} does not exist")]
        return []  # a module entry point is imported when the data loads
    p, spec = Path(src.spec), i.show(src.spec)
    if not p.exists():
        return [(loc, f"{role} data {spec} does not exist")]
    if p.is_dir():
        if not i.preprocess:
            return [(loc, (f"{role} data {spec} is an image folder: declare its preprocessing "
                          "([data.preprocess] size, mean, std, channel_order, layout)"))]
        return []
    if not p.is_file():  # a FIFO would block the reads below
        return [(loc, f"{role} data {spec} is not a regular file (a pipe or device); expected a .npy or .npz file")]
    suffix = p.suffix.lower()
    if suffix == ".npz":
        try:
            keys = _npz_keys(p)
        except (OSError, zipfile.BadZipFile) as exc:
            return [(loc, f"{spec}: not a readable .npz file ({one_line(exc)})")]
        out = []
        for key, name, needed in ((i.x_key, "x_key", i.x_key_set), (i.y_key, "y_key", i.y_key_set)):
            if needed and key not in keys:
                hint = _close(key, keys)
                fix = (f"so store them under {key!r} (a config file can set [data] {name})" if i.flags
                       else f"so set {name} in [data] to their key")
                what = "inputs" if name == "x_key" else "labels"
                out.append((loc, (f"{spec}: no array {key!r} for the {what} "
                                 f"(has: {', '.join(keys) or 'none'}){hint}, {fix}")))
        return out
    if suffix != ".npy":
        return [(loc, f"{role} data {spec}: expected a .npy or .npz file, an image folder, or file.py:function")]
    return []


def _close(word: str, choices: list[str]) -> str:
    hint = did_you_mean(word, choices)
    return f" (did you mean {hint!r}?)" if hint else ""


def _npz_keys(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return [n.removesuffix(".npy") for n in z.namelist()]
