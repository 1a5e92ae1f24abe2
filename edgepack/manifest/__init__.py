"""The bundle's contract with the outside world: manifest.json and device results.

- `jsonio`: schema identifiers, checksums and JSON reading/writing with non-finite floats.
  Standard library only, so the device runner (numpy + one runtime) can use it.
- `models`: the typed host-side contract (pydantic): `Manifest`, `ArtifactEntry`,
  `Numerics`, `GateVerdict`, `DeviceResult`, ... The shipped JSON Schemas
  (`manifest.schema.json`, `device-result.schema.json`) are generated from them by
  `python -m edgepack.manifest.schema`.
- `files`: reading and writing them on the host, with errors that name the file and field.
- `reproducible`: the manifest's reproducible part (`NON_REPRODUCIBLE` lists the rest) and
  `reproducible_digest(manifest_json)`, the sha256 a build writes as `reproducible_sha256`.
  Standard library only.
Folding a device result into a manifest is `edgepack.verification.merge`.

This package's `__init__` imports only standard-library modules (`reproducible`, `jsonio`),
so importing `jsonio` on a device does not pull in pydantic.
"""

from .reproducible import NON_REPRODUCIBLE, reproducible_digest

__all__ = ["NON_REPRODUCIBLE", "reproducible_digest"]
