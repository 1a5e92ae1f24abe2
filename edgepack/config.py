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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class GateOverrides(_Strict):
    max_accuracy_drop: float | None = Field(None, ge=0)
    min_sqnr_db: float | None = None
    max_latency_ms: float | None = Field(None, gt=0)
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
    # Compression stages (torch sources only); an ordered list of tables, see README.
    compress: list[dict] = []

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it becomes a folder name)")
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
