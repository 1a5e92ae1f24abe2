"""LiteRT sessions for `.tflite` files: ai-edge-litert, or tflite-runtime on a device.

Default sessions use the runtime's default CPU path (XNNPACK where it applies) with the
requested threads; `reference=True` uses LiteRT's reference kernels (BUILTIN_REF), which
compute the model's numerics without any CPU-specific optimised kernel.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import one_line
from .base import IOSpec, RuntimeUnavailable, Session


def _interpreter_module():
    try:
        from importlib.metadata import version

        from ai_edge_litert import interpreter

        return interpreter, "litert", version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        from tflite_runtime import interpreter

        return interpreter, "tflite_runtime", version("tflite-runtime")
    except ImportError:
        raise RuntimeUnavailable("needs ai-edge-litert or tflite-runtime, and neither is installed "
                                 "(pip install ai-edge-litert, or tflite-runtime on a Raspberry Pi)") from None


@contextlib.contextmanager
def _quiet_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LiteRtSession(Session):
    def __init__(self, interp, runtime: str, version: str, threads: int):
        super().__init__(runtime=runtime, version=version, threads=threads)
        self._it = interp
        self._in = interp.get_input_details()
        self._out = interp.get_output_details()

        def spec(d):
            scale, zp = d.get("quantization", (0.0, 0))
            return IOSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name,
                          float(scale) if scale else None, int(zp) if scale else None)

        self.inputs = [spec(d) for d in self._in]
        self.outputs = [spec(d) for d in self._out]

    def _run(self, inputs):
        for d, x in zip(self._in, inputs):
            self._it.set_tensor(d["index"], x)
        self._it.invoke()
        return [self._it.get_tensor(d["index"]) for d in self._out]


def open_session(path: Path, threads: int, *, reference: bool = False) -> LiteRtSession:
    module, runtime, version = _interpreter_module()
    kwargs = {"model_path": str(path), "num_threads": threads}
    if reference:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
    try:
        with _quiet_stderr():  # the C++ runtime logs "Created TensorFlow Lite XNNPACK delegate" on fd 2
            interp = module.Interpreter(**kwargs)
            interp.allocate_tensors()
    except Exception as exc:
        raise RuntimeUnavailable(f"{path}: {runtime} {version} cannot load it: {one_line(exc)}") from None
    return LiteRtSession(interp, runtime, version, threads)
