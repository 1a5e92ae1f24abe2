"""ONNX Runtime sessions for `.onnx` and `.ort` files."""

from __future__ import annotations

from pathlib import Path

from ...errors import one_line
from .base import IOSpec, RuntimeUnavailable, Session

_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


class OrtSession(Session):
    def __init__(self, sess, threads: int, version: str):
        super().__init__(runtime="onnxruntime", version=version, threads=threads)
        self._sess = sess
        self._names = [i.name for i in sess.get_inputs()]
        self.inputs = [IOSpec(i.name, tuple(i.shape), _TYPES.get(i.type, i.type)) for i in sess.get_inputs()]
        self.outputs = [IOSpec(o.name, tuple(o.shape), _TYPES.get(o.type, o.type)) for o in sess.get_outputs()]

    def _run(self, inputs):
        return self._sess.run(None, dict(zip(self._names, inputs)))


def open_session(path: Path, threads: int, *, reference: bool = False) -> OrtSession:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable(f"{path}: needs onnxruntime, which is not installed "
                                 "(pip install onnxruntime)") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if reference:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RuntimeUnavailable(f"{path}: onnxruntime {ort.__version__} cannot load it: {one_line(exc)}") from None
    return OrtSession(sess, threads, ort.__version__)

