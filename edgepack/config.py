"""The build configuration: one TOML file (or CLI flags) describing a whole release.

Relative paths in a config file are resolved against the file's directory, so a config
can live next to its model and data.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    onnx: Path | None = None
    torch: str | None = Field(None, description="path/to/file.py:factory")
    pt2: Path | None = None
    input_shape: tuple[int, ...] | None = Field(
        None, description="static input shape; required for torch, overrides dynamic ONNX dims"
    )
    opset: int = Field(18, ge=17)
    input_layout: Literal["NCHW", "NHWC", "NC", "other"] = "NCHW"

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("onnx", "torch", "pt2") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of onnx, torch, pt2 must be set (got {given or 'none'})")
        if self.torch is not None and ":" not in self.torch:
            raise ValueError("torch must be 'path/to/file.py:factory'")
        if self.input_shape is not None and any(d <= 0 for d in self.input_shape):
            raise ValueError("input_shape dimensions must be positive")
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
    warmup_runs: int = Field(10, ge=0)
    latency_runs: int = Field(50, ge=1)
    golden_samples: int = Field(5, ge=1)
    host_threads: int | None = Field(None, ge=1, description="override the profile threads")
    emulate: bool = Field(False, description="run targets of another ISA in an emulated device userland")


class GateOverrides(_Strict):
    max_accuracy_drop: float | None = Field(None, ge=0)
    min_sqnr_db: float | None = None
    max_latency_ms: float | None = Field(None, gt=0)
    max_weight_ratio: float | None = Field(None, gt=0)
    max_size_ratio: float | None = Field(None, gt=0)


class QuantOverrides(_Strict):
    calibration_method: str | None = None
    percentile: float | None = Field(None, gt=0, le=100)
    per_channel: bool | None = None
    reduce_range: bool | Literal["auto"] | None = None
    activation_type: Literal["uint8", "int8"] | None = None


class TfliteOverrides(_Strict):
    io_type: Literal["float32", "int8", "uint8"] | None = Field(None, description="full-int8 model I/O type")
    layout: Literal["NHWC", "NCHW"] | None = Field(None, description="TFLite model I/O layout for 4-D tensors")


# Importance criteria by name; edgepack.compress.importance.CRITERIA implements each one
# (kept as plain names here so reading a config never imports torch).
PRUNE_CRITERIA = ("l1", "l2", "bn_scale", "taylor", "random")
PRUNE_GRANULARITIES = ("filter", "fine", "vector", "kernel")


class PruneSection(_Strict):
    """[compress.prune]: remove channels (filter) or zero weights (fine, vector, kernel)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ratio: float = Field(gt=0, lt=1, description="fraction of channels (filter) or weights/vectors/kernels to remove")
    criterion: str = Field("l2", description=f"importance criterion: {' | '.join(PRUNE_CRITERIA)}")
    granularity: Literal["filter", "fine", "vector", "kernel"] = "filter"
    global_pruning: bool = Field(False, alias="global", description="rank all layers together instead of each alone")
    per_layer: dict[str, float] = Field({}, description="module name -> ratio, overriding `ratio` there")
    ignore: list[str] = Field([], description="module names left untouched (with their sub-modules)")
    round_to: int | None = Field(None, ge=1, description="kept widths are rounded to the nearest multiple of this; default: the first target's round_to")
    steps: int = Field(1, ge=1, le=100, description="iterative pruning steps (distillation epochs are spread over them)")
    recalibrate_bn: bool = Field(True, description="re-estimate BatchNorm statistics on calibration data after pruning")
    random_trials: int = Field(3, ge=1, le=20, description="random-importance prunings the criterion is compared with")
    importance_samples: int = Field(256, ge=1, description="calibration samples for gradient-based criteria (taylor)")

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v: str) -> str:
        if v not in PRUNE_CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; expected one of: {', '.join(PRUNE_CRITERIA)}")
        return v

    @field_validator("per_layer")
    @classmethod
    def _ratios_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not 0 <= r < 1:
                raise ValueError(f"ratio for {name!r} is {r}; expected 0 <= ratio < 1")
        return v

    @model_validator(mode="after")
    def _criterion_fits_granularity(self):
        if self.criterion == "bn_scale" and self.granularity != "filter":
            raise ValueError(f"criterion 'bn_scale' scores whole channels; granularity {self.granularity!r} "
                             "needs l1, l2, taylor or random")
        return self


class DistillSection(_Strict):
    """[compress.distill]: the unpruned float model teaches the compressed one."""

    epochs: int = Field(8, ge=1, le=1000)
    lr: float = Field(1e-3, gt=0, le=1)
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1, description="strong mode: weight of the soft loss; 1 - alpha weighs the label loss")
    mode: Literal["weak", "strong"] = Field("weak", description="weak: soft outputs only, no labels; strong: + labels + features")
    feature_weight: float = Field(1.0, ge=0, description="strong mode: weight of intermediate feature matching")
    feature_layers: list[str] = Field([], description="module names whose outputs are matched; default: one per resolution")
    batch_size: int = Field(64, ge=2)
    weight_decay: float = Field(0.0, ge=0)
    data: str | None = Field(None, description="training data (.npy/.npz/folder/file.py:fn); default: the calibration data")
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
    def _distill_needs_a_change(self):
        if self.distill is not None and not self.enabled:
            raise ValueError("distill needs a compression to recover from: add [compress.prune] or [compress.lowrank]")
        return self


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
    compress: CompressSection = CompressSection()

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it becomes a folder name)")
        return v

    @field_validator("compress")
    @classmethod
    def _compress_needs_torch(cls, v: CompressSection, info: ValidationInfo) -> CompressSection:
        model = info.data.get("model")  # validated before `compress` (field order)
        if v.enabled and model is not None and model.torch is None:
            kind = "an ONNX file" if model.onnx is not None else "a .pt2 program (a frozen graph)"
            raise ValueError(f"compression needs a PyTorch factory ([model] torch = 'file.py:factory'); "
                             f"the model is {kind}")
        return v

    def config_hash(self) -> str:
        """sha256 of the canonical JSON form; recorded in the manifest."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make file paths in a config relative to the config's own directory."""

    def fix(value: str) -> str:
        head, sep, func = value.rpartition(":")
        if sep and not head.endswith(".py"):
            return value  # a module entry point "package.module:function"
        path, suffix = (head, f":{func}") if sep else (value, "")
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


def load_config(path: Path | str) -> BuildConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(_resolve_paths(data, path.resolve().parent), source=str(path))


def config_from_dict(data: dict, source: str = "config") -> BuildConfig:
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: field '{loc}': {msg}") from None
