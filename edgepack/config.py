"""The build configuration: one TOML file (or CLI flags) describing a whole release.

Relative paths in a config file are resolved against the file's directory, so a config
can live next to its model and data. The config remembers that directory (`base_dir`; the
current directory for flags and dicts): its identity (`config_hash`) and the form the
manifest records (`portable_dump`) write every path relative to it, so the same project
built from two checkouts at different places has the same hash.

Mistakes are reported all at once, in the words the user wrote them in: config-file
problems name the file and the key in TOML words (`edgepack.toml: [tflite] io_type: ...`),
command-line problems name the flag (`--tflite-io: ...`). How problems are worded, and the
names the config accepts, are in `wording.py` (re-exported here). Checks that need files or
other modules (targets exist, data files and keys) are in `checks.py`; the model's inputs
are checked by `preflight.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .safepath import special_file_problem
from .targets import MAX_THREADS, ArtifactKind, too_deep
from .wording import (
    CALIBRATION_METHODS,
    DISTILL_MODES,
    FLAGS,
    PRUNE_CRITERIA,
    PRUNE_GRANULARITIES,
    TFLITE_IO_TYPES,
    TFLITE_LAYOUTS,
    ConfigProblems,
    Problem,
    ProblemWords,
    Style,
    _given,
    as_written,
    did_you_mean,
    not_one_of,
    unknown_name,
)

__all__ = [
    # the schema
    "BuildConfig", "ModelSection", "Preprocess", "DataSection", "VerifySection", "GateOverrides",
    "QuantOverrides", "TfliteOverrides", "PruneSection", "DistillSection", "LowRankSection",
    "CompressSection",
    # reading a config
    "load_config", "config_from_dict",
    # from wording.py, importable from here as before
    "CALIBRATION_METHODS", "PRUNE_CRITERIA", "PRUNE_GRANULARITIES", "DISTILL_MODES", "TFLITE_IO_TYPES",
    "TFLITE_LAYOUTS", "FLAGS", "Style", "Problem", "ConfigProblems", "ProblemWords", "did_you_mean",
    "not_one_of", "unknown_name", "as_written",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _style(info: ValidationInfo | None) -> str:
    return (info.context or {}).get("style", "api") if info is not None else "api"


# ---------------------------------------------------------------------------------------
# The schema


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML has `nan` and `inf`, and a gate of `min_sqnr_db = nan` compares
    # false with everything (a failed build, worded "needs ≥ nan"): every number must be finite.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Upper bounds of counts that have an obvious range: past them a value is a typo (or an
# attack) that would otherwise run for ever, allocate without end or reach the manifest.
MAX_LATENCY_RUNS = 100_000
MAX_WARMUP_RUNS = 10_000
MAX_GOLDEN_SAMPLES = 10_000
MAX_SEARCH_SECONDS = 7 * 24 * 3600.0
# How deep a config's tables and arrays may nest (edgepack's own nest 4 levels at most);
# deeper, the config is refused before anything walks it recursively.
MAX_CONFIG_DEPTH = 64


INPUT_DTYPES = ("float32", "float16", "int64", "int32", "bool")


class InputSection(_Strict):
    """[model.inputs.NAME]: one model input's static shape and dtype."""

    shape: tuple[int, ...] | None = Field(None, description="static shape; fixes the input's dynamic dims")
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] | None = Field(
        None, description="for a PyTorch model: the dtype it is exported with (default float32); "
                          "for ONNX it must match the graph")
    layout: Literal["NCHW", "NHWC", "NCL", "NC", "other"] | None = Field(
        None, description="what the input's axes mean (default: model.input_layout for rank-4 inputs)")

    @field_validator("shape")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(d <= 0 for d in v):
            raise ValueError(f"{list(v)}: dimensions must be positive integers")
        return v


class ModelSection(_Strict):
    onnx: Path | None = None
    torch: str | None = Field(None, description="path/to/file.py:factory")
    pt2: Path | None = None
    input_shape: tuple[int, ...] | None = Field(
        None, description="static input shape of a single-input model; required for torch, overrides dynamic ONNX dims"
    )
    inputs: dict[str, InputSection] | None = Field(
        None, description="per input, in the model's input order: shape, dtype, layout (multi-input models)")
    opset: int = Field(18, ge=17)
    input_layout: Literal["NCHW", "NHWC", "NC", "other"] = "NCHW"
    trust_source: bool = Field(
        False, description="load a .pt2 whose archive holds pickled parts (unpickling runs code; only for files "
                           "you trust); a torch factory (file.py:factory) always runs its code")

    def shape_overrides(self) -> tuple[int, ...] | dict[str, tuple[int, ...]] | None:
        """What fixes the graph's input shapes: one shape (single input) or shapes by input name."""
        if self.inputs is not None:
            return {k: tuple(v.shape) for k, v in self.inputs.items() if v.shape is not None}
        return None if self.input_shape is None else tuple(self.input_shape)

    def declared_inputs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of each input a PyTorch model is exported with."""
        if self.inputs is not None:
            return [(k, tuple(v.shape), v.dtype or "float32") for k, v in self.inputs.items()]
        return [("input", tuple(self.input_shape), "float32")]

    def layout_of(self, name: str, rank: int) -> str:
        """What an input's axes mean: declared per input, else by rank (images take input_layout)."""
        declared = self.inputs.get(name) if self.inputs else None
        if declared is not None and declared.layout:
            return declared.layout
        return {0: "scalar", 1: "N", 2: "NC", 3: "NCL", 4: self.input_layout}.get(rank, "ND")

    @field_validator("torch")
    @classmethod
    def _factory_form(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError(f"{v!r} is not 'path/to/file.py:factory'")
        return v

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError(f"{list(v)}: dimensions must be positive integers")
        return v

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        flags = _style(info) == "flags"
        if self.input_shape is not None and self.inputs is not None:
            raise ValueError("give one --input-shape without a name or NAME=dims per input, not both" if flags
                             else "give input_shape (one input) or [model.inputs.NAME] tables, not both")
        if self.inputs is not None and not self.inputs:
            raise ValueError("[model.inputs] names no input")
        if self.torch is not None or self.pt2 is not None:
            unshaped = [k for k, v in (self.inputs or {}).items() if v.shape is None]
            if unshaped:
                raise ValueError(f"input(s) {', '.join(map(repr, unshaped))} need a shape: a PyTorch model is "
                                 "exported with static shapes" + (" (--input-shape NAME=dims)" if flags else ""))
        given = [k for k in ("onnx", "torch", "pt2") if getattr(self, k) is not None]
        if len(given) != 1:
            if _style(info) == "flags":
                got = ", ".join(f"--{k}" for k in given) or "none"
                raise ValueError(f"give exactly one of --onnx, --torch, --pt2 (got {got})")
            raise ValueError(f"exactly one of onnx, torch, pt2 must be set (got {given or 'none'})")
        return self


class Preprocess(_Strict):
    """How a folder of images becomes model input."""

    size: tuple[int, int] = Field(description="height, width")
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = Field(1 / 255, description="applied to 0..255 pixels before mean/std")
    channel_order: Literal["RGB", "BGR", "L"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"


class DataSection(_Strict):
    calibration: str = Field(description=".npy, .npz, image folder, or file.py:function")
    evaluation: str | None = None
    calibration_samples: int = Field(200, ge=1)
    evaluation_samples: int | None = Field(None, ge=1)
    x_key: str = "x"
    y_key: str = "y"
    preprocess: Preprocess | None = None


class VerifySection(_Strict):
    warmup_runs: int = Field(10, ge=0, le=MAX_WARMUP_RUNS)
    latency_runs: int = Field(50, ge=1, le=MAX_LATENCY_RUNS)
    golden_samples: int = Field(5, ge=1, le=MAX_GOLDEN_SAMPLES)
    host_threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="override the profile threads")
    emulate: bool = Field(False, description="run targets of another ISA in an emulated device userland")
    required_artifacts: list[ArtifactKind] | None = Field(
        None, description="artifacts every target needs (default: each profile's required_artifacts, else all it "
                          "lists); one that cannot be produced fails the build (exit 1) instead of being skipped")


class SearchSection(_Strict):
    """[search]: the accuracy-aware search run when an int8 artifact fails an accuracy or task
    gate (edgepack.search). `max_trials = 0` turns it off."""

    max_trials: int = Field(8, ge=0, le=100, description="candidates tried per failing int8 artifact")
    max_seconds: float = Field(600.0, gt=0, le=MAX_SEARCH_SECONDS,
                               description="wall-clock budget per failing int8 artifact (at most a week)")
    diagnose: bool = Field(True, description="per-node diagnosis of every ONNX int8 graph (manifest and report)")


class GateOverrides(_Strict):
    max_accuracy_drop: float | None = Field(None, ge=0)
    min_sqnr_db: float | None = None
    max_latency_ms: float | None = Field(None, gt=0)
    max_int8_size_ratio: float | None = Field(None, gt=0)
    max_weight_ratio: float | None = Field(None, gt=0)
    max_size_ratio: float | None = Field(None, gt=0)


class QuantOverrides(_Strict):
    # A plain string: the name is checked (with "did you mean") by preflight against
    # CALIBRATION_METHODS, together with every other problem; quantize.resolve_settings
    # checks it again for callers that skip preflight.
    calibration_method: str | None = Field(None, description=" | ".join(CALIBRATION_METHODS))
    percentile: float | None = Field(None, gt=0, le=100)
    per_channel: bool | None = None
    reduce_range: bool | Literal["auto"] | None = None
    activation_type: Literal["uint8", "int8"] | None = None


class TfliteOverrides(_Strict):
    io_type: Literal[TFLITE_IO_TYPES] | None = Field(None, description="full-int8 model I/O type")
    layout: Literal[TFLITE_LAYOUTS] | None = Field(None, description="TFLite model I/O layout for 4-D tensors")


class PruneSection(_Strict):
    """[compress.prune]: remove channels (filter) or zero weights (fine, vector, kernel)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ratio: float = Field(gt=0, lt=1, description="fraction of channels (filter) or weights/vectors/kernels to remove")
    criterion: str = Field("l2", description=f"importance criterion: {' | '.join(PRUNE_CRITERIA)}")
    granularity: Literal[PRUNE_GRANULARITIES] = "filter"
    global_pruning: bool = Field(False, alias="global", description="rank all layers together instead of each alone")
    per_layer: dict[str, float] = Field({}, description="module name -> ratio, overriding `ratio` there")
    ignore: list[str] = Field([], description="module names left untouched (with their sub-modules)")
    round_to: int | None = Field(None, ge=1, le=1024,
                                 description="kept widths are rounded to the nearest multiple of this; "
                                             "default: the first target's round_to")
    steps: int = Field(1, ge=1, le=100,
                       description="iterative pruning steps (distillation epochs are spread over them)")
    recalibrate_bn: bool = Field(True, description="re-estimate BatchNorm statistics on calibration data after pruning")
    random_trials: int = Field(3, ge=1, le=20, description="random-importance prunings the criterion is compared with")
    importance_samples: int = Field(256, ge=1, description="calibration samples for gradient-based criteria (taylor)")

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v: str) -> str:
        if v not in PRUNE_CRITERIA:
            raise ValueError(unknown_name("criterion", v, PRUNE_CRITERIA))
        return v

    @field_validator("per_layer")
    @classmethod
    def _ratios_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not 0 <= r < 1:
                raise ValueError(f"ratio for {name!r} is {r}, expected 0 <= ratio < 1")
        return v

    @model_validator(mode="after")
    def _criterion_fits_granularity(self):
        if self.criterion == "bn_scale" and self.granularity != "filter":
            raise ValueError(f"criterion 'bn_scale' scores whole channels, so granularity {self.granularity!r} "
                             "needs l1, l2, taylor or random")
        return self


class DistillSection(_Strict):
    """[compress.distill]: the unpruned float model teaches the compressed one."""

    epochs: int = Field(8, ge=1, le=1000)
    lr: float = Field(1e-3, gt=0, le=1)
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1,
                         description="strong mode: weight of the soft loss; 1 - alpha weighs the label loss")
    mode: Literal[DISTILL_MODES] = Field("weak",
                                         description="weak: soft outputs only, no labels; strong: + labels + features")
    feature_weight: float = Field(1.0, ge=0, description="strong mode: weight of intermediate feature matching")
    feature_layers: list[str] = Field([], description="module names whose outputs are matched; "
                                                      "default: one per resolution")
    batch_size: int = Field(64, ge=2)
    weight_decay: float = Field(0.0, ge=0)
    data: str | None = Field(None, description="training data (.npy/.npz/folder/file.py:fn); "
                                               "default: the calibration data")
    samples: int | None = Field(None, ge=2, description="use at most this many training samples")


class LowRankSection(_Strict):
    """[compress.lowrank]: Linear and 1x1 conv layers as two thinner layers (truncated SVD)."""

    energy: float | None = Field(None, gt=0, le=1, description="keep the smallest rank holding this share of sum(s^2)")
    rank: int | None = Field(None, ge=1)
    ignore: list[str] = []

    @model_validator(mode="after")
    def _energy_or_rank(self):
        if (self.energy is None) == (self.rank is None):
            raise ValueError("set exactly one of energy (0 < energy <= 1) or rank")
        return self


class CompressSection(_Strict):
    """[compress]: applied to a PyTorch model before export, in the order prune, lowrank, distill."""

    prune: PruneSection | None = None
    lowrank: LowRankSection | None = None
    distill: DistillSection | None = None
    seed: int = 0
    # Training small batches with 2 OpenMP threads on a 2-core host that is busy with anything
    # else was measured 50-100x slower than with 1 thread (digits CNN: 0.6 s vs 34-60 s).
    threads: int = Field(1, ge=1, le=256, description="torch threads while compressing")

    @property
    def enabled(self) -> bool:
        return self.prune is not None or self.lowrank is not None

    @model_validator(mode="after")
    def _distill_needs_a_change(self, info: ValidationInfo):
        if self.distill is not None and not self.enabled:
            if _style(info) == "flags":
                raise ValueError("distillation needs a compression to recover from: add --prune or --lowrank-energy")
            raise ValueError("distill needs a compression to recover from: add [compress.prune] or [compress.lowrank]")
        return self


class TaskSection(_Strict):
    """[task]: what the model is for, so artifacts are judged on it (edgepack.verification.tasks).

    Either a built-in `name`, or `metric = "file.py:function"`: a user's metric function
    (`name` omitted or "custom"; see `tasks.Custom` for what it is called with and must
    return). Its path is relative to the config file's folder and is kept as written, so the
    manifest records no build-host path; `build(base_dir)` resolves and imports it, which
    runs that file's code, by design, like `[model] torch`. A custom metric has no default
    gates: `gates` names any metric it returns, in the direction it returns with it.
    """

    name: Literal["classification", "detection", "segmentation", "embedding", "sequence", "regression",
                  "custom"] | None = None
    metric: str | None = Field(None, description='a user metric function, "path/to/file.py:function" (relative '
                                                 "to the config's folder); importing the file runs its code")
    options: dict[str, Any] = Field({}, description="the task's options, e.g. detection layout and thresholds")
    gates: dict[str, float] = Field({}, description="metric -> threshold, overriding the task's default gates "
                                                    "(a custom metric: any metric it returns)")

    @field_validator("options")
    @classmethod
    def _finite_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = _non_finite(v)
        if bad:
            raise ValueError(f"option {bad[0]!r} is {bad[1]}; expected a finite number")
        return v

    @model_validator(mode="after")
    def _task_builds(self):
        from .verification.tasks import make_task, split_entry_point  # numpy only

        if self.metric is not None or self.name == "custom":
            if self.metric is None:
                raise ValueError('name "custom" needs metric = "path/to/file.py:function"')
            if self.name not in (None, "custom"):
                raise ValueError(f"metric = {self.metric!r} is a custom metric and name = {self.name!r} a "
                                 "built-in task; give one of them")
            if split_entry_point(self.metric) is None:
                raise ValueError(f"metric = {self.metric!r} is not 'path/to/file.py:function'")
            if self.options:
                raise ValueError(f"a custom metric takes no options (got {', '.join(map(repr, self.options))}); "
                                 f"{self.metric} is called with the outputs and labels only")
            self.name = "custom"
            return self  # metric names are known once it runs: any gate name is accepted
        if self.name is None:
            raise ValueError('give name (classification | detection | segmentation | embedding | sequence | '
                             'regression) or metric = "path/to/file.py:function"')
        try:
            defaults = {g["metric"] for g in make_task(self.name, self.options).default_gates()}
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        unknown = sorted(set(self.gates) - defaults)
        if unknown:
            raise ValueError(f"task {self.name!r} has no default gate on {', '.join(map(repr, unknown))}; "
                             f"its gated metrics: {', '.join(sorted(defaults))}")
        return self

    def metric_path(self, base_dir: Path | str) -> str:
        """The custom metric as an absolute `path/to/file.py:function`, its file resolved
        against `base_dir` (the config's folder: `BuildConfig.base_dir`)."""
        file_part, _, func = (self.metric or "").rpartition(":")
        p = Path(file_part).expanduser()
        return f"{p if p.is_absolute() else Path(base_dir) / p}:{func}"

    def build(self, base_dir: Path | str, words: ProblemWords | None = None):
        """The task to measure with (edgepack.verification.tasks.Task). A custom metric's file
        is resolved against `base_dir` and imported, which runs its code; a file or function
        that is missing is a ConfigError, worded by `words` (`BuildConfig.words`) when given."""
        from .verification.tasks import make_task

        if self.name != "custom":
            return make_task(self.name, self.options)
        try:
            return make_task("custom", {"metric": self.metric_path(base_dir)})
        except ConfigError as exc:
            if words is None:
                raise
            raise words.error([(("task", "metric"), str(exc))]) from None

    def spec(self, portable=None) -> dict:
        """The manifest's `model.task`: name and options; a custom metric as `options.metric`,
        written by `portable` (`BuildConfig.portable_path`). Data only: the device runner
        never runs it (`make_task(..., allow_custom=False)`)."""
        if self.name != "custom":
            return {"name": self.name, "options": dict(self.options)}
        return {"name": "custom", "options": {"metric": portable(self.metric) if portable else self.metric}}

    def task_gates(self, task=None) -> list[dict]:
        """The task's gates with this section's thresholds: a built-in task's default gates,
        or a custom metric's `gates`, each in the direction its function returned; `task` is
        then the task `build` made, after its `prepare` on the float outputs."""
        from .verification.tasks import make_task

        if task is None:
            if self.name == "custom" and self.gates:
                raise ValueError("a custom metric's gates take their direction from its function: "
                                 "pass the task built by build() and prepared on the float outputs")
            task = make_task(self.name, self.options) if self.name != "custom" else None
        return task.gates(self.gates) if task is not None else []


class BuildConfig(_Strict):
    name: str
    version: str = "0.1.0"
    out: Path = Path("dist")
    model: ModelSection
    data: DataSection
    targets: list[str] = Field(min_length=1)
    targets_dirs: list[Path] = []
    quantization: QuantOverrides = QuantOverrides()
    tflite: TfliteOverrides = TfliteOverrides()
    gates: GateOverrides = GateOverrides()
    verify: VerifySection = VerifySection()
    search: SearchSection = SearchSection()
    compress: CompressSection = CompressSection()
    task: TaskSection | None = None

    # Where relative paths were resolved against, and how problems are worded (set by
    # load_config / config_from_dict; a BuildConfig made directly uses the current folder).
    _base_dir: Path | None = PrivateAttr(None)
    _words: ProblemWords | None = PrivateAttr(None)
    _preflighted: Any = PrivateAttr(None)  # preflight's record of what it checked

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v) or len(v) > 100:
            raise ValueError(f"{v!r} must be letters, digits, '.', '_' or '-', at most 100 characters "
                             "(it becomes a folder name)")
        return v

    @field_validator("targets_dirs")
    @classmethod
    def _existing_folders(cls, v: list[Path], info: ValidationInfo) -> list[Path]:
        shown = (info.context or {}).get("shown_base")
        for p in v:
            if not p.is_dir():
                what = "does not exist" if not p.exists() else "is not a folder"
                raise ValueError(f"{as_written(str(p), shown)} {what}; expected a folder of target profile "
                                 "(.toml) files")
        return v

    @field_validator("compress")
    @classmethod
    def _compress_needs_torch(cls, v: CompressSection, info: ValidationInfo) -> CompressSection:
        model = info.data.get("model")  # validated before `compress` (field order)
        if v.enabled and model is not None and model.torch is None:
            kind = "an ONNX file" if model.onnx is not None else "a .pt2 program (a frozen graph)"
            where = "--torch file.py:factory" if _style(info) == "flags" else "[model] torch = 'file.py:factory'"
            raise ValueError(f"compression needs a PyTorch factory ({where}), but the model is {kind}")
        if v.enabled and model is not None and model.inputs is not None:
            declared = model.declared_inputs()
            if len(declared) != 1 or declared[0][2] not in ("float32", "float16"):
                raise ValueError("compression (pruning, low-rank, distillation) supports models with one float "
                                 f"input; this model has {', '.join(f'{n} {d}' for n, _, d in declared)}")
        return v

    def model_post_init(self, context: Any) -> None:
        if self._base_dir is None:
            self._base_dir = Path.cwd()

    @property
    def base_dir(self) -> Path:
        """The folder relative paths were resolved against: the config file's folder, or the
        current folder when the config came from flags or a dict."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    @property
    def words(self) -> ProblemWords:
        """How problems with this config are worded (file and TOML keys, or flags)."""
        return self._words if self._words is not None else ProblemWords("config", "api", model=BuildConfig)

    def portable_path(self, value: str | os.PathLike) -> str:
        """A path (or `file.py:function` entry point) as recorded, in posix form: relative to
        `base_dir` when it lies inside it or was written relative to it (`../data/x.npz` stays
        so), otherwise as written (an absolute path the user gave); module entry points as given."""
        return _portable(str(value), self.base_dir)

    def portable_dump(self) -> dict:
        """The config as a manifest records it: `model_dump(mode="json")` with every path
        relative to `base_dir` (see `portable_path`), and without `out`, which says where the
        bundle goes, not what it is. No absolute path of the build machine is in it."""
        d = self.model_dump(mode="json")
        del d["out"]
        m = d["model"]
        for k in ("onnx", "torch", "pt2"):
            if m.get(k) is not None:
                m[k] = self.portable_path(m[k])
        for k in ("calibration", "evaluation"):
            if d["data"].get(k) is not None:
                d["data"][k] = self.portable_path(d["data"][k])
        distill = d["compress"].get("distill")
        if distill and distill.get("data") is not None:
            distill["data"] = self.portable_path(distill["data"])
        if d.get("task") and d["task"].get("metric") is not None:
            d["task"]["metric"] = self.portable_path(d["task"]["metric"])
        d["targets"] = [self.portable_path(t) if t.endswith(".toml") else t for t in d["targets"]]
        d["targets_dirs"] = [self.portable_path(p) for p in d["targets_dirs"]]
        return d

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of `portable_dump()`: the same for the same project
        wherever it is checked out, and whatever `out` is."""
        blob = json.dumps(self.portable_dump(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _non_finite(value: Any, key: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN or infinity in nested options, else None."""
    stack = [(key, value)]
    while stack:
        k, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return k, v
        if isinstance(v, dict):
            stack += [(f"{k}.{kk}" if k else str(kk), vv) for kk, vv in v.items()]
        elif isinstance(v, (list, tuple)):
            stack += [(f"{k}[{i}]", vv) for i, vv in enumerate(v)]
    return None


# ---------------------------------------------------------------------------------------
# Paths


def _entry_split(value: str) -> tuple[str, str] | None:
    """(path, ":function") for a path or `file.py:function`; None for `module:function`."""
    head, sep, func = value.rpartition(":")
    if sep and not head.endswith(".py"):
        return None
    return (head, f":{func}") if sep else (value, "")


def _portable(value: str, base: Path) -> str:
    """`value` as written relative to `base` (see `BuildConfig.portable_path`)."""
    split = _entry_split(value)
    if split is None:
        return value
    path, suffix = split
    p = Path(as_written(path, base)).expanduser()  # undo _resolve_paths: "../data/x.npz" stays so
    if p.is_absolute():
        for where, folder in ((os.path.normpath(p), os.path.normpath(base)),
                              (os.path.realpath(p), os.path.realpath(base))):
            try:
                rel = os.path.relpath(where, folder)
            except ValueError:  # another drive (Windows)
                continue
            if rel != ".." and not rel.startswith(".." + os.sep):
                return PurePath(rel).as_posix() + suffix
    return PurePath(os.path.normpath(p)).as_posix() + suffix


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make file paths in a config relative to the config's own directory."""

    def fix(value: str) -> str:
        split = _entry_split(value)
        if split is None:
            return value  # a module entry point "package.module:function"
        path, suffix = split
        p = Path(path).expanduser()
        return f"{p if p.is_absolute() else base / p}{suffix}"

    model = data.get("model")
    if isinstance(model, dict):
        for k in ("onnx", "pt2", "torch"):
            if isinstance(model.get(k), str):
                model[k] = fix(model[k])
    d = data.get("data")
    if isinstance(d, dict):
        for k in ("calibration", "evaluation"):
            if isinstance(d.get(k), str):
                d[k] = fix(d[k])
    distill = data.get("compress", {}).get("distill") if isinstance(data.get("compress"), dict) else None
    if isinstance(distill, dict) and isinstance(distill.get("data"), str):
        distill["data"] = fix(distill["data"])
    if isinstance(data.get("out"), str):
        data["out"] = fix(data["out"])
    if isinstance(data.get("targets"), list):  # profile files, not names
        data["targets"] = [fix(t) if isinstance(t, str) and t.endswith(".toml") else t for t in data["targets"]]
    if isinstance(data.get("targets_dirs"), list):
        data["targets_dirs"] = [fix(x) if isinstance(x, str) else x for x in data["targets_dirs"]]
    return data


# ---------------------------------------------------------------------------------------
# Loading


def load_config(path: Path | str) -> BuildConfig:
    path = Path(path)
    why = special_file_problem(path)
    if why:
        raise ConfigError(f"{path}: {why}; expected a TOML config such as edgepack.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected a TOML config such as edgepack.toml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        data = None
    if data is None or too_deep(data, MAX_CONFIG_DEPTH):
        raise ConfigError(f"{path}: tables or arrays nest too deeply to be a config (more than {MAX_CONFIG_DEPTH} "
                          "levels)") from None
    base = path.resolve().parent
    return config_from_dict(_resolve_paths(data, base), source=str(path), style="file", base_dir=base)


def config_from_dict(data: dict, source: str = "config", *, style: Style | None = None,
                     base_dir: Path | str | None = None, problems: Iterable[Problem] = ()) -> BuildConfig:
    """Validate a config dict; raise one `ConfigError` naming every problem.

    `style` is how problems are worded: "file" (TOML words, `source` is the file), "flags"
    (`edgepack build` flags; the default when `source == "command line"`) or "api" (dotted
    field names; the default otherwise). `base_dir` is what relative paths are relative to
    (default: the current folder). `problems` are ones the caller found already (e.g. a flag
    that did not parse); they are reported first, with the rest.

    When the config is refused, the cheap checks of `preflight` that need no valid config
    (targets exist, data files and keys exist, ...) run too, so one message says everything.
    """
    style = style or ("flags" if source == "command line" else "api")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    words = ProblemWords(None if style == "flags" else source, style, _given(data), model=BuildConfig)
    extra = list(problems)
    try:
        cfg = BuildConfig.model_validate(data, context={"style": style,
                                                        "shown_base": base if style == "file" else None})
    except ValidationError as exc:
        found = words.from_validation(exc)
    else:
        cfg._base_dir, cfg._words = base, words
        if not extra:
            return cfg
        found = []
    from .checks import raw_problems  # lazily: checks imports targets, which a valid config never needs

    found += raw_problems(data, flags=style == "flags", shown_base=base if style == "file" else None)
    shadowed = {loc for loc, _ in extra}
    raise words.error(extra + [(loc, m) for loc, m in found if loc not in shadowed])
