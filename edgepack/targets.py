"""Target profiles: what to emit for a device, with which settings, threads and gates.

Profiles are data (`targets/<name>.toml`); adding a device is adding a file. Code reads a
profile's fields and never branches on its name.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .manifest.jsonio import too_deep
from .safepath import component_problem
from .wording import ProblemWords, unknown_name

ArtifactKind = Literal[
    "ort-float",
    "ort-int8",
    "tflite-float32",
    "tflite-float16",
    "tflite-dynamic-int8",
    "tflite-int8",
    # not in the shipped profiles: a profile (or a profile file of the user's) lists them
    "ort-float16",
    "ort-dynamic-int8",
    "ort-int16",
    "ort-int8-pot",
    "ort-binary",
    "ort-ternary",
    "tflite-int16x8",
]


class _Strict(BaseModel):
    # every number finite: TOML's `nan` and `inf` are refused (a gate of nan passes or fails nothing)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Bounds of counts with an obvious range: past them a value is a typo that would reach the
# runtime (threads) and the manifest.
MAX_THREADS = 1024
MAX_CORES = 1024
MAX_ROUND_TO = 1024
# How deep a profile's tables and arrays may nest (a shipped profile: 2 levels).
MAX_PROFILE_DEPTH = 64


class CpuSpec(_Strict):
    arch: Literal["aarch64", "x86_64", "armv7l"]
    model: str = Field(description="CPU model, e.g. cortex-a72; also the qemu -cpu name for ARM")
    cores: int = Field(ge=1, le=MAX_CORES)
    # ISA extensions the device is guaranteed to have, in /proc/cpuinfo spelling
    # (e.g. "avx2", "avx512_vnni", "avx_vnni", "asimddp", "i8mm").
    features: tuple[str, ...] = ()


class QuantizationSettings(_Strict):
    format: Literal["qdq"] = "qdq"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    calibration_method: str = "minmax"
    percentile: float = Field(99.999, gt=0, le=100)
    # "auto": 7-bit weights only where the device's x86 int8 kernels can saturate
    # (x86-64 without VNNI, as documented by ONNX Runtime); ARM never pays for it.
    reduce_range: bool | Literal["auto"] = "auto"
    symmetric_activations: bool = False


class OrtSettings(_Strict):
    optimization_style: Literal["fixed", "runtime"] = "fixed"
    target_platform: Literal["arm", "amd64"]
    # Exclude layout transforms that depend on the build host's SIMD width (see emit/ort.py).
    portable_layout: bool = True
    # amd64: the ONNX Runtime NCHWc block of *every* device of the profile (8: AVX2 without
    # AVX-512F, 16: AVX-512F). Set, the .ort files keep the NCHWc layout (a float CNN then runs
    # as fast as the plain ONNX file) and run only on CPUs of that block; the build host must
    # have the same block (checked). Unset, `portable_layout` decides.
    nchwc_block: Literal[8, 16] | None = None
    # amd64, for devices running a full ONNX Runtime build: the float artifact is an ONNX file
    # optimised up to the extended level (no layout), which the device's runtime lays out for
    # its own NCHWc block at load (ONNX Runtime never does that for an .ort file). Portable
    # and as fast as the plain file; a minimal (mobile) build cannot read it.
    layout_at_load: bool = False


class TfliteSettings(_Strict):
    io_type: Literal["float32", "int8", "uint8"] = "float32"
    layout: Literal["NHWC", "NCHW"] = "NHWC"


class Gates(_Strict):
    max_accuracy_drop: float | None = Field(1.0, ge=0, description="top-1 points vs float")
    min_sqnr_db: float | None = Field(30.0, description="used when eval data has no labels")
    max_latency_ms: float | None = Field(None, gt=0, description="p50 latency")
    max_int8_size_ratio: float | None = Field(
        None, gt=0, description="8-bit artifacts' weight bytes vs the theoretical int8 size (1 B/weight + scales)")
    max_weight_ratio: float | None = Field(None, gt=0, description="8-bit artifacts' weight bytes vs float")
    max_size_ratio: float | None = Field(None, gt=0, description="8-bit artifacts' file bytes vs float")


class DeviceRuntime(_Strict):
    """Versions the device runs; used by device-exact verification."""

    python: str = "3.11"
    numpy: str | None = None
    onnxruntime: str | None = None
    ai_edge_litert: str | None = None
    tflite_runtime: str | None = None


class TargetProfile(_Strict):
    name: str
    description: str = ""
    cpu: CpuSpec
    threads: int = Field(ge=1, le=MAX_THREADS)
    artifacts: tuple[ArtifactKind, ...] = Field(min_length=1)
    quantization: QuantizationSettings = QuantizationSettings()
    ort: OrtSettings
    tflite: TfliteSettings = TfliteSettings()
    gates: Gates = Gates()
    device_runtime: DeviceRuntime = DeviceRuntime()
    round_to: int = Field(8, ge=1, le=MAX_ROUND_TO, description="SIMD-friendly channel multiple for pruning")
    required_artifacts: tuple[ArtifactKind, ...] | None = Field(
        None, description="artifacts the release cannot do without (default: every listed artifact); one that "
                          "cannot be produced then fails the build (exit 1, bundle written and marked failed)")

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, v: str) -> str:
        why = component_problem(v)
        if why:  # the target's artifacts go in <bundle>/<name>/
            raise ValueError(f"{v!r} {why}; it names the target's folder in the bundle, so it must be one "
                             "file name (letters, digits, '.', '_', '-')")
        return v

    @property
    def has_int8_dot_product(self) -> bool:
        """Whether the device's int8 GEMM kernels can accumulate without int16 saturation."""
        if self.cpu.arch != "x86_64":
            return True
        return any("vnni" in f for f in self.cpu.features)

    def resolved_reduce_range(self) -> bool:
        setting = self.quantization.reduce_range
        if setting == "auto":
            return not self.has_int8_dot_product
        return bool(setting)

    def matches_host(self) -> bool:
        """True when host-measured numbers come from the same ISA family as the device."""
        return self.cpu.arch == host_arch()


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def builtin_targets_dir() -> Path:
    """The profiles shipped with edgepack (in the wheel, or the source checkout)."""
    packaged = Path(__file__).with_name("_targets")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "targets"


def _search_dirs(extra: list[Path] | None) -> list[Path]:
    dirs = list(extra or [])
    env = os.environ.get("EDGEPACK_TARGETS_PATH")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(builtin_targets_dir())
    return dirs


def load_profile(path: Path) -> TargetProfile:
    """One profile file; every problem in it is named at once, in TOML words."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read target profile ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 TOML file (expected a target profile)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        data = None
    if data is None or too_deep(data, MAX_PROFILE_DEPTH):
        raise ConfigError(f"{path}: tables or arrays nest too deeply to be a target profile (more than "
                          f"{MAX_PROFILE_DEPTH} levels)")
    data.setdefault("name", path.stem)
    try:
        return TargetProfile.model_validate(data)
    except ValidationError as exc:
        words = ProblemWords(str(path), "file", model=TargetProfile)
        raise words.error(words.from_validation(exc)) from None


def load_targets(extra_dirs: list[Path] | None = None,
                 errors: dict[str, ConfigError] | None = None) -> dict[str, TargetProfile]:
    """All profiles found, by name; earlier directories win over the built-in ones.

    A profile file that does not load raises, unless `errors` is given: then it is recorded
    there under its name (file stem) and skipped, unless an earlier directory replaces it.
    """
    found: dict[str, TargetProfile] = {}
    for d in reversed(_search_dirs(extra_dirs)):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                try:
                    profile = load_profile(p)
                except ConfigError as exc:
                    if errors is None:
                        raise
                    found.pop(p.stem, None)
                    errors[p.stem] = exc
                    continue
                if errors is not None:
                    errors.pop(profile.name, None)
                found[profile.name] = profile
    return found


def unknown_target(spec: str, available) -> str:
    """`unknown target 'rpi44' (did you mean 'rpi4'?)`"""
    return unknown_name("target", spec, available, "or a path to a profile .toml")


def resolve_target(spec: str, extra_dirs: list[Path] | None = None) -> TargetProfile:
    """A profile by name, or from a path to a `.toml` file. Another profile file that does
    not load is no obstacle to this one."""
    if spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"target profile file {spec} does not exist")
        return load_profile(path)
    errors: dict[str, ConfigError] = {}
    available = load_targets(extra_dirs, errors)
    if spec in available:
        return available[spec]
    if spec in errors:
        raise errors[spec]
    raise ConfigError(unknown_target(spec, available))
