"""A tiny builder for hand-written ONNX test graphs, and the parity harness that runs one
graph in onnxruntime and, converted by edgepack, in LiteRT.

    g = Graph()
    x = g.input("x", [1, 4, 8, 8])
    y = g.conv(x, 6, k=3, pads=[1, 1, 1, 1])
    y = g.op("Relu", y)
    model = g.model(y)

Weights come from a seeded generator, so every graph is the same on every run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.n = 0

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.input_shapes[name] = tuple(shape)
        return name

    def const(self, array, name: str | None = None) -> str:
        """An initializer (float64 arrays become float32)."""
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64))

    def random(self, shape, scale: float = 0.5) -> str:
        return self.const(self.rng.normal(0, scale, shape).astype(np.float32))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attributes):
        """Add a node; returns its output name (or a list of names when outputs > 1)."""
        name = name or self._name(op_type.lower())
        outs = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attributes))
        return outs if outputs > 1 else outs[0]

    def conv(self, x: str, cin: int, cout: int, k=3, *, group: int = 1, bias: bool = True, **attributes) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.random((cout, cin // group, kh, kw), scale=1.0 / np.sqrt(cin // group * kh * kw))
        ins = [x, w] + ([self.random((cout,), 0.1)] if bias else [])
        return self.op("Conv", *ins, group=group, kernel_shape=[kh, kw], **attributes)

    def model(self, *outputs: str, opset: int = 18) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "test", self.inputs,
                              [helper.make_empty_tensor_value_info(o) for o in outputs],
                              initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 9
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        onnx.checker.check_model(m, full_check=True)
        return m

    def feeds(self, seed: int = 1) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {k: rng.normal(0, 1, s).astype(np.float32) for k, s in self.input_shapes.items()}


# ---------------------------------------------------------------------------------------
# running


def run_onnx(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the reference semantics
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def run_tflite(model_bytes: bytes, io: dict, feeds: dict) -> dict[str, np.ndarray]:
    """Run a converted model on ONNX-layout feeds (any element type); ONNX-layout outputs.
    Float feeds of an integer-typed TFLite input are quantised with its parameters."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes, num_threads=1)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_input_details()}
    for spec in io["inputs"]:
        d = details[spec["name"]]
        x = np.transpose(feeds[spec["name"]], spec["perm"])
        if x.dtype.kind == "f" and d["dtype"] != x.dtype:
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale) + zp, info.min, info.max)
        it.set_tensor(d["index"], np.ascontiguousarray(x).astype(d["dtype"]).reshape(np.shape(x)))  # 0-d stays 0-d
    it.invoke()
    outs = {}
    details = {d["name"]: d for d in it.get_output_details()}
    for spec in io["outputs"]:
        d = details[spec["name"]]
        y = it.get_tensor(d["index"])
        if d["quantization"][0]:
            y = (y.astype(np.float32) - d["quantization"][1]) * d["quantization"][0]
        outs[spec["name"]] = np.transpose(y, np.argsort(spec["perm"]))
    return outs
