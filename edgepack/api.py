"""The public Python API: one function per CLI verb, each returning a typed result.

    import edgepack
    result = edgepack.build("examples/digits/edgepack.toml")
    result.manifest.targets["rpi4"].artifact("tflite-int8").metrics.numerics["reference"].top1
    check = edgepack.verify(result.bundle, target="rpi4", artifacts=["ort-int8"])
    edgepack.merge(result.bundle, "result-from-the-pi.json")
    edgepack.inspect("dist/digits-cnn-1.0.0/rpi4/model.int8.tflite").weight_bytes

Errors a caller can cause raise `edgepack.EdgepackError` subclasses with one-line messages.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .config import BuildConfig, config_from_dict, load_config
from .errors import BundleError
from .manifest.files import parse_device_result, read_device_result, read_manifest, write_manifest
from .manifest.models import DeviceResult, Manifest
from .pipeline import BuildResult
from .progress import Reporter
from .verification.merge import merge_device_result

__all__ = ["build", "verify", "merge", "inspect", "BuildResult", "VerifyResult", "ArtifactInfo"]


def build(config: BuildConfig | dict | str | Path, reporter: Reporter | None = None) -> BuildResult:
    """Build, verify and bundle a release from a config file path, a config dict (paths
    relative to the current folder) or a `BuildConfig`."""
    from .pipeline import build as run_build

    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config, source="config dict")
    return run_build(config, reporter)


@dataclass
class VerifyResult:
    """A device runner's result on this machine (or under emulation), and the bundle's
    manifest after merging it when `merge=True`."""

    result: DeviceResult
    manifest: Manifest | None = None

    @property
    def passed(self) -> bool:
        if self.manifest is not None:
            return self.result.passed and self.manifest.gates_passed
        return self.result.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def verify(bundle: str | Path, *, target: str | None = None, artifacts: list[str] | None = None,
           threads: int | None = None, runs: int = 50, emulate: bool = False, merge: bool = False,
           reporter: Reporter | None = None) -> VerifyResult:
    """Re-verify a bundle from its own files: on this machine, or (`emulate=True`) every
    target of another CPU architecture (or `target`) in an emulated device userland.
    `merge=True` folds the result into the bundle's manifest and report."""
    from .verification.device import verify_bundle

    bundle = Path(bundle)
    if emulate:
        doc = _verify_emulated(bundle, target, artifacts, reporter or Reporter())
    else:
        doc = verify_bundle(bundle, target, artifacts=artifacts, threads=threads, runs=runs)
    result = parse_device_result(doc, "device runner result")
    manifest = _merge_into(bundle, result) if merge else None
    return VerifyResult(result=result, manifest=manifest)


def merge(bundle: str | Path, result: str | Path | dict | DeviceResult) -> Manifest:
    """Fold a device runner's result (a JSON file, its parsed dict, or a `DeviceResult`)
    into the bundle's manifest.json and report.md; returns the new manifest."""
    if isinstance(result, (str, Path)):
        result = read_device_result(result)
    elif isinstance(result, dict):
        result = parse_device_result(result, "device result")
    return _merge_into(Path(bundle), result)


def _merge_into(bundle: Path, result: DeviceResult) -> Manifest:
    manifest = merge_device_result(read_manifest(bundle), result,
                                   merged_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_manifest(manifest, bundle)
    return manifest


def _verify_emulated(bundle: Path, target: str | None, artifacts: list[str] | None, rep: Reporter) -> dict:
    """Run every ARM target of the bundle (or the one named) under qemu-user; one result."""
    from .targets import host_arch
    from .verification.emulate import prepare_userland, run_device_runner

    manifest = read_manifest(bundle)
    names = [target] if target else [t for t, v in manifest.targets.items() if v.profile.cpu.arch != host_arch()]
    if not names:
        raise BundleError(f"{bundle}: no target of another CPU architecture to emulate (this host is {host_arch()})")
    merged: dict = {}
    for name in names:
        if name not in manifest.targets:
            raise BundleError(f"{bundle}: target {name!r} is not in this bundle (has: {', '.join(manifest.targets)})")
        profile = manifest.targets[name].profile
        with rep.stage(f"{name}: preparing the emulated {profile.cpu.model} userland (cached after the first time)") \
                as tick:
            userland = prepare_userland(profile, progress=tick)
        with rep.stage(f"{name}: verifying under emulation"):
            result = run_device_runner(userland, bundle, name, artifacts=artifacts)
        if not merged:
            merged = result
        else:
            merged["targets"].update(result["targets"])
            merged["problems"] += result["problems"]
            merged["passed"] = merged["passed"] and result["passed"]
    return merged


class ArtifactInfo(BaseModel):
    """What `inspect` reads from an artifact file."""

    model_config = ConfigDict(extra="forbid")

    path: str
    size_bytes: int
    format: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_counts: dict[str, int]
    weight_dtypes: dict[str, int]
    weight_bytes: int
    quantization: str
    tensor_dtypes: dict[str, dict[str, int]] | None = None
    float_ops: list[str] | None = None


def inspect(path: str | Path) -> ArtifactInfo:
    """Inputs/outputs, operator counts, weight types and bytes, and quantisation of an
    `.onnx`, `.ort` or `.tflite` file."""
    from .inspection import inspect_artifact

    return ArtifactInfo.model_validate(inspect_artifact(path))
