"""The release bundle: files, checksums and the versioned manifest.

A bundle is assembled in a hidden staging folder next to its destination and renamed into
place only when complete, so an interrupted or failed build never leaves a folder that
looks like a finished release.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

MANIFEST_SCHEMA = "edgepack.manifest/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path, root: Path) -> dict:
    return {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


class Staging:
    """Context manager: a staging folder renamed to `final` by `commit()`, removed otherwise."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.path = self.final.parent / f".{self.final.name}.partial"

    def __enter__(self) -> "Staging":
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self

    def commit(self) -> Path:
        if self.final.exists():
            shutil.rmtree(self.final)
        self.path.rename(self.final)
        return self.final

    def __exit__(self, exc_type, exc, tb):
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def _json_safe(obj):
    """Replace non-finite floats (an SQNR of identical outputs is +inf) with strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_manifest(manifest: dict, root: Path) -> Path:
    path = Path(root) / "manifest.json"
    path.write_text(json.dumps(_json_safe(manifest), indent=2) + "\n")
    return path


def read_manifest(root: Path) -> dict:
    """Parse manifest.json, turning the string forms of non-finite floats back into floats."""
    from .errors import BundleError

    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root}: no manifest.json; expected an edgepack bundle folder")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise BundleError(f"{path}: field 'schema' is {manifest.get('schema') if isinstance(manifest, dict) else None!r}; "
                          f"expected {MANIFEST_SCHEMA!r}")
    return _restore_floats(manifest)


def _restore_floats(obj):
    if isinstance(obj, dict):
        return {k: _restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_floats(v) for v in obj]
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    return obj
