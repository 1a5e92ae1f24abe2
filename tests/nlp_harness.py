"""The parity harness of onnx_graphs.py for graphs with integer and bool inputs and
outputs, and several inputs: typed graph inputs with their own value ranges, a LiteRT
runner that feeds integer inputs as they are, and exact comparison of non-float outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx_graphs import Graph, run_onnx, run_tflite

from edgepack.tflite.convert import convert

RTOL, ATOL = 1e-4, 1e-5


class TypedGraph(Graph):
    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.kinds: dict[str, tuple[np.dtype, float, float]] = {}

    def input(self, name: str, shape, dtype=np.float32, low: float = -1.0, high: float = 1.0) -> str:
        """A graph input; float ones are N(0, 1) unless `low`/`high` are given, integer
        ones uniform in [low, high), bool ones random."""
        dtype = np.dtype(dtype)
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
        self.input_shapes[name] = tuple(shape)
        self.kinds[name] = (dtype, low, high)
        return name

    def positive(self, name: str, shape) -> str:
        return self.input(name, shape, np.float32, 0.1, 3.0)

    def feeds(self, seed: int = 1) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out = {}
        for name, shape in self.input_shapes.items():
            dtype, low, high = self.kinds[name]
            if dtype == np.bool_:
                out[name] = rng.random(shape) < 0.5
            elif dtype.kind in "iu":
                out[name] = rng.integers(int(low), int(high), shape).astype(dtype)
            elif (low, high) != (-1.0, 1.0):
                out[name] = rng.uniform(low, high, shape).astype(dtype)
            else:
                out[name] = rng.normal(0, 1, shape).astype(dtype)
        return out


def check(model: onnx.ModelProto, g: TypedGraph, rtol: float = RTOL, atol: float = ATOL, seeds=(1, 2)) -> bytes:
    """Convert `model`, run both on the graph's feeds, compare; returns the TFLite model."""
    model_bytes, io = convert(model)
    for seed in seeds:
        feeds = g.feeds(seed)
        ref = run_onnx(model, feeds)
        got = run_tflite(model_bytes, io, feeds)
        assert set(got) == set(ref)
        for name in ref:
            assert got[name].shape == ref[name].shape, name
            assert got[name].dtype == ref[name].dtype, f"{name}: {got[name].dtype} vs {ref[name].dtype}"
            if ref[name].dtype.kind == "f":
                np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)
            else:
                np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    return model_bytes


def op_names(model_bytes: bytes) -> list[str]:
    from ai_edge_litert.tools import flatbuffer_utils

    from edgepack.tflite.builder import OPERATOR_NAMES

    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    return [OPERATOR_NAMES[m.operatorCodes[op.opcodeIndex].builtinCode] for op in m.subgraphs[0].operators]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
