"""One interface over the runtimes that execute artifacts: `open_session(path, threads)`.

A session has `.inputs` / `.outputs` (lists of IOSpec) and `.run(x) -> list[np.ndarray]`.
This package imports only numpy at import time; each runtime module imports its runtime
when a session is opened, so a device needs just the one it uses.
"""

from __future__ import annotations

from pathlib import Path

from .base import IOSpec, RuntimeUnavailable, Session

RUNTIMES_BY_SUFFIX = {
    ".onnx": "edgepack.runtimes.onnxruntime",
    ".ort": "edgepack.runtimes.onnxruntime",
    ".tflite": "edgepack.runtimes.litert",
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
        raise RuntimeUnavailable(f"{path}: no runtime for '{path.suffix}' files (known: {', '.join(RUNTIMES_BY_SUFFIX)})")
    return importlib.import_module(module).open_session(path, threads, reference=reference)


__all__ = ["IOSpec", "RuntimeUnavailable", "Session", "open_session"]
