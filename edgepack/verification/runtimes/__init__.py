"""One interface over the runtimes that execute artifacts: `open_session(path, threads)`.

A session has `.inputs` / `.outputs` (lists of IOSpec) and `.run(feed) -> list[np.ndarray]`
(`feed`: one call's inputs by name, or one array for a single-input model).
This package imports only numpy at import time; each runtime module imports its runtime
when a session is opened, so a device needs just the one it uses.
"""

from __future__ import annotations

from pathlib import Path

from .base import IOSpec, RuntimeUnavailable, Session

RUNTIMES_BY_SUFFIX = {
    ".onnx": "edgepack.verification.runtimes.onnxruntime",
    ".ort": "edgepack.verification.runtimes.onnxruntime",
    ".tflite": "edgepack.verification.runtimes.litert",
}


def open_session(path: Path | str, threads: int = 1, *, reference: bool = False) -> Session:
    """Load an artifact in the runtime its file type needs.

    `reference=True` asks for reference numerics: the graph executed op by op with no
    graph optimisation, so a QDQ model computes dequantise → float op → quantise instead
    of running fused int8 kernels.
    """
    import importlib

    path = Path(path)
    module = RUNTIMES_BY_SUFFIX.get(path.suffix.lower())
    if module is None:
        raise RuntimeUnavailable(f"{path}: no runtime for '{path.suffix}' files "
                                 f"(known: {', '.join(RUNTIMES_BY_SUFFIX)})")
    return importlib.import_module(module).open_session(path, threads, reference=reference)


def open_artifact(path: Path | str, threads: int = 1, layout: dict | None = None, *,
                  reference: bool = False) -> Session:
    """`open_session` plus the artifact's layout (manifest form), so the session takes
    and returns arrays in the ONNX model's layout."""
    session = open_session(path, threads, reference=reference)
    if layout:
        session.with_layout([t.get("perm") for t in layout.get("inputs", [])],
                            [t.get("perm") for t in layout.get("outputs", [])])
    return session


def reference_session(path, precision: str, runtime: str, layout: dict | None, reference_onnx=None):
    """A session computing the artifact's reference numerics, or None for float32.

    ONNX Runtime artifacts: their QDQ graph with graph optimisation off. LiteRT
    artifacts: the file itself on LiteRT's reference kernels."""
    if precision == "float32":
        return None
    if reference_onnx is not None and str(reference_onnx).endswith(".onnx"):
        return open_session(reference_onnx, 1, reference=True)
    if runtime in ("litert", "tflite_runtime"):
        return open_artifact(path, 1, layout, reference=True)
    return None


__all__ = ["IOSpec", "RuntimeUnavailable", "Session", "open_artifact", "open_session", "reference_session"]
