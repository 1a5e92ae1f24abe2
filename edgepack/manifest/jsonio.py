"""Schema identifiers, checksums and JSON I/O for bundles. Standard library only.

The device runner writes and reads plain JSON through this module; the host validates the
same documents against the typed models in `edgepack.manifest.models`.

JSON has no infinity: an SQNR of identical outputs is +inf, so non-finite floats are
written as the strings "inf", "-inf" and "nan" and turned back into floats on reading
(the JSON Schema allows exactly these strings where a number may be non-finite).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

MANIFEST_SCHEMA = "edgepack.manifest/2"
DEVICE_RESULT_SCHEMA = "edgepack.device-result/2"
# What each older schema was written by, for a reader's message.
OLDER_SCHEMAS = {
    "edgepack.manifest/1": "edgepack 0.1 (untyped manifest, before gate metrics and structured failures)",
    "edgepack.device-result/1": "edgepack 0.1's device runner (string problems, no artifact filter)",
}
NON_FINITE = ("inf", "-inf", "nan")
# What a document of each schema is, for a reader's message.
SCHEMA_WORDS = {MANIFEST_SCHEMA: "a bundle manifest", DEVICE_RESULT_SCHEMA: "a device result"}
# How deep objects and arrays may nest in a document read (a manifest nests about 8 levels).
MAX_DEPTH = 100


class SchemaMismatch(ValueError):
    """A document has another schema (or none); the message says which and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path, root: Path) -> dict:
    """{path relative to root (posix), sha256, size_bytes}: how a bundle names a file."""
    path = Path(path)
    return {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def json_safe(obj):
    """Replace non-finite floats with their string forms, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def restore_floats(obj):
    """The inverse of `json_safe`."""
    if isinstance(obj, dict):
        return {k: restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_floats(v) for v in obj]
    if isinstance(obj, str) and obj in NON_FINITE:
        return float(obj)
    return obj


def dumps(obj) -> str:
    return json.dumps(json_safe(obj), indent=2) + "\n"


def check_schema(doc, expected: str, where: str) -> None:
    """Raise SchemaMismatch unless `doc` is a JSON object with schema `expected`."""
    if not isinstance(doc, dict):
        raise SchemaMismatch(f"{where}: expected a JSON object with \"schema\": {expected!r}, got {type(doc).__name__}")
    found = doc.get("schema")
    if found == expected:
        return
    if found in OLDER_SCHEMAS:
        raise SchemaMismatch(f"{where}: schema {found!r} was written by {OLDER_SCHEMAS[found]}; this edgepack reads "
                             f"{expected!r} only: rebuild the bundle (or re-run the device runner) with this version")
    family = expected.rsplit("/", 1)[0]
    if isinstance(found, str) and found.startswith(family + "/"):
        raise SchemaMismatch(f"{where}: schema {found!r} is newer than this edgepack understands ({expected!r}); "
                             "upgrade edgepack")
    raise SchemaMismatch(f"{where}: field 'schema' is {found!r}; expected {expected!r}")


def read_json(path: Path, expected_schema: str) -> dict:
    """Parse a JSON document and check its schema; non-finite strings become floats.

    Raises SchemaMismatch (wrong or old schema) or ValueError (not JSON) with the path."""
    from ..safepath import special_file_problem

    path = Path(path)
    what = SCHEMA_WORDS.get(expected_schema, "an edgepack document")
    why = special_file_problem(path)
    if why:
        raise ValueError(f"{path}: {why}; expected {what} (JSON)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (expected JSON)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        doc = None  # deeper than the parser's stack: deeper than MAX_DEPTH too
    if doc is None or too_deep(doc, MAX_DEPTH):
        raise ValueError(f"{path}: JSON nests too deeply to be {what} (more than {MAX_DEPTH} levels)")
    check_schema(doc, expected_schema, str(path))
    return restore_floats(doc)


def too_deep(value, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit` in `value`, walked without
    recursion (json_safe and restore_floats recurse: a hostile document is refused first)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth + 1 > limit:
                return True
            stack += [(c, depth + 1) for c in (v.values() if isinstance(v, dict) else v)]
    return False


def tree_sha256(folder: Path) -> str:
    """sha256 over a folder's files: each relative posix path and its sha256, sorted."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def source_sha256(spec: str) -> str | None:
    """sha256 of what a model or data spec names: a file; the `.py` file of `file.py:fn`;
    a folder's tree hash. None for an installed module's entry point (`package.mod:fn`)."""
    head, sep, _ = str(spec).rpartition(":")
    path = Path(head if sep and head.endswith(".py") else spec)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        return tree_sha256(path)
    return None
