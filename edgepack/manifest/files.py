"""Reading and writing the contract's documents on the host, validated by the typed models.

Every problem is a BundleError naming the file and, for a validation error, the field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import BundleError
from .jsonio import DEVICE_RESULT_SCHEMA, MANIFEST_SCHEMA, SchemaMismatch, check_schema, dumps, read_json
from .models import DeviceResult, Manifest


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """The first few validation errors of a document, each as `field.path: message`."""
    errs = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in errs[:limit]]
    more = f" (and {len(errs) - limit} more)" if len(errs) > limit else ""
    return "; ".join(parts) + more


def read_manifest(bundle: Path | str) -> Manifest:
    """A bundle's manifest.json as a `Manifest`."""
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{bundle}: no manifest.json; expected an edgepack bundle folder")
    doc = _read_document(path, MANIFEST_SCHEMA, "the manifest")
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        raise BundleError(f"{path}: not a valid manifest: {validation_message(exc)}") from None


def write_manifest(manifest: Manifest, bundle: Path) -> Path:
    """manifest.json and the report.md and report.html rendered from it. Sets the
    manifest's `reproducible_sha256` to the digest of what is written."""
    from ..report import render_report
    from ..report_html import render_html
    from .reproducible import reproducible_digest

    bundle = Path(bundle)
    path = bundle / "manifest.json"
    manifest.reproducible_sha256 = reproducible_digest(manifest.to_json())
    path.write_text(dumps(manifest.to_json()), encoding="utf-8")
    (bundle / "report.md").write_text(render_report(manifest), encoding="utf-8")
    (bundle / "report.html").write_text(render_html(manifest), encoding="utf-8")
    # every file, for `sha256sum -c SHA256SUMS`; signatures over an older manifest no longer
    # hold, so they go (`edgepack sign` signs again); see edgepack.signing
    from ..signing import remove_signatures, write_sums

    remove_signatures(bundle)
    write_sums(bundle)
    return path


def parse_device_result(doc, where: str) -> DeviceResult:
    """A device runner's JSON document (already parsed) as a `DeviceResult`."""
    from .jsonio import restore_floats

    try:
        check_schema(doc, DEVICE_RESULT_SCHEMA, where)
        return DeviceResult.model_validate(restore_floats(doc))
    except SchemaMismatch as exc:
        raise BundleError(str(exc)) from None
    except ValidationError as exc:
        raise BundleError(f"{where}: not a valid device result: {validation_message(exc)}") from None


def read_device_result(path: Path | str) -> DeviceResult:
    path = Path(path)
    return parse_device_result(_read_document(path, DEVICE_RESULT_SCHEMA, "the device result"), str(path))


def _read_document(path: Path, schema: str, what: str) -> dict:
    """Parsed JSON with the expected schema; BundleError naming the file otherwise."""
    try:
        return read_json(path, schema)
    except (SchemaMismatch, ValueError) as exc:
        raise BundleError(str(exc)) from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
