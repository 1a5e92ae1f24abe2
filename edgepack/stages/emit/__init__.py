"""Artifact writers. Each writer is a small module with `emit(graphs, profile, out_dir)`.

`WRITERS` maps an artifact-kind prefix (the part of a profile's artifact name before the
first '-') to its writer; a new format is a new module plus one line here.
"""

from __future__ import annotations

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


__all__ = ["Artifact", "GraphSet", "writer_for", "WRITERS"]
