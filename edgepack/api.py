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

import contextlib
import datetime as _dt
import os
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

__all__ = ["build", "verify", "merge", "inspect", "pack", "BuildResult", "VerifyResult", "ArtifactInfo"]


def build(config: BuildConfig | dict | str | Path, reporter: Reporter | None = None, *,
          sign: str | Path | None = None) -> BuildResult:
    """Build, verify and bundle a release from a config file path, a config dict (paths
    relative to the current folder) or a `BuildConfig`; `sign`: an ed25519 private key file
    to sign the bundle with (manifest.sig, SHA256SUMS.sig; edgepack.signing)."""
    from .pipeline import build as run_build

    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config, source="config dict")
    key = None
    if sign is not None:  # refused before the build, not after
        from .signing import load_private_key

        key = load_private_key(sign)
    return run_build(config, reporter, sign_key=key)


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
           key: str | Path | None = None, reporter: Reporter | None = None) -> VerifyResult:
    """Re-verify a bundle from its own files: on this machine, or (`emulate=True`) every
    target of another CPU architecture (or `target`) in an emulated device userland.
    Size and weight gates are judged on ratios measured from the files (not the manifest's).
    `key`: an ed25519 public key file; the bundle must be signed with it (VerificationFailed
    naming the file otherwise). `merge=True` folds the result into the bundle's manifest and report."""
    with _private_tmp():
        return _verify(Path(bundle), target, artifacts, threads, runs, emulate, merge, key, reporter)


@contextlib.contextmanager
def _private_tmp():
    """$TMPDIR and Python's temp folder pointed at a folder of our own for the call, removed
    after it: native code leaves files there (onnxruntime's telemetry session file `.ses`)."""
    import tempfile

    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="edgepack-verify-tmp-") as tmp:
        tempfile.tempdir = os.environ["TMPDIR"] = tmp
        try:
            yield
        finally:
            tempfile.tempdir = saved[0]
            if saved[1] is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved[1]


def _verify(bundle: Path, target, artifacts, threads, runs, emulate, merge, key, reporter) -> VerifyResult:
    from .archive import is_archive
    from .verification.device import verify_bundle

    if is_archive(bundle):
        if merge:
            raise BundleError(f"{bundle}: --merge writes into a bundle folder, not an archive; verify the folder")
        doc = _verify_archive(bundle, target, artifacts, threads, runs, emulate, reporter or Reporter(), key)
    elif emulate:
        _check_key(bundle, key)
        doc = _measured(bundle, _verify_emulated(bundle, target, artifacts, reporter or Reporter()))
    else:
        _check_key(bundle, key)
        doc = _unaccounted(bundle, artifacts)  # a forged path, symlink or extra file: exit 1 naming it
        if doc is None:
            read_manifest(bundle)  # a malformed manifest is exit 2 naming the field, before anything else is judged
            doc = _measured(bundle, verify_bundle(bundle, target, artifacts=artifacts, threads=threads, runs=runs))
    result = parse_device_result(doc, "device runner result")
    manifest = _merge_into(bundle, result) if merge else None
    return VerifyResult(result=result, manifest=manifest)


def _verify_archive(archive: Path, target, artifacts, threads, runs, emulate: bool, rep: Reporter, key=None) -> dict:
    """Check every entry of a release archive, extract it into a temporary folder, verify that."""
    import tempfile

    from .archive import extract
    from .verification.device import refused_result, verify_bundle

    with tempfile.TemporaryDirectory(prefix="edgepack-verify-") as tmp:
        got = extract(archive, Path(tmp))
        if got.problems:
            return refused_result(archive.name, got.problems, artifacts)
        _check_key(got.bundle, key)
        if emulate:
            return _measured(got.bundle, _verify_emulated(got.bundle, target, artifacts, rep))
        return _measured(got.bundle, verify_bundle(got.bundle, target, artifacts=artifacts, threads=threads, runs=runs))


def _unaccounted(folder: Path, artifacts: list[str] | None) -> dict | None:
    """A failed result naming what the bundle holds that its manifest does not account for
    (safepath.bundle_file_problems), or None. Unreadable manifest: BundleError (exit 2)."""
    from .safepath import bundle_file_problems
    from .verification.device import read_bundle_manifest, refused_result

    manifest = read_bundle_manifest(folder)
    problems = bundle_file_problems(folder, manifest)
    if not problems:
        return None
    return refused_result(f"{manifest.get('name')}-{manifest.get('version')}", problems, artifacts)


def _check_key(folder: Path, key) -> None:
    """The bundle's signature and SHA256SUMS against `key` (a public key file), when given."""
    if key is not None:
        from .signing import check_signature

        check_signature(folder, key)


def _measured(folder: Path, doc: dict) -> dict:
    """The runner's result with its size verdicts replaced by ones measured from the files."""
    from .verification.device import read_bundle_manifest
    from .verification.sizes import regate_sizes

    if not doc.get("targets"):
        return doc
    return regate_sizes(folder, read_bundle_manifest(folder), doc)


def pack(bundle: str | Path, out: str | Path | None = None) -> tuple[Path, str]:
    """Write a reproducible `.tar.gz` of a bundle (default: beside it, `<name>-<version>.tar.gz`)
    and `FILE.sha256` beside that; returns (archive path, sha256)."""
    from .archive import pack as run_pack

    return run_pack(bundle, out)


def merge(bundle: str | Path, result: str | Path | dict | DeviceResult) -> Manifest:
    """Fold a device runner's result (a JSON file, its parsed dict, or a `DeviceResult`)
    into the bundle's manifest.json and report.md; returns the new manifest."""
    source = "device result"
    if isinstance(result, (str, Path)):
        source = str(result)
        result = read_device_result(result)
    elif isinstance(result, dict):
        result = parse_device_result(result, source)
    return _merge_into(Path(bundle), result, source)


def _merge_into(bundle: Path, result: DeviceResult, source: str = "device runner result") -> Manifest:
    """Refuses (VerificationFailed, exit 1) a result that does not say what produced it or
    whose checksums are not the bundle's (verification.merge.provenance_problem)."""
    from .errors import VerificationFailed, and_more
    from .verification.device import bundle_tampering, read_bundle_manifest
    from .verification.merge import provenance_problem
    from .verification.sizes import measured_ratios

    current = read_manifest(bundle)
    doc = read_bundle_manifest(bundle)
    # what the runner itself found wrong with a file is merged as that failure; any other
    # mismatch between the files and the manifest means the result cannot be judged against them
    reported = {p.where for p in result.problems} | {a.path for t in result.targets.values()
                                                      for a in t.artifacts if a.error is not None}
    tampered = [t for t in bundle_tampering(bundle, doc) if t.split(": ", 1)[0] not in reported]
    if tampered:  # a verdict is measured on the files the manifest describes, or not at all
        raise VerificationFailed(f"{bundle}: refused to merge into it: {tampered[0]}{and_more(tampered)}")
    why = provenance_problem(current, result)
    if why:
        raise VerificationFailed(f"{source}: refused: {why}")
    every = [(t, a.kind) for t, target in current.targets.items() for a in target.artifacts]
    try:
        manifest = merge_device_result(current, result,
                                       merged_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                       ratios=measured_ratios(bundle, doc, every))
    except BundleError as exc:  # of another bundle, or naming what this one does not have
        raise VerificationFailed(f"{source}: refused: {exc}") from None
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
