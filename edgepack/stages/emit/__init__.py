"""Artifact writers. Each writer is a small module with `emit(graphs, profile, out_dir)`.

`WRITERS` maps an artifact-kind prefix (the part of a profile's artifact name before the
first '-') to its writer; a new format is a new module plus one line here.
"""

from __future__ import annotations

import re

from .base import Artifact, GraphSet

WRITERS = {
    "ort": "edgepack.stages.emit.ort",
    "tflite": "edgepack.stages.emit.tflite",
}


def writer_for(kind: str):
    import importlib

    family = kind.split("-", 1)[0]
    if family not in WRITERS:
        from ...errors import ConfigError

        raise ConfigError(f"artifact kind {kind!r} has no writer; known families: {', '.join(WRITERS)}")
    return importlib.import_module(WRITERS[family])


__all__ = ["Artifact", "GraphSet", "writer_for", "WRITERS", "emit_kinds", "not_produced"]


# "node 'X': ONNX op Y ..." in converter errors: the node and op that stopped an artifact.
_NODE_OP = re.compile(r"node '(?P<node>[^']*)': ONNX op (?P<op>[\w.]+)")


def emit_kinds(kinds, graphs: GraphSet, profile, out_dir) -> tuple[list[Artifact], list[dict]]:
    """Write each artifact kind on its own, so one that cannot be produced (an operator a
    format cannot express, a quantiser's refusal) costs that artifact, not the build.

    Returns (artifacts, not produced) where each not-produced entry is
    {kind, reason, node, op}. A converter's refusal of an operator stops the rest of that
    family (they share the conversion) with the same reason, without trying again."""
    from ...errors import ModelError, UnsupportedOperatorError, one_line

    artifacts, missing, refused = [], [], {}
    for kind in kinds:
        family = kind.split("-", 1)[0]
        try:
            if family in refused:
                raise refused[family]
            artifacts += writer_for(family).emit(graphs, profile.model_copy(update={"artifacts": (kind,)}), out_dir)
        except UnsupportedOperatorError as exc:
            refused[family] = exc
            missing.append(not_produced(kind, exc))
        except ModelError as exc:
            missing.append(not_produced(kind, exc))
        except Exception as exc:  # a third-party converter's own failure is that artifact's failure too
            missing.append({"kind": kind, "reason": f"{type(exc).__name__}: {one_line(exc)}", "node": None,
                            "op": None})
    return artifacts, missing


def not_produced(kind: str, exc: Exception) -> dict:
    """The manifest's record of an artifact that could not be produced, and why."""
    text = str(exc)
    m = _NODE_OP.search(text)
    return {"kind": kind, "reason": text, "node": m["node"] if m else None, "op": m["op"] if m else None}
