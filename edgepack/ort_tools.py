"""ONNX Runtime's `tools.ort_format_model` (the ORT flatbuffer reader and the reduced-build
operator config writer), imported without running `onnxruntime/tools/__init__.py`.

That `__init__` imports torch whenever torch is installed (for a PyTorch export helper
edgepack never uses): 3.6 s per build here, and edgepack's core imports no torch. The
package is registered as a plain namespace of its own folder instead, so only the modules
edgepack asks for are imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def ort_format_model():
    """The `onnxruntime.tools.ort_format_model` module (it also puts `ort_flatbuffers_py` on sys.path)."""
    if "onnxruntime.tools" not in sys.modules:
        import onnxruntime

        tools = types.ModuleType("onnxruntime.tools")
        tools.__path__ = [str(Path(onnxruntime.__file__).parent / "tools")]
        tools.__package__ = "onnxruntime.tools"
        sys.modules["onnxruntime.tools"] = tools
    return importlib.import_module("onnxruntime.tools.ort_format_model")
