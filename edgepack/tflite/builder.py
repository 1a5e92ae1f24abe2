"""A small writer over the TFLite flatbuffer schema's object API (shipped by ai-edge-litert).

It owns the bookkeeping every converter needs — buffers (index 0 is the empty sentinel),
de-duplicated operator codes, tensor and operator lists — and serialises with
`ModelT.Pack`. It knows nothing about ONNX.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

TFLITE_FILE_IDENTIFIER = b"TFL3"

_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}

# Ops whose kernels LiteRT registers from a version above 1.
_MIN_VERSION = {schema.BuiltinOperator.BROADCAST_TO: 2}

TENSOR_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
OPERATOR_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def tensor_type(dtype) -> int:
    return _TYPES[np.dtype(dtype)]


class ModelBuilder:
    def __init__(self, description: str = "edgepack"):
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.description = description
        self.model.buffers = [schema.BufferT()]  # buffer 0: empty, for activations
        self.model.operatorCodes = []
        self.graph = schema.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self.graph.inputs, self.graph.outputs = [], []
        self.graph.name = "main"
        self.model.subgraphs = [self.graph]
        self._opcodes: dict[int, int] = {}
        self._names: set[str] = set()

    # tensors -------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def tensor(self, name: str, shape, dtype=np.float32, data: np.ndarray | None = None,
               quantization: schema.QuantizationParametersT | None = None) -> int:
        """Add a tensor; with `data` it is a constant stored in its own buffer."""
        t = schema.TensorT()
        t.name = self._unique(name)
        t.shape = np.asarray([int(d) for d in shape], dtype=np.int32)
        t.type = tensor_type(dtype if data is None else data.dtype)
        t.buffer = 0
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        t.quantization = quantization
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def const(self, name: str, data) -> int:
        data = np.asarray(data)
        return self.tensor(name, data.shape, data.dtype, data=data)

    def shape_of(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.graph.tensors[index].shape)

    def dtype_of(self, index: int) -> int:
        return self.graph.tensors[index].type

    # operators -----------------------------------------------------------------------
    def _opcode(self, builtin: int) -> int:
        if builtin not in self._opcodes:
            code = schema.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = _MIN_VERSION.get(builtin, 1)
            self.model.operatorCodes.append(code)
            self._opcodes[builtin] = len(self.model.operatorCodes) - 1
        return self._opcodes[builtin]

    def op(self, builtin: int, inputs, outputs, options=None, options_type: int = 0) -> schema.OperatorT:
        o = schema.OperatorT()
        o.opcodeIndex = self._opcode(builtin)
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        if options is not None:
            o.builtinOptionsType = options_type
            o.builtinOptions = options
        self.graph.operators.append(o)
        return o

    def set_io(self, inputs: list[int], outputs: list[int]) -> None:
        self.graph.inputs = np.asarray(inputs, dtype=np.int32)
        self.graph.outputs = np.asarray(outputs, dtype=np.int32)
        sig = schema.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs, sig.outputs = [], []
        for store, indices in ((sig.inputs, inputs), (sig.outputs, outputs)):
            for i in indices:
                m = schema.TensorMapT()
                m.name = self.graph.tensors[i].name
                m.tensorIndex = i
                store.append(m)
        self.model.signatureDefs = [sig]

    def compact(self) -> None:
        """Remove tensors no operator or graph I/O references, and their buffers."""
        g = self.graph
        used = set(int(i) for i in g.inputs) | set(int(i) for i in g.outputs)
        for op in g.operators:
            used.update(int(i) for i in op.inputs if i >= 0)
            used.update(int(i) for i in op.outputs)
        remap = {old: new for new, old in enumerate(sorted(used))}
        g.tensors = [g.tensors[i] for i in sorted(used)]

        def fix(arr):
            return np.asarray([remap[int(i)] if i >= 0 else -1 for i in arr], dtype=np.int32)

        for op in g.operators:
            op.inputs, op.outputs = fix(op.inputs), fix(op.outputs)
        g.inputs, g.outputs = fix(g.inputs), fix(g.outputs)
        for sig in self.model.signatureDefs or []:
            for m in list(sig.inputs) + list(sig.outputs):
                m.tensorIndex = remap[m.tensorIndex]
        buffers = [self.model.buffers[0]]
        for t in g.tensors:
            if t.buffer:
                buffers.append(self.model.buffers[t.buffer])
                t.buffer = len(buffers) - 1
        self.model.buffers = buffers
        used_codes = sorted({op.opcodeIndex for op in g.operators})
        code_remap = {old: new for new, old in enumerate(used_codes)}
        self.model.operatorCodes = [self.model.operatorCodes[i] for i in used_codes]
        for op in g.operators:
            op.opcodeIndex = code_remap[op.opcodeIndex]
        self._opcodes = {c.builtinCode: i for i, c in enumerate(self.model.operatorCodes)}

    def finish(self) -> bytes:
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=TFLITE_FILE_IDENTIFIER)
        return bytes(b.Output())


def options(cls_name: str, **fields):
    """Instantiate a builtin options object (e.g. options("Conv2DOptions", strideW=2)).

    Returns (object, BuiltinOptions enum value)."""
    obj = getattr(schema, f"{cls_name}T")()
    for k, v in fields.items():
        if not hasattr(obj, k):
            raise AttributeError(f"{cls_name} has no field {k}")
        setattr(obj, k, v)
    return obj, getattr(schema.BuiltinOptions, cls_name)
