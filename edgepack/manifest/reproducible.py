"""The manifest's reproducible part and its digest. Standard library only.

Two builds of the same inputs with the same tool versions give byte-identical artifacts
and the same manifest, except for the fields listed in `NON_REPRODUCIBLE`: when and where
the build ran, and everything measured in time (latency, and what is chosen or said
because of it). `reproducible_digest` is the sha256 over the canonical JSON of the rest;
the build writes it into the manifest as `reproducible_sha256`.

A path is dot-separated; `*` is any key of an object, `[]` any item of a list.
"""

from __future__ import annotations

import hashlib
import json

from .jsonio import json_safe

NON_REPRODUCIBLE = (
    "created_utc",  # when (set SOURCE_DATE_EPOCH to fix it)
    "host",  # where: the build machine's CPU, OS, cores
    "reproducible_sha256",  # the digest itself
    "device_results",  # merged device runs: when, on which machine
    "targets.*.default",  # the fastest passing artifact: ranked by latency
    "targets.*.artifacts[].metrics.latency",
    "targets.*.artifacts[].metrics.device_latency",
    "targets.*.artifacts[].metrics.head_to_head",  # alternating runs against the float artifact
    "targets.*.artifacts[].slowdown_causes",  # written only when int8 measured no faster than float
    "targets.*.artifacts[].diagnosis.seconds",
    "targets.*.search.trials[].seconds",
    "targets.*.search.trials[].latency_p50_ms",
    "targets.*.search.runs[].seconds",
)
# Gates judged on latency: their verdicts (metrics.gates[]) and failures are left out too.
LATENCY_GATES = ("max_latency_ms",)


def reproducible_part(manifest: dict) -> dict:
    """A copy of the manifest (its JSON object) without the `NON_REPRODUCIBLE` fields and
    without latency gate verdicts and failures."""
    doc = json.loads(json.dumps(json_safe(manifest)))
    for path in NON_REPRODUCIBLE:
        _drop(doc, path.replace("[]", ".[]").split("."))
    targets = doc.get("targets") if isinstance(doc.get("targets"), dict) else {}
    for target in targets.values():
        arts = target.get("artifacts") if isinstance(target, dict) else None
        for art in arts if isinstance(arts, list) else []:
            metrics = art.get("metrics") if isinstance(art, dict) else None
            if isinstance(metrics, dict) and isinstance(metrics.get("gates"), list):
                metrics["gates"] = [g for g in metrics["gates"]
                                    if not (isinstance(g, dict) and g.get("gate") in LATENCY_GATES)]
    if isinstance(doc.get("failures"), list):
        doc["failures"] = [f for f in doc["failures"] if not (isinstance(f, dict) and f.get("gate") in LATENCY_GATES)]
    return doc


def reproducible_digest(manifest_json: dict | str | bytes) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys, no spaces, UTF-8) of the manifest's
    reproducible part. `manifest_json`: the parsed manifest or its JSON text."""
    doc = json.loads(manifest_json) if isinstance(manifest_json, (str, bytes)) else manifest_json
    blob = json.dumps(reproducible_part(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _drop(node, keys: list[str]) -> None:
    if not keys:
        return
    key, rest = keys[0], keys[1:]
    if key == "[]":
        children = node if isinstance(node, list) else []
    elif isinstance(node, dict):
        if not rest:
            node.pop(key, None) if key != "*" else node.clear()
            return
        children = list(node.values()) if key == "*" else ([node[key]] if key in node else [])
    else:
        return
    for child in children:
        _drop(child, rest)
