"""How problems with a config (or a target profile) are worded, and the names users can mistype.

Needs no config: `did_you_mean` / `not_one_of` / `unknown_name` word a mistyped name; the
`*_METHODS`-style tuples and `FLAGS` are the names the config accepts and the `edgepack build`
flag that sets each field; `ProblemWords` turns a location in a pydantic model (a
`BuildConfig`, a `TargetProfile`) into the user's words: a flag, a `[section] key`, or a
dotted field; `ConfigProblems` is every problem found, in one line; `as_written` shows a
path the way the config file has it.

Imports none of config, preflight or targets, so each of them can import it.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

# Names the config accepts, kept as plain tuples so reading a config imports nothing heavy.
# edgepack.quantize.CALIBRATORS implements each calibration method (a test keeps them equal).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Importance criteria by name; edgepack.compress.importance.CRITERIA implements each one.
PRUNE_CRITERIA = ("l1", "l2", "bn_scale", "taylor", "random")
PRUNE_GRANULARITIES = ("filter", "fine", "vector", "kernel")
DISTILL_MODES = ("weak", "strong")
TFLITE_IO_TYPES = ("float32", "int8", "uint8")
TFLITE_LAYOUTS = ("NHWC", "NCHW")

# The `edgepack build` flag that sets each config field; problems with a config made from
# flags name these (cli.py defines the flags; a test keeps the two in step).
FLAGS: dict[tuple[str, ...], str] = {
    ("name",): "--name",
    ("version",): "--version",
    ("out",): "--out",
    ("model",): "--onnx/--torch/--pt2",
    ("model", "onnx"): "--onnx",
    ("model", "torch"): "--torch",
    ("model", "pt2"): "--pt2",
    ("model", "input_shape"): "--input-shape",
    ("model", "inputs"): "--input-shape/--input-dtype",
    ("model", "input_dtype"): "--input-dtype",
    ("data", "calibration"): "--calib",
    ("data", "evaluation"): "--eval",
    ("data", "calibration_samples"): "--calibration-samples",
    ("targets",): "--targets",
    ("quantization", "calibration_method"): "--calibration-method",
    ("verify", "latency_runs"): "--latency-runs",
    ("task",): "--task",
    ("task", "name"): "--task",
    ("task", "options"): "--task-option",
    ("verify", "emulate"): "--emulate",
    ("tflite", "io_type"): "--tflite-io",
    ("tflite", "layout"): "--tflite-layout",
    ("compress", "prune", "ratio"): "--prune",
    ("compress", "prune", "criterion"): "--prune-criterion",
    ("compress", "prune", "granularity"): "--prune-granularity",
    ("compress", "distill", "epochs"): "--distill-epochs",
    ("compress", "distill", "mode"): "--distill-mode",
    ("compress", "distill", "data"): "--distill-data",
    ("compress", "lowrank", "energy"): "--lowrank-energy",
}

Style = Literal["file", "flags", "api"]


# ---------------------------------------------------------------------------------------
# "Did you mean": one wording for every name a user can mistype


def did_you_mean(word: Any, choices: Iterable[str]) -> str | None:
    """The closest known name to `word`, if one is close enough."""
    by_lower = {str(c).lower(): c for c in choices}
    hits = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hits[0]] if hits else None


def not_one_of(value: Any, choices: Iterable[str]) -> str:
    """`'minmx' is not one of minmax, percentile, entropy (did you mean 'minmax'?)`"""
    choices = list(choices)
    hint = did_you_mean(value, choices)
    return f"{value!r} is not one of {', '.join(map(str, choices))}" + (f" (did you mean {hint!r}?)" if hint else "")


def unknown_name(what: str, value: Any, choices: Iterable[str], alternative: str = "") -> str:
    """`unknown target 'rpi44' (did you mean 'rpi4'?)`, or the known names when none is close."""
    choices = sorted(choices)
    hint = did_you_mean(value, choices)
    if hint:
        return f"unknown {what} {value!r} (did you mean {hint!r}?)"
    known = ", ".join(choices) or "none"
    return f"unknown {what} {value!r} (expected one of: {known}{', ' + alternative if alternative else ''})"


def as_written(value: str, base: Path | None) -> str:
    """A path config.py's `_resolve_paths` made absolute, as the config file had it (relative to `base`)."""
    if base is not None:
        prefix = f"{base}{os.sep}"
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


# ---------------------------------------------------------------------------------------
# Problems: where (a flag, a TOML key, or a dotted field) and what


Problem = tuple[tuple, str]  # (location in the config, e.g. ("tflite", "io_type"), message)


class ConfigProblems(ConfigError):
    """Every problem found, in one line: `SOURCE: N problems: WHERE: WHAT; WHERE: WHAT`."""

    def __init__(self, source: str | None, problems: list[str]):
        self.source, self.problems = source, list(problems)
        body = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
        super().__init__(f"{source}: {body}" if source else body)


@dataclass
class _Place:
    sections: list[str]     # TOML tables, e.g. ["compress", "prune"]
    key: str | None         # the key in the last table (None: the table itself)
    suffix: str             # "[2]" for list items, ".name" for dict entries
    annotation: Any         # the field's type (or the table's model) at this place
    parent: type[BaseModel]  # the model whose field `key` is (or would be)
    loc: tuple              # the location without union-member tags


def _unwrap(ann: Any) -> Any:
    """The type without Annotated[...] and without `| None`."""
    if get_origin(ann) is Annotated:
        return _unwrap(get_args(ann)[0])
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return ann


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _field(model: type[BaseModel], name: str):
    for fname, f in model.model_fields.items():
        if name in (fname, f.alias):
            return f.alias or fname, f
    return None


def _place(model: type[BaseModel], loc: tuple) -> _Place:
    """Walk a pydantic error location through the schema."""
    sections: list[str] = []
    for i, part in enumerate(loc):
        if not isinstance(part, str):
            break
        hit = _field(model, part)
        if hit is None:  # a key the schema does not have
            return _Place(sections, part, "", None, model, tuple(loc[: i + 1]))
        name, f = hit
        ann = _unwrap(f.annotation)
        if _is_model(ann):
            sections.append(name)
            model = ann
            continue
        suffix, j = "", i + 1
        while j < len(loc):
            part, origin = loc[j], get_origin(ann)
            if isinstance(part, int) and origin in (list, tuple):
                args = get_args(ann)
                if origin is list or (len(args) == 2 and args[1] is Ellipsis):
                    ann = _unwrap(args[0])
                else:
                    ann = _unwrap(args[part]) if part < len(args) else Any
                suffix += f"[{part}]"
            elif isinstance(part, str) and origin is dict:
                ann = _unwrap(get_args(ann)[1])
                suffix += f".{part}"
            else:
                break  # a union member's tag, e.g. "bool" or "literal['auto']"
            j += 1
        return _Place(sections, name, suffix, ann, model, tuple(loc[:j]))
    return _Place(sections, None, "", model, model, tuple(p for p in loc if isinstance(p, str)))


def _literal_values(ann: Any) -> list[str]:
    if get_origin(ann) is Literal:
        return [str(a) for a in get_args(ann)]
    if get_origin(ann) in (Union, types.UnionType):
        return [v for a in get_args(ann) for v in _literal_values(a)]
    return []


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


class ProblemWords:
    """Words problems with one config are reported in.

    style "file": `SOURCE: [section] key: message` (TOML words; SOURCE is the file);
    style "flags": `--flag: message` (the config was made from `edgepack build` flags);
    style "api": `SOURCE: field 'section.key': message` (a dict given to the Python API).
    `model` is the schema locations are read in (config.py passes `BuildConfig`, targets.py
    `TargetProfile`); `given` are the locations the user set (see `_given`).
    """

    def __init__(self, source: str | None, style: Style, given: Iterable[tuple] = (), *,
                 model: type[BaseModel]):
        self.source, self.style, self.given = source, style, set(given)
        self.model = model

    def where(self, loc: tuple) -> str:
        if not loc:
            return ""
        place = _place(self.model, tuple(loc))
        if self.style == "flags":
            flag = self._flag(place.loc)
            if flag:
                return flag
        if self.style == "api":
            return f"field '{'.'.join(str(p) for p in place.loc)}'"
        table = f"[{'.'.join(place.sections)}]" if place.sections else ""
        key = f"{place.key}{place.suffix}" if place.key is not None else ""
        return " ".join(p for p in (table, key) if p)

    def _flag(self, loc: tuple) -> str | None:
        if not loc:
            return None
        for n in range(len(loc), 0, -1):
            if loc[:n] in FLAGS:
                return FLAGS[loc[:n]]
        under = [(k, f) for k, f in FLAGS.items() if k[: len(loc)] == loc]
        present = [f for k, f in under if k in self.given]
        return "/".join(dict.fromkeys(present or [f for _, f in under])) or None

    def line(self, loc: tuple, message: str) -> str:
        where = self.where(loc)
        return f"{where}: {message}" if where else message

    def error(self, problems: Iterable[Problem]) -> ConfigProblems:
        lines = list(dict.fromkeys(self.line(loc, msg) for loc, msg in problems))
        return ConfigProblems(self.source, lines)

    def from_validation(self, exc: ValidationError) -> list[Problem]:
        """Every pydantic error as a (location, message) problem; errors of one union field
        (e.g. `true | false | "auto"`) become one problem."""
        grouped: dict[tuple, list[tuple[dict, _Place]]] = {}
        for err in exc.errors():
            place = _place(self.model, tuple(err["loc"]))
            grouped.setdefault(place.loc, []).append((err, place))
        out = []
        for loc, errs in grouped.items():
            if len(errs) == 1:
                out.append((loc, self._message(*errs[0])))
            else:  # one per member of a union type, e.g. `bool | Literal["auto"]`
                expected = " or ".join(dict.fromkeys(_expected(err) for err, _ in errs))
                got = f", got {errs[0][0]['input']!r}" if "input" in errs[0][0] else ""
                out.append((loc, f"expected {expected}{got}"))
        return out

    def _message(self, err: dict, place: _Place) -> str:
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            known = _known_keys(place.parent)
            hint = did_you_mean(place.key, known)
            what = "Extra inputs are not permitted" if self.style == "api" else "unknown key"
            return what + (f" (did you mean {hint!r}?)" if hint else f" (expected one of: {', '.join(known)})")
        if kind == "literal_error" and "input" in err:
            values = _literal_values(place.annotation)
            if values:
                return not_one_of(err["input"], values)
        if kind == "missing" and self.style != "api":
            return "required, but not given" if self.style == "flags" else "missing (required)"
        return msg


def _expected(err: dict) -> str:
    """What one member of a union type accepts, in a few words."""
    if err["type"].startswith("bool"):
        return "true or false"
    if err["type"] == "literal_error":
        return err.get("ctx", {}).get("expected", "").replace("'", '"') or err["msg"]
    return err["msg"].removeprefix("Input should be ").split(",")[0]


def _given(data: Any, prefix: tuple = ()) -> set[tuple]:
    """Locations of the values a dict sets (not None)."""
    out: set[tuple] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, dict):
                out |= _given(v, prefix + (k,))
            elif v is not None:
                out.add(prefix + (k,))
    return out

